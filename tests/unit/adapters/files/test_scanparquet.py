"""The scan of a Parquet file: schema columns, rows against the row rules, neutral text
facts, and the rejections the profile's rules give for a bad or unreadable file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mysimbdp.adapters.files.scanner import ScanRules, scan_file
from mysimbdp.domain.facts import FileFacts
from mysimbdp.domain.filecheck import QuotaUsage, check_file
from mysimbdp.domain.formats import FieldType, FileFormat
from mysimbdp.domain.profile import Profile, Quality, RowRule

NO_QUOTA = QuotaUsage(files_today=0, bytes_today=0)


def _write(tmp_path: Path, name: str = "readings.parquet", rows: int = 100) -> Path:
    path = tmp_path / name
    table = pa.table({"id": list(range(rows)), "qty": [i % 10 for i in range(rows)]})
    pq.write_table(table, path, row_group_size=30)
    return path


def _scan(path: Path, profile: Profile, name: str | None = None) -> FileFacts:
    return scan_file(path, name or path.name, ScanRules.of(profile))


def _violations(facts: FileFacts, profile: Profile) -> list[str]:
    return [v.message for v in check_file("acme", facts, profile, NO_QUOTA)]


def test_a_good_parquet_file_is_accepted_with_its_schema_and_row_count(tmp_path: Path) -> None:
    """Default profile (which allows parquet): columns from the schema, every row counted,
    the text facts neutral, so no binary/encoding/line rule fires."""
    path = _write(tmp_path)
    profile = Profile()
    facts = _scan(path, profile)
    assert facts.format is FileFormat.PARQUET and facts.columns == ["id", "qty"] and facts.rows_total == 100
    assert (facts.is_binary, facts.utf8_error, facts.max_line_bytes, facts.unreadable) == (False, None, 0, None)
    assert facts.size_bytes == path.stat().st_size and len(facts.sha256) == 64
    assert _violations(facts, profile) == []


def test_required_columns_are_checked_against_the_schema(tmp_path: Path) -> None:
    profile = Profile(required_columns=["id", "sku"])
    (message,) = _violations(_scan(_write(tmp_path), profile), profile)
    assert message.startswith(
        "tenant 'acme': file 'readings.parquet': rule required_columns: missing required columns ['sku']"
    )


def test_quality_rules_count_bad_rows_and_the_ratio_rejects(tmp_path: Path) -> None:
    """qty max 7: rows with qty 8 or 9 (20 of 100) are bad, by rule and with row samples."""
    profile = Profile(quality=Quality(max_bad_row_ratio=0.1, rules=[RowRule(field="qty", type=FieldType.INT, max=7)]))
    facts = _scan(_write(tmp_path), profile)
    assert facts.rows_bad == 20 and facts.bad_by_rule == {"qty.max": 20}
    assert facts.samples[0].startswith("row 9: ")
    (message,) = _violations(facts, profile)
    assert "rule bad_row_ratio: 20 of 100 rows are bad (ratio 0.200)" in message


def test_a_parquet_file_under_another_name_is_told_by_its_magic(tmp_path: Path) -> None:
    facts = _scan(_write(tmp_path, "readings.bin"), Profile())
    assert facts.format is FileFormat.PARQUET and facts.rows_total == 100


def test_bad_magic_is_rejected_by_rule_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"id,qty\n1,2\n")
    profile = Profile()
    (message,) = _violations(_scan(path, profile), profile)
    assert message == (
        "tenant 'acme': file 'fake.parquet': rule unreadable: not a Parquet file: it starts with b'id,q', not b'PAR1'"
    )


def test_a_truncated_or_corrupt_footer_is_rejected_by_rule_unreadable(tmp_path: Path) -> None:
    path = _write(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    profile = Profile()
    (message,) = _violations(_scan(path, profile), profile)
    assert message.startswith("tenant 'acme': file 'readings.parquet': rule unreadable: not a readable Parquet file: ")


def test_a_corrupt_row_group_is_rejected_with_or_without_row_rules(tmp_path: Path) -> None:
    """Without row rules the scan decodes every page too (only the Python values are skipped),
    so garbage in a group's pages is rule unreadable, naming the group, either way."""
    path = _write(tmp_path)
    data = bytearray(path.read_bytes())
    group = pq.ParquetFile(path).metadata.row_group(1)
    start = min(group.column(j).data_page_offset for j in range(group.num_columns))
    data[start : start + 40] = b"\xfe" * 40
    path.write_bytes(bytes(data))
    with_rules = Profile(quality=Quality(rules=[RowRule(field="qty", type=FieldType.INT)]))
    for profile in (Profile(), with_rules):
        (message,) = _violations(_scan(path, profile), profile)
        assert "rule unreadable: not a readable Parquet file (row group 1, rows 31-60): " in message
