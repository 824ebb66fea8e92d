from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from mysimbdp.adapters.files import scanner
from mysimbdp.adapters.files.scanner import ScanRules, scan_file
from mysimbdp.domain.facts import FileFacts
from mysimbdp.domain.filecheck import QuotaUsage, check_file
from mysimbdp.domain.formats import FieldType, FileFormat
from mysimbdp.domain.profile import Limits, Profile, Quality, RowRule

PROFILE = Profile(
    limits=Limits(max_file_size_bytes=100_000, max_line_length_bytes=200),
    required_columns=["id"],
    quality=Quality(
        max_bad_row_ratio=0.2,
        rules=[RowRule(field="qty", type=FieldType.INT, min=0), RowRule(field="id", required=True)],
    ),
)
NO_QUOTA = QuotaUsage(files_today=0, bytes_today=0)


def scan(tmp_path: Path, name: str, data: bytes | str, profile: Profile = PROFILE) -> FileFacts:
    path = tmp_path / "stored.bin"
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    facts = scan_file(path, name, ScanRules.of(profile))
    # The scan child gets the rules as JSON (plain rules, no pydantic): the same facts either way.
    assert scan_file(path, name, ScanRules.from_json(ScanRules.of(profile).to_json())) == facts
    return facts


def rules(facts: FileFacts, profile: Profile = PROFILE) -> list[str]:
    return [v.rule for v in check_file("acme", facts, profile, NO_QUOTA)]


def test_clean_csv_is_accepted_with_its_facts(tmp_path: Path) -> None:
    """A good CSV yields its size, sha256 (same as hashlib), columns, rows and longest line."""
    data = b"id,qty\r\n1,5\r\n22,10\r\n"
    facts = scan(tmp_path, "orders.csv", data)
    assert facts.sha256 == hashlib.sha256(data).hexdigest()
    assert (facts.size_bytes, facts.format, facts.columns) == (len(data), FileFormat.CSV, ["id", "qty"])
    assert (facts.rows_total, facts.rows_bad, facts.max_line_bytes, facts.longest_line) == (2, 0, 6, 1)
    assert not facts.is_binary and facts.utf8_error is None and facts.unreadable is None
    assert rules(facts) == []


def test_sha256_and_longest_line_span_chunks(tmp_path: Path) -> None:
    """A file bigger than one read chunk hashes like hashlib and finds its longest line past the chunk edge."""
    lines = [f"{i},{i % 50}" for i in range(200_000)]
    lines[150_000] = "150000," + "7" * 150
    data = ("id,qty\n" + "\n".join(lines) + "\n").encode()
    assert len(data) > 1 << 20
    facts = scan(tmp_path, "big.csv", data, PROFILE.model_copy(update={"limits": Limits()}))
    assert facts.sha256 == hashlib.sha256(data).hexdigest()
    assert (facts.max_line_bytes, facts.longest_line) == (157, 150_002)
    assert facts.rows_total == 200_000


def test_empty_file_is_only_empty(tmp_path: Path) -> None:
    """A 0-byte file is rejected as empty, with no other noise."""
    facts = scan(tmp_path, "orders.csv", b"")
    assert facts.size_bytes == 0 and facts.rows_total == 0
    assert rules(facts) == ["empty"]


def test_header_only_csv_is_rejected(tmp_path: Path) -> None:
    """A CSV with a header and no rows is rejected as header_only."""
    facts = scan(tmp_path, "orders.csv", "id,qty\n")
    assert facts.columns == ["id", "qty"]
    assert rules(facts) == ["header_only"]


@pytest.mark.parametrize("name", ["orders.txt", "orders.xlsx", "orders"])
def test_unknown_extension_is_rejected_without_reading_rows(tmp_path: Path, name: str) -> None:
    """A .txt, .xlsx or extension-less file is refused by the format rule only."""
    facts = scan(tmp_path, name, "id,qty\n1,2\n")
    assert facts.format is None and facts.rows_total == 0
    assert rules(facts) == ["format"]


def test_binary_garbage_is_rejected_as_binary(tmp_path: Path) -> None:
    """Random bytes with NULs are binary: one violation, no encoding or row noise."""
    data = bytes(random.Random(7).randrange(256) for _ in range(5000)) + b"\x00"
    facts = scan(tmp_path, "orders.csv", data)
    assert facts.is_binary and facts.rows_total == 0
    assert rules(facts) == ["binary"]


def test_latin1_file_reports_the_offset_of_the_first_bad_byte(tmp_path: Path) -> None:
    """A Latin-1 file is rejected for its encoding with the byte offset of the first non-UTF-8 byte."""
    data = "id,name\n1,café\n".encode("latin-1")
    facts = scan(tmp_path, "orders.csv", data)
    assert facts.utf8_error == "not valid UTF-8 at byte 13 (line 2, bytes b'\\xe9')"
    assert not facts.is_binary
    assert rules(facts) == ["encoding"]


def test_bom_is_accepted(tmp_path: Path) -> None:
    """A UTF-8 BOM is noted and does not end up in the first column name."""
    facts = scan(tmp_path, "orders.csv", b"\xef\xbb\xbfid,qty\n1,2\n")
    assert facts.has_bom and facts.columns == ["id", "qty"]
    assert rules(facts) == []


def test_ragged_and_invalid_rows_are_counted_by_rule(tmp_path: Path) -> None:
    """Ragged rows and quality failures are counted per rule, each bad row once, with samples."""
    text = "id,qty\n1,5\n2\n3,abc\n,-1\n" + "".join(f"{i},1\n" for i in range(10, 20))
    facts = scan(tmp_path, "orders.csv", text)
    assert (facts.rows_total, facts.rows_bad) == (14, 3)
    assert facts.bad_by_rule == {"ragged": 1, "qty.type": 1, "id.required": 1, "qty.min": 1}
    assert facts.samples[0] == "line 3: expected 2 fields, got 1"
    assert facts.samples[2] == "line 5: field 'qty': value '-1' is below the min of 0; field 'id': required but missing"


def test_bad_row_ratio_over_the_limit_rejects_with_counts(tmp_path: Path) -> None:
    """3 bad rows of 14 (0.214) is over a 0.2 limit: rejected with the ratio and per-rule counts."""
    text = "id,qty\n1,5\n2\n3,abc\n4,x\n" + "".join(f"{i},1\n" for i in range(10, 20))
    facts = scan(tmp_path, "orders.csv", text)
    (violation,) = check_file("acme", facts, PROFILE, NO_QUOTA)
    assert violation.rule == "bad_row_ratio"
    assert "3 of 14 rows are bad (ratio 0.214), over the limit of 0.200" in violation.message
    assert "qty.type=2, ragged=1" in violation.message


def test_bad_rows_under_the_ratio_are_accepted(tmp_path: Path) -> None:
    """One bad row in twenty is under the limit, so the file is accepted and the row left to the app."""
    text = "id,qty\n1,abc\n" + "".join(f"{i},1\n" for i in range(10, 29))
    facts = scan(tmp_path, "orders.csv", text)
    assert (facts.rows_total, facts.rows_bad) == (20, 1)
    assert rules(facts) == []


def test_unterminated_quote_is_unreadable(tmp_path: Path) -> None:
    """A quote never closed makes the file unreadable, naming the line, with no row noise."""
    facts = scan(tmp_path, "orders.csv", 'id,qty\n1,2\n2,"3\n4,5\n')
    assert facts.unreadable is not None and facts.unreadable.startswith("line 3:")
    assert rules(facts) == ["unreadable"]


def test_line_over_the_limit_is_rejected_and_counted(tmp_path: Path) -> None:
    """A 300-byte line over a 200-byte limit gives a line_length violation and a line_length bad row."""
    facts = scan(tmp_path, "orders.csv", f"id,qty\n1,2\n2,{'9' * 298}\n3,4\n")
    assert (facts.max_line_bytes, facts.longest_line) == (300, 3)
    assert facts.bad_by_rule == {"line_length": 1}
    assert "line_length" in rules(facts)


def test_file_over_the_size_limit_is_rejected(tmp_path: Path) -> None:
    """A file one byte over the size limit is refused with its size and the limit."""
    profile = PROFILE.model_copy(update={"limits": Limits(max_file_size_bytes=20)})
    facts = scan(tmp_path, "orders.csv", "id,qty\n1,2\n3,4\n5,666\n", profile)
    (violation,) = check_file("acme", facts, profile, NO_QUOTA)
    assert violation.rule == "size"
    assert "21 bytes is over the limit of 20 bytes" in violation.message


def test_jsonl_and_json_files_are_scanned(tmp_path: Path) -> None:
    """JSON Lines and JSON arrays are counted by record, with the first object's keys as columns."""
    jsonl = scan(tmp_path, "orders.ndjson", '{"id": 1, "qty": 2}\n{"id": 2, "qty": "x"}\n')
    assert (jsonl.format, jsonl.rows_total, jsonl.bad_by_rule) == (FileFormat.JSONL, 2, {"qty.type": 1})
    array = scan(tmp_path, "orders.json", '[{"id": 1, "qty": 2}, [1]]')
    assert (array.format, array.rows_total, array.columns) == (FileFormat.JSON, 2, ["id", "qty"])
    assert array.samples == ("element 2: not a JSON object (got an array)",)


@pytest.mark.parametrize("name", ["a/orders.csv", "..\\orders.csv", "..", "../orders.csv"])
def test_unsafe_names_are_rejected(tmp_path: Path, name: str) -> None:
    """Names with path separators or '..' are refused by the file_name rule."""
    assert "file_name" in rules(scan(tmp_path, name, "id,qty\n1,2\n"))


@pytest.mark.parametrize("name", ["my orders.csv", "commandes été.csv", "订单.jsonl"])
def test_spaces_and_unicode_names_are_accepted(tmp_path: Path, name: str) -> None:
    """Spaces and unicode letters in a file name are fine."""
    data = '{"id": 1, "qty": 2}\n' if name.endswith(".jsonl") else "id,qty\n1,2\n"
    assert rules(scan(tmp_path, name, data)) == []


NO_RULES = Profile(limits=Limits(max_line_length_bytes=200))
SHAPES = {
    "clean": "id,qty\r\n1,5\r\n22,10\r\n",
    "ragged": "id,qty\n1,5\n2\n3,4,5\n" + "".join(f"{i}\n" for i in range(6)) + "9,9",
    "blank_lines": "\n\nid,qty\n\n1,2\n\r\n\n3,4\n\n",
    "quoted_newlines": 'id,note\n1,"two\nlines"\n2\n3,"a\r\nb\r\nc"\n4,x,y\n',
    "bom_crlf": "\ufeffid,qty\r\n1,2\r\n\r\n3\r\n4,5\r\n",
    "bad_quote": 'id,qty\n1,2\n2,"3"x\n4,5\n',
    "unterminated_quote": 'id,qty\n1,2\n2,"3\n4,5\n',
    "overlong_line": f"id,qty\n1,2\n2,{'9' * 298}\n3\n",
    "overlong_header": f"id,{'q' * 300}\n1,2\n",
    "duplicate_header": "id,id\n1,2\n",
    "blank_only": "\n\r\n\n",
    "lone_cr": "id,qty\r1,2\r3\r",
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_lean_csv_pass_gives_the_same_facts_as_the_record_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """With no row rules, a CSV scans to the very same FileFacts as through RecordReader."""
    lean = scan(tmp_path, "orders.csv", SHAPES[name], NO_RULES)
    monkeypatch.setattr(scanner, "_scan_csv_shape", lambda path, p: scanner._scan_rows(path, FileFormat.CSV, p))
    assert scan(tmp_path, "orders.csv", SHAPES[name], NO_RULES) == lean


PLAIN_SHAPES = {
    **{name: text for name, text in SHAPES.items() if '"' not in text and "lone_cr" not in name},
    "one_column": "id\n1\n\n2\n \n3",
    "trailing_blank_lines": "a,b\n1,2\n\n\n",
    "leading_blank_lines_crlf": "\r\n\r\na,b\r\n1,2\r\n3\r\n",
    "no_final_newline_ragged": "a,b,c\n1,2,3\n4,5",
    "header_only": "a,b\n",
}


@pytest.mark.parametrize("name", sorted(PLAIN_SHAPES))
@pytest.mark.parametrize("chunk_bytes", [3, 1 << 20])
def test_comma_count_pass_gives_the_same_facts_as_the_record_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, chunk_bytes: int
) -> None:
    """A quote-free CSV counted by commas per line scans to the very same FileFacts as
    through RecordReader, whatever the chunk size."""
    monkeypatch.setattr(scanner, "CHUNK_BYTES", chunk_bytes)
    used: list[bool] = []
    plain = scanner._scan_csv_plain

    def spy(path: Path, profile: Profile) -> object:
        used.append(True)
        return plain(path, profile)

    monkeypatch.setattr(scanner, "_scan_csv_plain", spy)
    counted = scan(tmp_path, "orders.csv", PLAIN_SHAPES[name], NO_RULES)
    assert used or name.startswith("overlong"), "the comma-count pass ran"
    monkeypatch.setattr(scanner, "_scan_csv_plain", lambda path, p: scanner._scan_rows(path, FileFormat.CSV, p))
    assert scan(tmp_path, "orders.csv", PLAIN_SHAPES[name], NO_RULES) == counted


def test_lean_csv_pass_runs_only_without_rules_or_long_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lean pass is taken for a rule-less CSV within the line limit, and for nothing else."""
    taken: list[str] = []
    lean = scanner._scan_csv_shape

    def spy(path: Path, profile: Profile) -> scanner._Rows:
        taken.append(path.name)
        return lean(path, profile)

    monkeypatch.setattr(scanner, "_scan_csv_shape", spy)
    monkeypatch.setattr(scanner, "_scan_csv_plain", spy)  # the quote-free variant of the lean pass
    facts = scan(tmp_path, "orders.csv", SHAPES["ragged"], NO_RULES)
    assert taken and (facts.rows_total, facts.rows_bad, facts.bad_by_rule) == (10, 8, {"ragged": 8})
    assert facts.samples == tuple(f"line {n}: expected 2 fields, got {1 if n != 4 else 3}" for n in (3, 4, 5, 6, 7))
    taken.clear()
    scan(tmp_path, "orders.csv", SHAPES["ragged"])
    scan(tmp_path, "orders.csv", SHAPES["overlong_line"], NO_RULES)
    scan(tmp_path, "orders.jsonl", '{"id": 1}\n', NO_RULES)
    assert taken == []


def longest_by_hand(data: bytes) -> tuple[int, int]:
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()
    lengths = [len(line) - line.endswith(b"\r") for line in lines] or [0]
    longest = max(lengths)
    return longest, (lengths.index(longest) + 1 if longest else 0)


@pytest.mark.parametrize(
    "data",
    [
        b"ab\r\ncdef\r\ng\r\n" * 3 + b"hijklm\r\n",
        b"ab\ncdef\ng\n" * 3 + b"hijklm",
        b"ab\r\ncdef\ng\r\r\nxyz\rw\n\r\n\n" * 2 + b"tail\r",
        b"one\r\ntwo\r\nthree\r\n\r\nfour\r",
        b"no line end at all",
    ],
)
@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 1 << 20])
def test_longest_line_is_exact_across_chunk_edges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, chunk_bytes: int
) -> None:
    """Pass 1 finds the first longest line, CRLF or LF or mixed, wherever the chunks split it."""
    monkeypatch.setattr(scanner, "CHUNK_BYTES", chunk_bytes)
    path = tmp_path / "lines.csv"
    path.write_bytes(data)
    seen = scanner._scan_bytes(path)
    assert (seen.longest, seen.longest_line) == longest_by_hand(data)


def test_a_known_sha256_is_not_computed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload's sha256 (its receiver hashed the bytes on the way) is given to the scan: every
    byte is still read and checked, the same facts come out, and nothing is hashed."""
    data = "id,qty\n" + "".join(f"r{i},{i}\n" for i in range(500)) + "x,-1\n"
    path = tmp_path / "up.csv"
    path.write_text(data, encoding="utf-8")
    hashed = scan_file(path, "up.csv", ScanRules.of(PROFILE))
    assert hashed.sha256 == hashlib.sha256(data.encode()).hexdigest()

    def no_hashing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the scan hashed a file whose sha256 it was given")

    monkeypatch.setattr(scanner.hashlib, "sha256", no_hashing)
    given = scan_file(path, "up.csv", ScanRules.of(PROFILE), sha256=hashed.sha256)
    assert given == hashed  # rows, bad rows, longest line: all read; the hash is the one given
    other = scan_file(path, "up.csv", ScanRules.of(PROFILE), sha256="ab" * 32)
    assert other.sha256 == "ab" * 32  # taken as given, never recomputed
