from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from mysimbdp.domain.formats import FileFormat
from mysimbdp.formats.readers import RecordReader
from mysimbdp.formats.spans import plan_spans


def _csv(path: Path, rows: int, newline: str = "\n", extra: str = "") -> Path:
    lines = ["id,name,value"] + [f"{n},name{n},{n * 1.5}" for n in range(rows)]
    lines[5] = "5,ragged"  # a bad row in the first span
    lines[rows - 3] = ""  # a blank line near the end
    path.write_text(newline.join(lines) + newline + extra, newline="")
    return path


def _records(path: Path, fmt: FileFormat, spans: list) -> list:  # type: ignore[type-arg]
    out = []
    for span in spans:
        out.extend(RecordReader(path, fmt, span=span))
    return out


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_spans_of_a_quote_free_csv_read_exactly_the_whole_files_records(tmp_path: Path, newline: str) -> None:
    """Three spans cut after newlines yield the same records, with the same line numbers, as one read."""
    path = _csv(tmp_path / "f.csv", 3000, newline)
    spans = plan_spans(path, FileFormat.CSV, 3, min_span_bytes=1000)
    assert len(spans) == 3
    data = path.read_bytes()
    assert spans[0].start == 0 and spans[-1].end == len(data)
    for before, after in itertools.pairwise(spans):
        assert before.end == after.start and data[after.start - 1 : after.start] == b"\n"
        assert after.first_line == data[: after.start].count(b"\n") + 1
    assert _records(path, FileFormat.CSV, spans) == list(RecordReader(path, FileFormat.CSV))


def test_spans_of_json_lines_read_exactly_the_whole_files_records(tmp_path: Path) -> None:
    """JSON Lines split in two give the same records (bad lines included) as one read."""
    path = tmp_path / "f.jsonl"
    lines = [f'{{"id": {n}, "v": "x{n}"}}' for n in range(2000)]
    lines[10] = "not json"
    path.write_text("\n".join(lines) + "\n")
    spans = plan_spans(path, FileFormat.JSONL, 2, min_span_bytes=1000)
    assert len(spans) == 2
    assert _records(path, FileFormat.JSONL, spans) == list(RecordReader(path, FileFormat.JSONL))


@pytest.mark.parametrize(
    ("name", "extra", "parts", "min_bytes"),
    [
        ("quoted", '"a quoted, field",x,1\n', 2, 1000),  # a quote anywhere: fields may hold newlines
        ("lone_cr", "7,a\rb,1\n", 2, 1000),  # csv.reader would end a line at a lone CR
        ("small", "", 2, 10**9),  # smaller than two minimum spans
        ("one_part", "", 1, 1000),
    ],
)
def test_files_that_must_not_be_split_give_one_span(
    tmp_path: Path, name: str, extra: str, parts: int, min_bytes: int
) -> None:
    """Quotes, lone carriage returns, small files and parallelism 1 keep the file whole."""
    path = _csv(tmp_path / f"{name}.csv", 3000, extra=extra)
    spans = plan_spans(path, FileFormat.CSV, parts, min_span_bytes=min_bytes)
    assert len(spans) == 1 and spans[0].start == 0 and spans[0].end == path.stat().st_size


def test_a_json_array_is_never_split(tmp_path: Path) -> None:
    """A JSON array has no line structure to cut at."""
    path = tmp_path / "f.json"
    path.write_text("[" + ",\n".join('{"a": 1}' for _ in range(5000)) + "]")
    assert len(plan_spans(path, FileFormat.JSON, 4, min_span_bytes=100)) == 1
