from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mysimbdp.domain.facts import FileFacts
from mysimbdp.domain.filecheck import QuotaUsage, check_file
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.profile import Limits, Profile, Quality

PROFILE = Profile(
    formats=[FileFormat.CSV, FileFormat.JSONL],
    limits=Limits(max_file_size_bytes=1000, max_files_per_day=10, max_bytes_per_day=5000, max_line_length_bytes=100),
    required_columns=["id", "qty"],
    quality=Quality(max_bad_row_ratio=0.1),
)
CLEAN = FileFacts(
    name="orders.csv",
    size_bytes=500,
    sha256="0" * 64,
    format=FileFormat.CSV,
    is_binary=False,
    utf8_error=None,
    has_bom=False,
    max_line_bytes=40,
    longest_line=1,
    columns=["id", "qty", "note"],
    rows_total=20,
    rows_bad=1,
    bad_by_rule={"ragged": 1},
    samples=("line 5: expected 3 fields, got 2",),
    unreadable=None,
)
USAGE = QuotaUsage(files_today=3, bytes_today=1000)


def rules(facts: FileFacts = CLEAN, usage: QuotaUsage = USAGE, profile: Profile = PROFILE) -> list[str]:
    return [v.rule for v in check_file("acme", facts, profile, usage)]


def test_a_clean_file_has_no_violations() -> None:
    """A file within every limit, with its columns and few bad rows, is accepted."""
    assert check_file("acme", CLEAN, PROFILE, USAGE) == []


@pytest.mark.parametrize(
    ("changes", "rule", "words"),
    [
        ({"name": "in/orders.csv"}, "file_name", ["'in/orders.csv'", "path separator"]),
        ({"name": "orders.txt", "format": None}, "format", ["'.txt'", "csv, jsonl"]),
        ({"name": "orders.json", "format": FileFormat.JSON}, "format", ["format json", "allowed: csv, jsonl"]),
        ({"size_bytes": 1001}, "size", ["1001 bytes", "limit of 1000 bytes"]),
        ({"max_line_bytes": 101, "longest_line": 7}, "line_length", ["line 7 is 101 bytes", "limit of 100"]),
        ({"columns": ["id", "note"]}, "required_columns", ["['qty']", "2 are required"]),
        ({"rows_total": 0, "rows_bad": 0, "bad_by_rule": {}}, "header_only", ["0 rows", "at least 1"]),
        ({"unreadable": "line 3: unterminated quote"}, "unreadable", ["line 3: unterminated quote"]),
        (
            {"rows_bad": 3, "bad_by_rule": {"ragged": 1, "qty.type": 2}},
            "bad_row_ratio",
            ["3 of 20 rows", "ratio 0.150", "limit of 0.100", "qty.type=2, ragged=1", "line 5"],
        ),
    ],
)
def test_each_rule_gives_exactly_its_violation(changes: dict[str, Any], rule: str, words: list[str]) -> None:
    """One broken constraint gives exactly one violation whose message names tenant, file, value and limit."""
    facts = replace(CLEAN, **changes)
    (violation,) = check_file("acme", facts, PROFILE, USAGE)
    assert violation.rule == rule
    assert violation.message.startswith(f"tenant 'acme': file {facts.name!r}: rule {rule}: ")
    for word in words:
        assert word in violation.message


def test_empty_file_only_says_empty() -> None:
    """A 0-byte file is 'empty', without header-only or column noise."""
    facts = replace(CLEAN, size_bytes=0, columns=None, rows_total=0, rows_bad=0, bad_by_rule={}, max_line_bytes=0)
    assert rules(facts) == ["empty"]


def test_binary_file_only_says_binary() -> None:
    """A binary file is 'binary' only: its bad encoding, lines and rows are not reported again."""
    facts = replace(
        CLEAN, is_binary=True, utf8_error="not valid UTF-8 at byte 3", max_line_bytes=5000, columns=None, rows_total=0
    )
    assert rules(facts) == ["binary"]


def test_non_utf8_file_only_says_encoding() -> None:
    """A Latin-1 file gets one 'encoding' violation with the byte offset, no row noise."""
    facts = replace(CLEAN, utf8_error="not valid UTF-8 at byte 13 (line 2, bytes b'\\xe9')", columns=None, rows_total=0)
    (violation,) = check_file("acme", facts, PROFILE, USAGE)
    assert violation.rule == "encoding"
    assert "byte 13" in violation.message and "UTF-8" in violation.message


def test_unreadable_file_has_no_row_based_noise() -> None:
    """An unreadable file is not also reported for columns, header-only or bad rows."""
    facts = replace(CLEAN, unreadable="line 1: no header row", columns=None, rows_total=0, rows_bad=0)
    assert rules(facts) == ["unreadable"]


def test_daily_file_quota_counts_this_file() -> None:
    """The file that would be the 11th of the day with a limit of 10 is refused, the 10th is not."""
    assert rules(usage=QuotaUsage(files_today=9, bytes_today=0)) == []
    (violation,) = check_file("acme", CLEAN, PROFILE, QuotaUsage(files_today=10, bytes_today=0))
    assert violation.rule == "daily_files"
    assert "file 11" in violation.message and "limit of 10 files per day" in violation.message


def test_daily_bytes_quota_adds_this_files_size() -> None:
    """Bytes already accepted plus this file over the daily limit is refused with the arithmetic."""
    (violation,) = check_file("acme", CLEAN, PROFILE, QuotaUsage(files_today=1, bytes_today=4501))
    assert violation.rule == "daily_bytes"
    assert "4501 bytes" in violation.message and "5001 bytes" in violation.message and "5000" in violation.message


def test_json_array_on_one_long_line_is_not_a_line_length_violation() -> None:
    """A compact JSON array is one line by nature; its elements are limited by the reader instead."""
    profile = PROFILE.model_copy(update={"formats": [FileFormat.JSON]})
    facts = replace(CLEAN, name="orders.json", format=FileFormat.JSON, max_line_bytes=900)
    assert rules(facts, profile=profile) == []


def test_all_violations_are_returned_together() -> None:
    """Several broken rules are all reported, in rule order."""
    facts = replace(CLEAN, name="a/b.csv", size_bytes=2000, columns=["x"])
    assert rules(facts, QuotaUsage(files_today=10, bytes_today=0)) == [
        "file_name",
        "size",
        "daily_files",
        "required_columns",
    ]
