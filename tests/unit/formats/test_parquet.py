"""The Parquet reader: JSON-ready values, row numbers across row groups, byte ranges of whole
groups, bounded batches, and a clear FileUnreadable for a file that is not readable Parquet."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mysimbdp.adapters.files.chunker import chunk_span, plan_parquet
from mysimbdp.domain.formats import FileFormat
from mysimbdp.errors import FileUnreadable
from mysimbdp.formats.parquet import ParquetRows, has_magic, json_ready, read_layout, row_builder
from mysimbdp.formats.readers import RecordReader, Span, raw_text

PARQUET = FileFormat.PARQUET


def _numbers(tmp_path: Path, rows: int = 1000, group_rows: int = 100) -> Path:
    path = tmp_path / "numbers.parquet"
    table = pa.table({"id": list(range(rows)), "name": [f"n{i}" for i in range(rows)]})
    pq.write_table(table, path, row_group_size=group_rows)
    return path


def test_values_become_their_documented_json_forms(tmp_path: Path) -> None:
    """Timestamps as ISO text (UTC 'Z' with a zone, nanoseconds kept), dates, times, decimals
    and uint64 as exact text, binary as base64, nested values as objects and arrays."""
    path = tmp_path / "types.parquet"
    table = pa.table(
        {
            "ts_ns": pa.array([1_700_000_000_123_456_789], pa.timestamp("ns")),
            "ts_tz": pa.array([1_700_000_000_123_456], pa.timestamp("us", tz="Europe/Helsinki")),
            "day": pa.array([dt.date(2026, 1, 2)]),
            "at": pa.array([dt.time(1, 2, 3, 456)]),
            "price": pa.array([Decimal("12345678901234567890.30")], pa.decimal128(22, 2)),
            "big": pa.array([2**64 - 1], pa.uint64()),
            "small": pa.array([-(2**63)], pa.int64()),
            "ratio": pa.array([float("nan")]),
            "blob": pa.array([b"\x00\x01"]),
            "kind": pa.array(["a"]).dictionary_encode(),
            "wait": pa.array([5], pa.duration("ms")),
            "nested": pa.array([{"n": 1, "on": dt.date(2020, 1, 1)}]),
            "prices": pa.array([[Decimal("1.50")]], pa.list_(pa.decimal128(4, 2))),
            "tags": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())),
        }
    )
    pq.write_table(table, path)
    (record,) = RecordReader(path, PARQUET)
    assert record.line == 1 and record.problem is None and record.data is not None
    assert orjson.loads(orjson.dumps(record.data)) == {
        "ts_ns": "2023-11-14T22:13:20.123456789",
        "ts_tz": "2023-11-14T22:13:20.123456Z",
        "day": "2026-01-02",
        "at": "01:02:03.000456",
        "price": "12345678901234567890.30",
        "big": "18446744073709551615",
        "small": -(2**63),
        "ratio": None,
        "blob": "AAE=",
        "kind": "a",
        "wait": 5,
        "nested": {"n": 1, "on": "2020-01-01"},
        "prices": ["1.50"],
        "tags": [["k", 1]],
    }


def test_rows_are_what_arrows_own_rows_of_the_json_ready_columns_are(tmp_path: Path) -> None:
    """The rows, built column by column, are ``RecordBatch.to_pylist()`` of the JSON-ready
    columns (what the reader gave before): same keys in the same order, same values and
    types (exact integers, decimal text, nulls), batch after batch."""
    path = tmp_path / "mixed.parquet"
    rows = 700
    prices = [Decimal(f"12345678901234567890.{n % 100:02d}") for n in range(rows)]
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "big": pa.array([2**63 - 1 - n for n in range(rows)], pa.int64()),
            "u": pa.array([2**64 - 1 - n for n in range(rows)], pa.uint64()),
            "price": pa.array(prices, pa.decimal128(22, 2)),
            "x": pa.array([None if n % 7 == 0 else n / 3 for n in range(rows)], pa.float64()),
            "ok": pa.array([n % 3 == 0 for n in range(rows)]),
            "name": pa.array([None if n % 5 == 0 else f"n{n}" for n in range(rows)]),
            "at": pa.array([1_700_000_000_000 + n for n in range(rows)], pa.timestamp("ms", tz="UTC")),
            "tags": pa.array([[n, n + 1] for n in range(rows)], pa.list_(pa.int32())),
        }
    )
    pq.write_table(table, path, row_group_size=300)
    got = [row for _, batch in ParquetRows(path, batch_rows=128).batches() for row in batch]
    expected = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=128):
        columns = [json_ready(column) for column in batch.columns]
        expected += pa.RecordBatch.from_arrays(columns, names=batch.schema.names).to_pylist()
    assert len(got) == rows and got == expected
    assert [list(row) for row in got] == [list(row) for row in expected]
    assert [tuple(map(type, row.values())) for row in got] == [tuple(map(type, row.values())) for row in expected]
    assert got[0]["big"] == 2**63 - 1 and got[0]["u"] == "18446744073709551615"
    assert got[1]["price"] == "12345678901234567890.01"


@pytest.mark.parametrize("width", [1, 3, 257])
def test_a_row_builder_makes_the_rows_dict_zip_makes(width: int) -> None:
    """Any width (over 256 columns: dict(zip(...)) itself), a repeated name keeping its last
    value, names that are no identifiers, and the builder reused for another batch."""
    names = [f"c {i}'\"" for i in range(width)]
    if width > 1:
        names[-1] = names[0]  # a repeated name
    build = row_builder(names)
    for rows in (2, 5):
        columns = [[(i, r) for r in range(rows)] for i in range(width)]
        assert build(columns) == [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    assert build([[] for _ in range(width)]) == []


def test_a_parquet_readers_columns_are_the_schemas_once_iteration_started(tmp_path: Path) -> None:
    reader = RecordReader(_numbers(tmp_path, rows=5), PARQUET)
    assert reader.columns is None
    records = iter(reader)
    assert next(records).data == {"id": 0, "name": "n0"} and reader.columns == ["id", "name"]
    assert [r.line for r in records] == [2, 3, 4, 5] and reader.columns == ["id", "name"]


def test_nulls_stay_null_in_every_kind_of_column(tmp_path: Path) -> None:
    """A null timestamp, decimal, struct or list is JSON null, not text or an empty value."""
    path = tmp_path / "nulls.parquet"
    table = pa.table(
        {
            "ts": pa.array([None], pa.timestamp("ms")),
            "price": pa.array([None], pa.decimal128(4, 2)),
            "nested": pa.array([None], pa.struct([("on", pa.date32())])),
            "days": pa.array([None], pa.list_(pa.date32())),
        }
    )
    pq.write_table(table, path)
    (record,) = RecordReader(path, PARQUET)
    assert record.data == {"ts": None, "price": None, "nested": None, "days": None}


def test_rows_are_numbered_across_row_groups_and_the_columns_are_the_schemas(tmp_path: Path) -> None:
    """Row n of the file (1-based) is Record.line n, whatever group it is in."""
    path = _numbers(tmp_path, rows=250, group_rows=100)
    reader = RecordReader(path, PARQUET)
    records = list(reader)
    assert [r.line for r in records] == list(range(1, 251))
    assert all(r.data is not None and r.data["id"] == r.line - 1 for r in records)
    assert reader.columns == ["id", "name"]
    layout = read_layout(path)
    assert layout.rows == 250 and [(g.rows, g.rows_before) for g in layout.groups] == [(100, 0), (100, 100), (50, 200)]
    assert reader.bytes_read == sum(g.size_bytes for g in layout.groups)


def test_a_byte_range_reads_the_groups_starting_in_it_under_the_whole_files_numbers(tmp_path: Path) -> None:
    """Group 1 alone (its first byte to group 2's) gives rows 101-200, numbered as in the file."""
    path = _numbers(tmp_path, rows=300, group_rows=100)
    groups = read_layout(path).groups
    span = Span(groups[1].start, groups[2].start, 101)
    lines = [r.line for r in RecordReader(path, PARQUET, span=span)]
    assert lines == list(range(101, 201))


def test_the_chunks_of_a_plan_read_every_row_once(tmp_path: Path) -> None:
    """Chunks of whole groups: contiguous from 0 to the size, first_line the first row's
    number, and read one after the other they give the file's rows exactly once."""
    path = _numbers(tmp_path, rows=1000, group_rows=100)
    group_bytes = read_layout(path).groups[0].size_bytes
    chunks = plan_parquet(path, 2 * group_bytes)
    assert len(chunks) >= 3 and chunks[0].start == 0 and chunks[-1].end == path.stat().st_size
    assert all(a.end == b.start for a, b in itertools.pairwise(chunks))
    seen: list[int] = []
    for chunk in chunks:
        lines = [r.line for r in RecordReader(path, PARQUET, span=chunk_span(path, PARQUET, chunk))]
        assert lines[0] == chunk.first_line
        seen += lines
    assert seen == list(range(1, 1001))


def test_a_file_of_one_row_group_is_one_chunk(tmp_path: Path) -> None:
    path = _numbers(tmp_path, rows=100, group_rows=1000)
    assert [(c.start, c.end, c.first_line) for c in plan_parquet(path, 1)] == [(0, path.stat().st_size, 1)]


def test_rows_are_decoded_in_bounded_batches_within_their_group(tmp_path: Path) -> None:
    """batch_rows caps the rows held at once, and no batch spans two groups."""
    path = _numbers(tmp_path, rows=250, group_rows=100)
    sizes = [(first, len(rows)) for first, rows in ParquetRows(path, batch_rows=30).batches()]
    assert max(size for _, size in sizes) == 30
    assert [first for first, _ in sizes if (first - 1) % 100 == 0] == [1, 101, 201]


def test_a_good_rows_raw_text_is_its_json(tmp_path: Path) -> None:
    """What a rejected Parquet row leaves in quarantine: compact JSON of its values."""
    path = _numbers(tmp_path, rows=1)
    (record,) = RecordReader(path, PARQUET)
    assert raw_text(record, PARQUET) == '{"id":0,"name":"n0"}'


def test_a_file_without_the_magic_is_unreadable_naming_what_it_starts_with(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"id,name\n1,a\n")
    with pytest.raises(FileUnreadable, match=r"not a Parquet file: it starts with b'id,n', not b'PAR1'"):
        list(RecordReader(path, PARQUET))
    assert not has_magic(b"id,n", b"a\n")


def test_a_truncated_file_is_unreadable(tmp_path: Path) -> None:
    """The footer cut off: the reader says it is not readable Parquet, and why."""
    path = _numbers(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileUnreadable, match=r"^not a readable Parquet file: .*magic"):
        read_layout(path)


def test_a_corrupt_footer_is_unreadable(tmp_path: Path) -> None:
    """The footer's metadata overwritten (length and magic intact): FileUnreadable, no crash."""
    path = _numbers(tmp_path)
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    data[-8 - footer : -8] = b"\xff" * footer
    path.write_bytes(bytes(data))
    with pytest.raises(FileUnreadable, match=r"^not a readable Parquet file: "):
        list(RecordReader(path, PARQUET))


def test_a_corrupt_row_group_is_unreadable_naming_the_group(tmp_path: Path) -> None:
    """Garbage in group 1's pages: the rows before come, then FileUnreadable naming the group."""
    path = _numbers(tmp_path, rows=300, group_rows=100)
    groups = read_layout(path).groups
    data = bytearray(path.read_bytes())
    middle = groups[1].start + groups[1].size_bytes // 2
    data[groups[1].start : middle] = b"\xfe" * (middle - groups[1].start)
    path.write_bytes(bytes(data))
    seen: list[int] = []
    with pytest.raises(FileUnreadable, match=r"not a readable Parquet file \(row group 1, rows 101-200\): "):
        seen.extend(r.line for r in RecordReader(path, PARQUET))
    assert seen == list(range(1, 101))


def test_reading_csv_and_starting_the_cli_do_not_import_pyarrow(tmp_path: Path) -> None:
    """pyarrow is imported only where a Parquet file is read."""
    csv = tmp_path / "a.csv"
    csv.write_text("a\n1\n")
    code = (
        "import sys; from pathlib import Path; import mysimbdp.cli, mysimbdp.adapters.files.scanner;"
        "from mysimbdp.formats.readers import RecordReader;"
        f"list(RecordReader(Path({str(csv)!r}), 'csv'));"
        "assert 'pyarrow' not in sys.modules, 'pyarrow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
