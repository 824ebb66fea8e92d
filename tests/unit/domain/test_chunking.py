"""The big-file decision: chunk by size or by expected run time; never a JSON array."""

from __future__ import annotations

import pytest

from mysimbdp.domain.chunking import decide_chunking
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.profile import BigFiles

MB = 1024 * 1024
RULES = BigFiles(threshold_bytes=100 * MB, chunk_bytes=10 * MB, bandwidth_bytes_per_s=1 * MB, max_run_s=300)


def test_a_small_quick_file_is_one_run() -> None:
    decision = decide_chunking(50 * MB, FileFormat.CSV, BigFiles())
    assert not decision.chunked
    assert "one run" in decision.reason


def test_a_file_over_the_threshold_is_chunked_and_the_reason_names_the_rule_and_value() -> None:
    decision = decide_chunking(200 * MB, FileFormat.CSV, RULES.model_copy(update={"max_run_s": 10_000}))
    assert decision.chunked
    assert decision.chunk_bytes == 10 * MB
    assert "big_files.threshold_bytes" in decision.reason
    assert "209.7 MB" in decision.reason  # the file's size
    assert "about 20 chunks" in decision.reason


def test_a_file_under_the_threshold_but_too_slow_for_the_bandwidth_is_chunked() -> None:
    decision = decide_chunking(60 * MB, FileFormat.JSONL, RULES)  # about 63 s at 1 MB/s: under 300 s
    assert not decision.chunked
    slow = decide_chunking(80 * MB, FileFormat.JSONL, RULES.model_copy(update={"bandwidth_bytes_per_s": MB // 8}))
    assert slow.chunked
    assert "big_files.max_run_s" in slow.reason
    assert "threshold" not in slow.reason


@pytest.mark.parametrize("fmt", [FileFormat.JSON])
def test_a_json_array_is_never_chunked_and_the_reason_says_why(fmt: FileFormat) -> None:
    decision = decide_chunking(500 * MB, fmt, RULES)
    assert not decision.chunked
    assert "cannot be split" in decision.reason


def test_a_file_that_fits_in_one_chunk_is_not_split() -> None:
    rules = RULES.model_copy(update={"threshold_bytes": MB, "chunk_bytes": 64 * MB})
    decision = decide_chunking(2 * MB, FileFormat.CSV, rules)
    assert not decision.chunked
    assert "fits in one chunk" in decision.reason


@pytest.mark.parametrize("fmt", [FileFormat.CSV, FileFormat.JSONL, FileFormat.PARQUET])
def test_the_default_profile_chunks_a_multi_gigabyte_file_instead_of_rejecting_it(fmt: FileFormat) -> None:
    """A default tenant's 3 GB file passes the size and daily byte rules and is chunked (the
    defaults once capped files at 100 MiB, under the 512 MiB chunking threshold)."""
    from dataclasses import replace

    from mysimbdp.domain.facts import FileFacts
    from mysimbdp.domain.filecheck import QuotaUsage, check_file
    from mysimbdp.domain.profile import DEFAULT_PROFILE

    size = 3 * 10**9
    facts = FileFacts(
        name=f"readings.{fmt}",
        size_bytes=size,
        sha256="ab" * 32,
        format=fmt,
        is_binary=False,
        utf8_error=None,
        has_bom=False,
        max_line_bytes=100,
        longest_line=1,
        columns=["id"],
        rows_total=30_000_000,
        rows_bad=0,
        bad_by_rule={},
        samples=(),
        unreadable=None,
    )
    assert check_file("acme", facts, DEFAULT_PROFILE, QuotaUsage(files_today=0, bytes_today=0)) == []
    limits = DEFAULT_PROFILE.limits
    assert limits.max_file_size_bytes >= size and limits.max_bytes_per_day >= size
    assert limits.max_uncompressed_bytes >= limits.max_file_size_bytes
    assert limits.max_file_size_bytes > DEFAULT_PROFILE.big_files.threshold_bytes
    assert decide_chunking(size, fmt, DEFAULT_PROFILE.big_files).chunked
    over = replace(facts, size_bytes=limits.max_file_size_bytes + 1)
    # one byte over the size limit is over the daily byte quota too (the two are equal)
    assert [v.rule for v in check_file("acme", over, DEFAULT_PROFILE, QuotaUsage(0, 0))] == ["size", "daily_bytes"]
