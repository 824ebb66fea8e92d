"""The big-file chunk planner: cuts only on record boundaries, so chunks read as the whole file."""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mysimbdp import contract
from mysimbdp.adapters.files.chunker import BLOCK_BYTES, Chunk, chunk_span, plan_chunks
from mysimbdp.domain.formats import FileFormat
from mysimbdp.errors import FileUnreadable
from mysimbdp.formats.readers import BOM, Record, RecordReader
from mysimbdp.sdk._config import BatchConfig

CSV, JSONL, JSON = FileFormat.CSV, FileFormat.JSONL, FileFormat.JSON
EXAMPLES = 150
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _write(tmp_path: Path, data: bytes, fmt: FileFormat = CSV) -> Path:
    path = tmp_path / f"data.{fmt.value}"
    path.write_bytes(data)
    return path


def _whole(path: Path, fmt: FileFormat) -> tuple[list[Record], str | None]:
    """The file's records, and the message of the error that stopped reading (None: read to the end)."""
    records: list[Record] = []
    try:
        records.extend(RecordReader(path, fmt))
    except FileUnreadable as exc:
        return records, str(exc)
    return records, None


def _chunked(path: Path, fmt: FileFormat, chunks: list[Chunk]) -> tuple[list[Record], str | None]:
    records: list[Record] = []
    try:
        for chunk in chunks:
            records.extend(RecordReader(path, fmt, span=chunk_span(path, fmt, chunk)))
    except FileUnreadable as exc:
        return records, str(exc)
    return records, None


def _assert_well_formed(chunks: list[Chunk], size: int, chunk_bytes: int) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start == 0 and chunks[0].first_line == 1 and chunks[-1].end == size
    for before, after in itertools.pairwise(chunks):
        assert before.end == after.start
        assert after.first_line > before.first_line
    for chunk in chunks:
        assert chunk.start < chunk.end or size == 0
    for chunk in chunks[:-1]:
        assert chunk.end - chunk.start >= chunk_bytes


def _plan_and_compare(path: Path, fmt: FileFormat, chunk_bytes: int, block_bytes: int = BLOCK_BYTES) -> list[Chunk]:
    chunks = plan_chunks(path, fmt, chunk_bytes, block_bytes=block_bytes)
    _assert_well_formed(chunks, path.stat().st_size, chunk_bytes)
    assert _chunked(path, fmt, chunks) == _whole(path, fmt)
    return chunks


def _starts(chunks: list[Chunk]) -> list[tuple[int, int]]:
    return [(c.start, c.first_line) for c in chunks]


# Boundary cases -----------------------------------------------------------------------------


def test_jsonl_is_cut_after_the_first_newline_at_or_past_each_target(tmp_path: Path) -> None:
    """JSON Lines chunks end on the first newline at or after every chunk_bytes, bad lines included."""
    data = b'{"a":1}\n{"a":22}\nnot json\n\n{"a":4444}\n{"a":5}\n'
    path = _write(tmp_path, data, JSONL)
    chunks = _plan_and_compare(path, JSONL, 10)
    assert _starts(chunks) == [(0, 1), (17, 3), (27, 5), (38, 6)]
    assert all(data[c.start - 1 : c.start] == b"\n" for c in chunks[1:])


def test_a_json_array_is_one_chunk_read_whole(tmp_path: Path) -> None:
    """A JSON array has no line structure to cut at: one chunk, and its span is the whole file."""
    path = _write(tmp_path, ("[" + ",\n".join('{"a": 1}' for _ in range(500)) + "]").encode(), JSON)
    (chunk,) = plan_chunks(path, JSON, 100)
    assert chunk == Chunk(0, 0, path.stat().st_size, 1)
    assert chunk_span(path, JSON, chunk) is None


@pytest.mark.parametrize("fmt", [CSV, JSONL])
def test_an_empty_file_is_one_empty_chunk(tmp_path: Path, fmt: FileFormat) -> None:
    """An empty file still gets one chunk, so its reader reports what reading the file would."""
    path = _write(tmp_path, b"", fmt)
    assert plan_chunks(path, fmt, 1) == [Chunk(0, 0, 0, 1)]
    assert _chunked(path, fmt, plan_chunks(path, fmt, 1)) == _whole(path, fmt)


@pytest.mark.parametrize("data", [b"id,name\n", b"id,name", b"\n\nid,name\r\n", b'"id","na\nme"\n'])
def test_a_header_only_csv_is_one_chunk(tmp_path: Path, data: bytes) -> None:
    """Nothing follows the header (blank lines before it stay with it), so there is nothing to cut off."""
    path = _write(tmp_path, data)
    assert plan_chunks(path, CSV, 1) == [Chunk(0, 0, len(data), 1)]


def test_a_csv_of_blank_lines_is_one_chunk_unreadable_like_the_file(tmp_path: Path) -> None:
    """No header row ever ends, so nothing is cut; the one chunk fails as the whole file does."""
    path = _write(tmp_path, b"\n\r\n\n\n")
    assert _plan_and_compare(path, CSV, 1) == [Chunk(0, 0, 5, 1)]
    assert _whole(path, CSV)[1] == "line 1: no header row: the file holds no CSV rows"


def test_a_file_no_bigger_than_chunk_bytes_is_one_chunk(tmp_path: Path) -> None:
    """A file that fits in one chunk is that one chunk."""
    path = _write(tmp_path, b"id\n1\n2\n")
    assert plan_chunks(path, CSV, 7) == [Chunk(0, 0, 7, 1)]


def test_a_chunk_can_end_exactly_on_a_newline(tmp_path: Path) -> None:
    """When a newline ends exactly chunk_bytes in, the cut is right there: the chunk is chunk_bytes long."""
    path = _write(tmp_path, b"id,v\n1,a\n2,b\n3,c\n")  # 5 + 4 + 4 + 4 bytes
    chunks = _plan_and_compare(path, CSV, 9)
    assert _starts(chunks) == [(0, 1), (9, 3)]
    assert chunks[0].end - chunks[0].start == 9


def test_a_final_line_without_newline_ends_the_last_chunk(tmp_path: Path) -> None:
    """The last record needs no newline; the last chunk ends at the file's end."""
    for fmt, data in [(CSV, b"id,v\n1,a\n2,b\n3,c"), (JSONL, b'{"v":1}\n{"v":2}\n{"v":3}')]:
        path = _write(tmp_path, data, fmt)
        chunks = _plan_and_compare(path, fmt, 4)
        assert len(chunks) > 2 and chunks[-1].start == data.rindex(b"\n") + 1 and chunks[-1].end == len(data)


def test_a_row_longer_than_chunk_bytes_makes_one_longer_chunk(tmp_path: Path) -> None:
    """A 1000-byte row under a 10-byte chunk size is one chunk to its end; no chunk is empty."""
    long_row = b"2," + b"x" * 1000 + b"\n"
    data = b"id,v\n1,a\n" + long_row + b"3,c\n4,d\n"
    path = _write(tmp_path, data)
    chunks = _plan_and_compare(path, CSV, 10)
    assert _starts(chunks) == [(0, 1), (9 + len(long_row), 4)]
    assert chunks[0].end - chunks[0].start > 1000


def test_crlf_files_are_cut_after_the_newline(tmp_path: Path) -> None:
    """With CRLF line ends every cut falls after the "\\n", never between "\\r" and "\\n"."""
    data = b"id,v\r\n1,a\r\n2,b\r\n3,c\r\n"
    path = _write(tmp_path, data)
    chunks = _plan_and_compare(path, CSV, 5)
    assert _starts(chunks) == [(0, 1), (6, 2), (11, 3), (16, 4)]


def test_a_quoted_line_break_or_escaped_quote_is_never_a_cut(tmp_path: Path) -> None:
    """Newlines inside quoted fields are skipped; "" keeps the parity, so the next real row end is cut."""
    data = b'id,note\n1,"a\nb ""quoted""\nc"\n2,"x,\r\ny"\n3,z\n'
    path = _write(tmp_path, data)
    chunks = _plan_and_compare(path, CSV, 1)
    first_row_end = data.index(b'c"\n') + 3
    second_row_end = data.index(b'y"\n') + 3
    assert _starts(chunks) == [(0, 1), (8, 2), (first_row_end, 5), (second_row_end, 7)]


def test_the_bom_stays_in_chunk_zero(tmp_path: Path) -> None:
    """A UTF-8 BOM (followed by a quoted header) belongs to chunk 0; later chunks start after it."""
    data = BOM + b'"id",v\n1,a\n2,b\n'
    path = _write(tmp_path, data)
    chunks = _plan_and_compare(path, CSV, 1)
    assert _starts(chunks) == [(0, 1), (len(BOM) + 7, 2), (len(BOM) + 11, 3)]
    span = chunk_span(path, CSV, chunks[1])
    assert span is not None and span.header == ("id", "v")


def test_blank_lines_before_the_header_stay_with_it(tmp_path: Path) -> None:
    """The first cut comes after the header, not in the blank lines before it."""
    data = b"\n\r\n\nid,v\n1,a\n2,b\n"
    path = _write(tmp_path, data)
    chunks = _plan_and_compare(path, CSV, 1)
    assert _starts(chunks) == [(0, 1), (9, 5), (13, 6)]


def test_a_header_with_a_quoted_line_break_reaches_later_chunks(tmp_path: Path) -> None:
    """A later chunk gets the header exactly as the whole-file reader parses it."""
    data = b'id,"long\nname"\n1,a\n2,b\n'
    path = _write(tmp_path, data)
    chunks = _plan_and_compare(path, CSV, 1)
    span = chunk_span(path, CSV, chunks[-1])
    assert span is not None and span.header == ("id", "long\nname")
    assert list(RecordReader(path, CSV, span=span)) == [Record(4, {"id": "2", "long\nname": "b"}, "", None)]


def test_no_cut_before_a_line_that_starts_with_a_bom(tmp_path: Path) -> None:
    """A reader opening a chunk would take a leading BOM for the file's own and drop it: no cut there."""
    data = b"id,v\n1,a\n" + BOM + b"2,b\n3,c\n"
    path = _write(tmp_path, data)
    chunks = _plan_and_compare(path, CSV, 4)
    assert 9 not in [c.start for c in chunks]  # 9 is where the BOM line starts
    assert _starts(chunks) == [(0, 1), (5, 2), (9 + len(BOM) + 4, 4)]
    whole, _ = _whole(path, CSV)
    assert whole[1].data == {"id": "\ufeff2", "v": "b"}


def test_an_unreadable_header_is_reported_by_every_chunk(tmp_path: Path) -> None:
    """Duplicate column names: chunk 0 fails as the whole file does, and the header of a later one too."""
    path = _write(tmp_path, b"a,a\n1,2\n3,4\n")
    chunks = _plan_and_compare(path, CSV, 1)
    assert len(chunks) == 3
    with pytest.raises(FileUnreadable, match="duplicate column names"):
        chunk_span(path, CSV, chunks[1])


_GOOD = b"id,v\n1,a\n2,b\n3,c\n"  # cut after each row: 5, 9, 13, 17
_TAIL = b"5,e\n6,f\n7,g\n"


@pytest.mark.parametrize(
    ("data", "starts"),
    [
        # the csv module reads a stray quote as text: from here parity is off by one
        pytest.param(_GOOD + b'4,ab"c\n' + _TAIL, [0, 5, 9, 13, 17], id="stray-quote"),
        # a bad row; the module skips the rest of its line, quotes and all
        pytest.param(_GOOD + b'4,"a"b\n' + _TAIL, [0, 5, 9, 13, 17], id="text-after-closing-quote"),
        # the reader ends a line there, newline counting does not
        pytest.param(_GOOD + b"4,a\rb\n" + _TAIL, [0, 5, 9, 13, 17], id="lone-cr"),
        # no even newline follows: the file is unreadable from that row on
        pytest.param(_GOOD + b'4,"never closed\n' + _TAIL, [0, 5, 9, 13, 17], id="unterminated-quote"),
        # parity alone would cut after row 2, inside the quoted field ",x\n3,y"
        pytest.param(b'id,v\n1,a"b\n2,",x\n3,y"\n4,z\n', [0, 5], id="stray-quote-then-quoted-comma"),
        pytest.param(b'id,v\n1,a"b\n2,"x\n3,y"\n4,z\n', [0, 5], id="stray-quote-then-quoted-newline"),
        # parity alone would cut after row 5, inside the quoted field ",y\n6,z"
        pytest.param(b'id,v\n4,"a"b,"\n5,",y\n6,z"\n7,w\n', [0, 5], id="skipped-quote-after-bad-row"),
    ],
)
def test_cuts_stop_before_anything_parity_cannot_vouch_for(tmp_path: Path, data: bytes, starts: list[int]) -> None:
    """The rows before the problem are still cut; from it on all is the last chunk, whatever the block size."""
    path = _write(tmp_path, data)
    for block_bytes in range(4, len(data) + 1):
        chunks = _plan_and_compare(path, CSV, 1, block_bytes)
        assert [c.start for c in chunks] == starts, block_bytes


def test_lone_cr_line_ends_give_one_chunk(tmp_path: Path) -> None:
    """Old Mac line ends: the first line break is already a lone CR, so the file stays whole."""
    data = b"id,v\r1,a\r2,b\r3,c\r"
    assert _plan_and_compare(_write(tmp_path, data), CSV, 1) == [Chunk(0, 0, len(data), 1)]


def test_block_edges_do_not_change_the_plan(tmp_path: Path) -> None:
    """Every block size gives the plan of one big block: state crosses block edges intact."""
    data = (
        BOM + b'id,"no\nte"\r\n\r\n1,"a,""b""\nc"\r\n2,"",x\n3,"""",\n'
        b'4,"x\r\ny"\n5,z\n' + BOM + b'6,w\n7,"q"\n8,"open\n\n'
    )
    path = _write(tmp_path, data)
    for chunk_bytes in (1, 3, 8, 20):
        expected = _plan_and_compare(path, CSV, chunk_bytes)
        assert len(expected) >= 3
        for block_bytes in range(4, len(data) + 2):
            assert plan_chunks(path, CSV, chunk_bytes, block_bytes=block_bytes) == expected, block_bytes


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    """A chunk size under 1 byte, or a block that cannot hold a BOM, is a programming error."""
    path = _write(tmp_path, b"id\n1\n")
    with pytest.raises(ValueError, match="chunk_bytes must be >= 1"):
        plan_chunks(path, CSV, 0)
    with pytest.raises(ValueError, match="block_bytes >= 4"):
        plan_chunks(path, CSV, 1, block_bytes=3)


def test_a_multi_megabyte_file_reads_the_same_in_chunks(tmp_path: Path) -> None:
    """A 3 MB CSV with quoted line breaks and escapes, cut into ~200 KiB chunks across 1 MiB blocks."""
    rng = random.Random(5)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["id", "name", "note", "n"])
    row = 0
    while out.tell() < 3_000_000:
        note = rng.choice(["plain", 'with "quotes"', "two\nlines", "comma, here", "", "x" * rng.randint(0, 3000)])
        writer.writerow([row, f"name{row}", note, rng.random()])
        if row % 997 == 0:
            out.write(f"{row},ragged\r\n")
        row += 1
    path = _write(tmp_path, out.getvalue().encode())
    chunks = _plan_and_compare(path, CSV, 200 * 1024, block_bytes=1 << 20)
    assert len(chunks) >= 14


# Properties ---------------------------------------------------------------------------------


def _pieces(*extra: str) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(["a", "bc", " ", "é", "\u2028", "\x85", "\ufeff", "7", *extra]), max_size=6).map(
        "".join
    )


_UNQUOTED = _pieces()
_QUOTED = _pieces(",", '"', "\n", "\r\n", "\n\n").map(lambda text: '"' + text.replace('"', '""') + '"')
_DIRTY = st.sampled_from(['ab"c', 'x"', '"a"b', '"a" ', "a\rb", '"open', "\ufeffa", '"""', "\r"])


@st.composite
def csv_files(draw: st.DrawFn, dirty: bool) -> bytes:
    """CSV text by the rules (quoted fields with line breaks, "" and commas; blank lines; ragged
    rows; with or without a BOM and a final newline); ``dirty`` puts in one or two misfits."""
    rows = draw(st.lists(st.lists(st.one_of(_UNQUOTED, _QUOTED), min_size=1, max_size=4), min_size=1, max_size=14))
    for _ in range(draw(st.integers(1, 2)) if dirty else 0):
        row = draw(st.sampled_from(rows))
        row[draw(st.integers(0, len(row) - 1))] = draw(_DIRTY)
    ends = ["\n", "\r\n"] if draw(st.booleans()) else ["\r\n"]
    text = ""
    for row in rows:
        if draw(st.integers(0, 9)) == 0:
            text += draw(st.sampled_from(ends))  # a blank line
        text += ",".join(row) + draw(st.sampled_from(ends))
    if draw(st.booleans()):
        text = text.rstrip("\r\n")  # no newline after the last row (or blank lines)
    prefix = "\ufeff" if draw(st.booleans()) else ""
    return (prefix + text).encode()


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    values = st.one_of(st.integers(), st.text(max_size=8), st.none(), st.lists(st.integers(), max_size=2))
    objects = st.dictionaries(st.sampled_from(["a", "b", "é"]), values, max_size=3).map(json.dumps)
    lines = st.one_of(objects, st.sampled_from(["", "  ", "not json", "[1, 2]", '{"a": ', "\ufeff{}"]))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    text = end.join(draw(st.lists(lines, min_size=1, max_size=14)))
    if draw(st.booleans()):
        text += end
    return (("\ufeff" if draw(st.booleans()) else "") + text).encode()


_CHUNK_BYTES = st.one_of(st.integers(1, 40), st.integers(1, 100), st.integers(101, 2000))
_BLOCK_BYTES = st.one_of(st.integers(4, 64), st.just(BLOCK_BYTES))


def _record_ends(data: bytes) -> tuple[list[int], int]:
    """Independent reference for a CSV without lone CRs: the byte offset after every record as
    the csv module reads the whole file line by line, and the offset where the header ends."""
    lines = list(io.StringIO(data.decode("utf-8-sig"), newline=""))
    offsets = [len(BOM) if data.startswith(BOM) else 0]
    for line in lines:
        offsets.append(offsets[-1] + len(line.encode()))
    ends, header_end = [], -1
    reader = csv.reader(lines, strict=True)
    for row in reader:
        ends.append(offsets[reader.line_num])
        if row and header_end < 0:
            header_end = offsets[reader.line_num]
    return ends, header_end


@PROPERTY
@given(data=csv_files(dirty=False), chunk_bytes=_CHUNK_BYTES, block_bytes=_BLOCK_BYTES)
@example(data=b'id\n"a\nb"\n"c"\n', chunk_bytes=1, block_bytes=4)
def test_clean_csv_is_cut_at_every_record_end_due_and_reads_the_same(
    tmp_path: Path, data: bytes, chunk_bytes: int, block_bytes: int
) -> None:
    """On CSV written by the rules, cuts are exactly the greedy choice among the csv module's own
    record ends (after the header, not before a BOM), and the chunks read as the whole file."""
    path = _write(tmp_path, data)
    chunks = _plan_and_compare(path, CSV, chunk_bytes, block_bytes)
    ends, header_end = _record_ends(data)
    expected, target = [], chunk_bytes
    for end in ends:
        if 0 < header_end <= end < len(data) and end >= target and not data[end:].startswith(BOM):
            expected.append(end)
            target = end + chunk_bytes
    assert [c.start for c in chunks[1:]] == (expected if len(data) > chunk_bytes else [])


@PROPERTY
@given(data=csv_files(dirty=True), chunk_bytes=_CHUNK_BYTES, block_bytes=_BLOCK_BYTES)
@example(data=b'id\n1\n2,ab"c\n3\n', chunk_bytes=1, block_bytes=4)
@example(data=b'id\n1\n"a"b\n"c\n"\n', chunk_bytes=1, block_bytes=5)
@example(data=b'id,v\n1,a"b\n2,",x\n3,y"\n4,z\n', chunk_bytes=1, block_bytes=8)
@example(data=b'id,v\n4,"a"b,"\n5,",y\n6,z"\n7,w\n', chunk_bytes=1, block_bytes=10)
def test_any_csv_reads_the_same_in_chunks(tmp_path: Path, data: bytes, chunk_bytes: int, block_bytes: int) -> None:
    """Stray and misplaced quotes, lone CRs, unclosed quotes, BOMs mid-file: records, bad rows,
    line numbers and the final error of the chunks in order equal those of the whole file."""
    _plan_and_compare(_write(tmp_path, data), CSV, chunk_bytes, block_bytes)


@PROPERTY
@given(data=jsonl_files(), chunk_bytes=_CHUNK_BYTES, block_bytes=_BLOCK_BYTES)
def test_jsonl_reads_the_same_in_chunks(tmp_path: Path, data: bytes, chunk_bytes: int, block_bytes: int) -> None:
    """JSON Lines cut after any newline read as the whole file, bad and blank lines included."""
    chunks = _plan_and_compare(_write(tmp_path, data, JSONL), JSONL, chunk_bytes, block_bytes)
    assert all(data[c.start - 1 : c.start] == b"\n" for c in chunks[1:])


@pytest.mark.parametrize(
    "head",
    [b"id,name\n", b"\n\nid,name\n", b'id,"na\nme"\n', b"\xef\xbb\xbfid,name\r\n"],
    ids=["plain", "blank-lines-first", "quoted-line-break", "bom-crlf"],
)
def test_an_apps_contract_gives_a_later_chunk_the_header_the_planner_sees(tmp_path: Path, head: bytes) -> None:
    """The app learns its chunk from MYSIMBDP_INPUT_START/END/FIRST_LINE and reads the header
    itself: the same one ``chunk_span`` (and the whole-file reader) takes."""
    path = tmp_path / "f.csv"
    path.write_bytes(head + b"".join(b"%d,n%d\n" % (n, n) for n in range(400)))
    chunks = plan_chunks(path, FileFormat.CSV, 512)
    assert len(chunks) > 2
    later = chunks[1]
    env = {
        contract.INPUT: str(path),
        contract.INPUT_FORMAT: "csv",
        contract.INPUT_SHA256: "0" * 64,
        contract.DATASET: "d",
        contract.COREDMS_URL: "sqlite:///x",
        contract.RESULT: str(tmp_path / "r.json"),
        contract.REJECTS: str(tmp_path / "r.jsonl"),
        contract.INPUT_START: str(later.start),
        contract.INPUT_END: str(later.end),
        contract.INPUT_FIRST_LINE: str(later.first_line),
    }
    span = BatchConfig.from_env(env).span
    assert span == chunk_span(path, FileFormat.CSV, later)
    assert span is not None and span.header[0] == "id" and len(span.header) == 2
