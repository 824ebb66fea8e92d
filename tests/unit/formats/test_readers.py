from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from mysimbdp.domain.formats import FileFormat
from mysimbdp.errors import FileUnreadable
from mysimbdp.formats.readers import Record, RecordReader, Span, good_record, iter_records, raw_text


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def read(path: Path, fmt: FileFormat, **kwargs: int) -> list[Record]:
    return list(iter_records(path, fmt, **kwargs))


def test_csv_rows_are_dicts_of_strings_with_line_numbers(tmp_path: Path) -> None:
    """CSV rows come back as dicts of the exact strings, "" for empty, numbered from line 2."""
    path = write(tmp_path, "a.csv", "id,name,qty\n1,apple,\n2, pear ,5\n")
    reader = RecordReader(path, FileFormat.CSV)
    assert reader.columns is None
    records = list(reader)
    assert reader.columns == ["id", "name", "qty"]
    assert records == [
        Record(2, {"id": "1", "name": "apple", "qty": ""}, "", None),
        Record(3, {"id": "2", "name": " pear ", "qty": "5"}, "", None),
    ]


def test_quoted_newlines_push_later_rows_further_down(tmp_path: Path) -> None:
    """A quoted field spanning lines keeps its newline and the next row starts on its real line."""
    path = write(tmp_path, "a.csv", 'id,note\n1,"two\nlines"\n2,x\n')
    records = read(path, FileFormat.CSV)
    assert [(r.line, r.data) for r in records] == [
        (2, {"id": "1", "note": "two\nlines"}),
        (4, {"id": "2", "note": "x"}),
    ]


def test_crlf_bom_and_blank_lines_are_tolerated(tmp_path: Path) -> None:
    """A BOM, CRLF line ends and blank lines do not leak into names, values or rows."""
    path = write(tmp_path, "a.csv", b"\xef\xbb\xbfid,name\r\n1,a\r\n\r\n\r\n2,b\r\n")
    records = read(path, FileFormat.CSV)
    assert [(r.line, r.data) for r in records] == [(2, {"id": "1", "name": "a"}), (5, {"id": "2", "name": "b"})]


@pytest.mark.parametrize(("line", "count"), [("1", 1), ("1,a,extra", 3)])
def test_ragged_rows_are_bad_records_with_their_text(tmp_path: Path, line: str, count: int) -> None:
    """Rows with too few or too many fields are bad records naming both counts, and reading goes on."""
    path = write(tmp_path, "a.csv", f"id,name\n{line}\n2,b\n")
    bad, good = read(path, FileFormat.CSV)
    assert bad == Record(2, None, line, f"expected 2 fields, got {count}")
    assert good.data == {"id": "2", "name": "b"}
    assert raw_text(bad) == line


def test_unterminated_quote_names_the_line_where_it_opened(tmp_path: Path) -> None:
    """A quote never closed makes the whole file unreadable, naming the line where the row starts."""
    path = write(tmp_path, "a.csv", 'id,name\n1,a\n2,"never closed\n3,c\n4,d\n')
    with pytest.raises(FileUnreadable, match=r"line 3: .*unterminated quote"):
        read(path, FileFormat.CSV)


def test_invalid_utf8_names_the_byte_offset_and_line(tmp_path: Path) -> None:
    """Latin-1 bytes make the file unreadable with the absolute byte offset of the bad byte."""
    path = write(tmp_path, "a.csv", b"id,name\n1,caf\xe9\n")
    with pytest.raises(FileUnreadable, match=r"line 2: not valid UTF-8 at byte 13 \(b'\\xe9'\)"):
        read(path, FileFormat.CSV)


def test_invalid_utf8_far_into_the_file_reports_the_absolute_offset(tmp_path: Path) -> None:
    """The offset counts from the start of the file even when the bad byte is chunks away."""
    body = "id,v\n" + "".join(f"{i},{'x' * 50}\n" for i in range(3000))
    path = write(tmp_path, "a.csv", body.encode() + b"9,\xff\n")
    with pytest.raises(FileUnreadable, match=rf"line 3002: not valid UTF-8 at byte {len(body.encode()) + 2}\b"):
        read(path, FileFormat.CSV, chunk_bytes=4096)


@pytest.mark.parametrize("text", ["", "\n\n", "\r\n"])
def test_csv_without_a_header_row_is_unreadable(tmp_path: Path, text: str) -> None:
    """An empty CSV (or one of blank lines) has no header and is unreadable."""
    with pytest.raises(FileUnreadable, match="no header row"):
        read(write(tmp_path, "a.csv", text), FileFormat.CSV)


def test_duplicate_header_names_are_unreadable(tmp_path: Path) -> None:
    """Two columns with one name would silently overwrite each other, so the file is refused."""
    with pytest.raises(FileUnreadable, match=r"duplicate column names in the header: \['a'\]"):
        read(write(tmp_path, "a.csv", "a,b,a\n1,2,3\n"), FileFormat.CSV)


def test_csv_line_over_the_limit_is_a_bad_record(tmp_path: Path) -> None:
    """A line longer than max_line_bytes is a bad record with its size; the rows around it are fine."""
    path = write(tmp_path, "a.csv", f"id,v\n1,a\n2,{'x' * 5000}\n3,c\n")
    records = read(path, FileFormat.CSV, max_line_bytes=100, chunk_bytes=1024)
    assert [(r.line, r.problem) for r in records] == [
        (2, None),
        (3, "line is 5002 bytes, over the limit of 100"),
        (4, None),
    ]
    assert records[1].raw.startswith("2,xxx")


def test_csv_field_over_the_default_csv_field_limit_is_read(tmp_path: Path) -> None:
    """A 200 KiB field, legal under a 1 MiB line limit, is not refused by the csv module's own limit."""
    path = write(tmp_path, "a.csv", f"id,v\n1,{'x' * 200_000}\n")
    (record,) = read(path, FileFormat.CSV, max_line_bytes=1 << 20)
    assert record.data is not None and len(record.data["v"]) == 200_000


def test_csv_parse_error_in_a_row_is_a_bad_record(tmp_path: Path) -> None:
    """Text after a closing quote is a bad row in strict mode, and later rows are still read."""
    path = write(tmp_path, "a.csv", 'id,v\n1,"a"b\n2,c\n')
    bad, good = read(path, FileFormat.CSV)
    assert bad.line == 2 and bad.problem is not None and bad.problem.startswith("not valid CSV")
    assert bad.raw == '1,"a"b'
    assert good == Record(3, {"id": "2", "v": "c"}, "", None)


def test_bytes_read_reaches_the_file_size(tmp_path: Path) -> None:
    """bytes_read grows while reading and equals the file size at the end."""
    path = write(tmp_path, "a.csv", "id\n" + "".join(f"{i}\n" for i in range(20_000)))
    reader = RecordReader(path, FileFormat.CSV, chunk_bytes=4096)
    seen = [reader.bytes_read for _ in reader]
    assert 0 < seen[0] < path.stat().st_size
    assert reader.bytes_read == path.stat().st_size


def test_jsonl_good_bad_and_non_object_lines(tmp_path: Path) -> None:
    """Each JSONL line is an object record, or a bad record for invalid JSON or a non-object."""
    text = '\ufeff{"a": 1, "b": "x"}\n\n{"a": 2,\n[1, 2]\n{"a": 9223372036854775807}\n'
    records = read(write(tmp_path, "a.jsonl", text), FileFormat.JSONL)
    assert records[0] == Record(1, {"a": 1, "b": "x"}, "", None)
    assert records[1].line == 3 and records[1].raw == '{"a": 2,'
    assert records[1].problem is not None and records[1].problem.startswith("not valid JSON")
    assert records[2] == Record(4, None, "[1, 2]", "not a JSON object (got an array)")
    assert records[3].data == {"a": 9223372036854775807}
    assert len(records) == 4


def test_jsonl_columns_are_the_first_objects_keys(tmp_path: Path) -> None:
    """For JSON Lines the columns are the keys of the first object."""
    reader = RecordReader(write(tmp_path, "a.jsonl", '{"x": 1, "y": 2}\n{"z": 3}\n'), FileFormat.JSONL)
    list(reader)
    assert reader.columns == ["x", "y"]


def test_jsonl_line_over_the_limit_is_a_bad_record(tmp_path: Path) -> None:
    """An over-long JSON line is reported with its size and the next line is read normally."""
    long_line = json.dumps({"v": "x" * 3000})
    text = long_line + "\r\n" + '{"v": 1}\n'
    records = read(write(tmp_path, "a.jsonl", text), FileFormat.JSONL, max_line_bytes=100, chunk_bytes=512)
    assert records[0].problem == f"line is {len(long_line)} bytes, over the limit of 100"
    assert records[1] == Record(2, {"v": 1}, "", None)


def test_jsonl_invalid_utf8_is_unreadable(tmp_path: Path) -> None:
    """A JSON line with Latin-1 bytes makes the file unreadable with the byte offset."""
    path = write(tmp_path, "a.jsonl", b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(FileUnreadable, match=r"line 2: not valid UTF-8 at byte 19\b"):
        read(path, FileFormat.JSONL)


def test_json_array_is_streamed_across_chunk_boundaries(tmp_path: Path) -> None:
    """Elements split across tiny chunks (numbers, strings, unicode) decode to the same objects."""
    items = [{"i": i, "s": "é" * (i % 7), "n": [i, {"k": 12345.5}]} for i in range(300)]
    path = write(tmp_path, "a.json", "\ufeff" + json.dumps(items, indent=1, ensure_ascii=False))
    reader = RecordReader(path, FileFormat.JSON, chunk_bytes=7)
    records = list(reader)
    assert [r.data for r in records] == items
    assert [r.line for r in records] == list(range(1, 301))
    assert reader.columns == ["i", "s", "n"]
    assert reader.bytes_read == path.stat().st_size


@pytest.mark.parametrize("chunk_bytes", range(1, 16))
def test_json_numbers_split_at_any_byte_decode_whole(tmp_path: Path, chunk_bytes: int) -> None:
    """Numbers, exponents and literals cut at every possible chunk edge still decode to their full value."""
    items = [{"a": -1.5e-3, "b": 12345, "c": True, "d": None}, {"a": 0.25, "b": -7, "c": False, "d": "é"}]
    path = write(tmp_path, "a.json", json.dumps(items, ensure_ascii=False))
    assert [r.data for r in read(path, FileFormat.JSON, chunk_bytes=chunk_bytes)] == items
    scalars = write(tmp_path, "b.json", "[-1.5e-3, 12345 ,true]")
    assert [r.raw for r in read(scalars, FileFormat.JSON, chunk_bytes=chunk_bytes)] == ["-1.5e-3", "12345", "true"]


def test_json_array_bad_elements_are_bad_records(tmp_path: Path) -> None:
    """A non-object element and an invalid element are bad records; the elements after them are read."""
    path = write(tmp_path, "a.json", '[{"a": 1}, 7, {"a": tru}, {"a": 2}]')
    records = read(path, FileFormat.JSON, chunk_bytes=4)
    assert records[0].data == {"a": 1}
    assert records[1] == Record(2, None, "7", "not a JSON object (got a number)")
    assert records[2].line == 3 and records[2].raw == '{"a": tru}'
    assert records[2].problem is not None and records[2].problem.startswith("not valid JSON")
    assert records[3] == Record(4, {"a": 2}, "", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1}', "top level of a JSON file must be an array"),
        ('[{"a": 1}, {"a": 2', "truncated"),
        ('[{"a": 1},', "truncated"),
        ("", "empty"),
        ('[{"a": 1}] [', "unexpected data after the end"),
        ('[{"a": 1} {"a": 2}]', "expected ',' or ']' after element 1"),
    ],
)
def test_json_whole_file_problems_are_unreadable(tmp_path: Path, text: str, message: str) -> None:
    """A non-array top level, a cut-off array, an empty file or trailing data make the file unreadable."""
    with pytest.raises(FileUnreadable, match=message):
        read(write(tmp_path, "a.json", text), FileFormat.JSON, chunk_bytes=5)


def test_json_element_over_the_limit_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    """An element bigger than the limit becomes one bad record and the elements after it are read."""
    big = {"v": "x" * 50_000, "w": ["]", "}", '\\"']}
    text = json.dumps([{"a": 1}, big, {"a": 2}])
    records = read(write(tmp_path, "a.json", text), FileFormat.JSON, max_line_bytes=1000, chunk_bytes=256)
    assert records[0].data == {"a": 1}
    assert records[1].problem == f"element is {len(json.dumps(big))} bytes, over the limit of 1000"
    assert records[2].data == {"a": 2}


def test_raw_text_rebuilds_good_rows(tmp_path: Path) -> None:
    """Good rows are rebuilt as a CSV line or compact JSON for quarantine."""
    csv_row = Record(2, {"id": "1", "note": "a,b"}, "", None)
    json_row = Record(1, {"a": 1, "b": None}, "", None)
    assert raw_text(csv_row) == '1,"a,b"'
    assert raw_text(json_row) == '{"a":1,"b":null}'
    assert raw_text(csv_row, FileFormat.JSONL) == '{"id":"1","note":"a,b"}'


def test_missing_file_is_unreadable_and_constructor_does_no_io(tmp_path: Path) -> None:
    """Constructing a reader does not touch the file; iterating a missing one raises FileUnreadable."""
    reader = RecordReader(tmp_path / "missing.csv", FileFormat.CSV)
    with pytest.raises(FileUnreadable, match="cannot read"):
        list(reader)


def test_fast_good_record_equals_the_dataclass_one() -> None:
    """The hot-path constructor builds exactly the Record the dataclass would, and it stays frozen."""
    record = good_record(7, {"a": "1"})
    assert record == Record(7, {"a": "1"}, "", None)
    assert type(record) is Record
    with pytest.raises(AttributeError):
        record.line = 8  # type: ignore[misc]


def _flatten(reader: RecordReader) -> list[Record]:
    out: list[Record] = []
    for item in reader.blocks(size=2):
        if isinstance(item, Record):
            out.append(item)
        else:
            out.extend(
                good_record(line, dict(zip(reader.columns or [], row, strict=True)))
                for line, row in zip(item.lines, item.rows, strict=True)
            )
    return out


@pytest.mark.parametrize(
    "text",
    [
        "a,b\n1,2\n3,4\n5,6\n7,8\n9,10\n",
        'a,b\n1,"x\ny"\n3\n4,5,6\n"q",r\n\n7,8',
        "a,b\r\n1,2\r\n" + "x" * 300 + ",3\r\n4,5\r\n",
        'a,b\n1,2\n3,"x"y\n5,6\n',
    ],
    ids=["plain", "quoted-newline-and-ragged", "overlong-line", "bad-csv-row"],
)
def test_blocks_hold_the_records_of_iteration_in_order(tmp_path: Path, text: str) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(text, newline="")
    expected = list(RecordReader(path, FileFormat.CSV, max_line_bytes=200))
    assert _flatten(RecordReader(path, FileFormat.CSV, max_line_bytes=200)) == expected
    assert any(r.problem is None for r in expected)


def test_blocks_yield_the_good_rows_before_a_fatal_error(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text('a,b\n1,2\n3,"never closed\n', newline="")
    items = RecordReader(path, FileFormat.CSV).blocks()
    first = next(items)
    assert not isinstance(first, Record) and first.rows == [["1", "2"]] and first.lines == [2]
    with pytest.raises(FileUnreadable, match=r"line 3: .*unterminated quote"):
        next(items)


def test_blocks_are_for_csv_only(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n')
    with pytest.raises(ValueError, match="CSV only"):
        RecordReader(path, FileFormat.JSONL).blocks()


def test_a_span_after_the_first_keeps_a_leading_byte_order_mark_as_data(tmp_path: Path) -> None:
    """Only the file's own start may carry a BOM: a span starting on a line that begins with
    U+FEFF reads it as data, as the whole file does."""
    path = tmp_path / "f.csv"
    path.write_bytes(b"id,name\n1,a\n\xef\xbb\xbf2,b\n")
    whole = [r.data for r in RecordReader(path, FileFormat.CSV)]
    later = [r.data for r in RecordReader(path, FileFormat.CSV, span=Span(12, path.stat().st_size, 3, ("id", "name")))]
    assert whole[1] == later[0] == {"id": "\ufeff2", "name": "b"}


def test_a_line_nested_100000_deep_is_a_bad_row_not_a_crash(tmp_path: Path) -> None:
    """orjson refuses the depth; the fallback parser is not tried on it (json.loads would raise
    RecursionError out of the reader, which stopped fetchdata and every service of ``up``):
    the line is one bad row with the reason, and the next line is read as usual."""
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + '\n{"a": 1}\n')
    records = list(iter_records(path, FileFormat.JSONL))
    assert [r.line for r in records] == [1, 2]
    assert records[0].data is None and records[0].problem == "not valid JSON: nested deeper than 1024 levels"
    assert records[1].data == {"a": 1}


def test_a_too_deep_line_never_reaches_the_recursive_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback parser is what raised: ``json.loads`` on the 100,000-deep line raises
    RecursionError (the crash that stopped ``up``); the reader never calls it on that line."""
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RecursionError):
        json.loads(deep)  # what the fallback did before: the reader unwound with it

    def recursive_parser(*_args: object, **_kwargs: object) -> object:
        raise AssertionError("json.loads was called on a line nested deeper than orjson's limit")

    monkeypatch.setattr(json, "loads", recursive_parser)
    path = tmp_path / "deep.jsonl"
    path.write_text(deep + "\n")
    (record,) = iter_records(path, FileFormat.JSONL)
    assert record.problem == "not valid JSON: nested deeper than 1024 levels"


def test_the_fallback_still_reads_what_orjson_refuses_but_is_bounded(tmp_path: Path) -> None:
    """A number beyond a double's range is valid JSON that orjson refuses: the fallback reads it,
    exactly (a Decimal).
    The same refusal in a line with more opening brackets than orjson's depth limit is a bad
    row with orjson's reason: such a line is never handed to the recursive parser."""
    path = tmp_path / "big.jsonl"
    many = "[" * 600 + "]" * 600
    path.write_text('{"a": 1e400}\n' + '{"a": 1e400, "b": ' + many + ", " + "[" + many + "]" + "}\n")
    first, second = iter_records(path, FileFormat.JSONL)
    assert first.data == {"a": Decimal("1E+400")}
    assert second.data is None and second.problem is not None
    assert second.problem.startswith("not valid JSON: number is infinity")
