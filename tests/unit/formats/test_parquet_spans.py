"""A Parquet file of several row groups is planned as ranges of whole groups whose rows,
read part by part, are the whole file's rows with the same (global) row numbers."""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mysimbdp.domain.formats import FileFormat
from mysimbdp.formats.parquet import read_layout
from mysimbdp.formats.readers import RecordReader
from mysimbdp.formats.spans import plan_spans


def _parquet(path: Path, rows: int, group_rows: int) -> Path:
    table = pa.table({"id": list(range(rows)), "name": [f"name{n}" for n in range(rows)]})
    pq.write_table(table, path, row_group_size=group_rows)
    return path


def test_row_groups_split_into_balanced_contiguous_parts(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "f.parquet", 10_000, 1_000)
    layout = read_layout(path)
    assert len(layout.groups) == 10
    spans = plan_spans(path, FileFormat.PARQUET, 2, min_span_bytes=1)
    assert len(spans) == 2
    assert spans[0].start == 0 and spans[-1].end == path.stat().st_size
    for before, after in itertools.pairwise(spans):
        assert before.end == after.start
    groups = [layout.groups_in(span.start, span.end) for span in spans]
    assert [g.index for part in groups for g in part] == list(range(10))  # each group once, in order
    assert [len(part) for part in groups] == [5, 5]  # balanced by bytes (equal groups here)
    assert [span.first_line for span in spans] == [1, 5_001]
    whole = list(RecordReader(path, FileFormat.PARQUET))
    parted = [r for span in spans for r in RecordReader(path, FileFormat.PARQUET, span=span)]
    assert parted == whole and [r.line for r in parted] == list(range(1, 10_001))


def test_more_parts_than_groups_gives_one_part_a_group(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "f.parquet", 3_000, 1_000)
    spans = plan_spans(path, FileFormat.PARQUET, 8, min_span_bytes=1)
    assert [span.first_line for span in spans] == [1, 1_001, 2_001]


def test_one_row_group_or_a_small_file_stays_whole(tmp_path: Path) -> None:
    one = _parquet(tmp_path / "one.parquet", 10_000, 1 << 20)
    size = one.stat().st_size
    assert len(read_layout(one).groups) == 1
    assert len(plan_spans(one, FileFormat.PARQUET, 2, min_span_bytes=1)) == 1
    many = _parquet(tmp_path / "many.parquet", 10_000, 1_000)
    assert len(plan_spans(many, FileFormat.PARQUET, 2, min_span_bytes=many.stat().st_size)) == 1
    assert len(plan_spans(many, FileFormat.PARQUET, 1, min_span_bytes=1)) == 1
    assert size > 0


def test_an_unreadable_file_stays_whole(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 5000 + b"PAR1")
    assert len(plan_spans(path, FileFormat.PARQUET, 2, min_span_bytes=1)) == 1
