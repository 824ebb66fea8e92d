"""Streaming record readers for CSV, JSON Lines, JSON-array and Parquet files, in bounded memory.

Tenant apps (through the SDK) and the platform's file scanner read files the same way:

    for record in iter_records(path, FileFormat.CSV, max_line_bytes=1 << 20):
        if record.problem is None:
            use(record.data)
        else:
            quarantine(record.line, raw_text(record), record.problem)

A bad row becomes a ``Record`` with ``problem`` set and reading goes on; a problem with the
whole file (not UTF-8, an unterminated CSV quote, a JSON file that is not an array) raises
``FileUnreadable`` naming the line and the value.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import itertools
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import orjson

from mysimbdp.domain import exactjson
from mysimbdp.domain.envelope import json_kind
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.sources import RAW_LIMIT_CHARS
from mysimbdp.errors import FileUnreadable
from mysimbdp.formats.csvlines import LineSource, csv_header, csv_line, csv_rows, raise_if_fatal
from mysimbdp.formats.jsonarray import Binary as _Binary
from mysimbdp.formats.jsonarray import JsonArray, over_limit
from mysimbdp.formats.jsonline import json_fallback
from mysimbdp.formats.parquet import ParquetRows
from mysimbdp.formats.utf8 import unreadable_utf8

_T = TypeVar("_T")
CHUNK_BYTES = 1 << 20
BLOCK_ROWS = 1000  # good CSV rows per block (see RecordReader.blocks)
BOM = codecs.BOM_UTF8


__all__ = [
    "CHUNK_BYTES",
    "Record",
    "RecordReader",
    "RowBlock",
    "Span",
    "csv_header",
    "csv_rows",
    "good_record",
    "iter_records",
    "raise_if_fatal",
    "raw_text",
]


class Record(NamedTuple):
    """One row of a file: its data, or why it could not be read. Immutable; a named tuple
    because one is built per row of every file (cheaper than a frozen dataclass)."""

    line: int  # CSV/JSONL: 1-based physical line where the row starts; JSON array: element index;
    # Parquet: the row's 1-based number in the file (see formats.parquet)
    data: dict[str, Any] | None  # None when the row could not be parsed
    raw: str  # the row's text when ``problem`` is set (at most 10 KiB), else ""
    problem: str | None  # why the row is bad, None for a good row


class RowBlock(NamedTuple):
    """Consecutive good CSV rows: their fields (as many as the header's) and 1-based lines."""

    lines: list[int]
    rows: list[list[str]]


def good_record(line: int, data: dict[str, Any]) -> Record:
    """``Record(line, data, "", None)``."""
    return _new_record(Record, (line, data, "", None))


_new_record = tuple.__new__


def _truncate(text: str) -> str:
    return text if len(text) <= RAW_LIMIT_CHARS else text[:RAW_LIMIT_CHARS]


@dataclass(frozen=True)
class Span:
    """A byte range of a file that starts and ends on line boundaries (see ``sdk._spans``).

    Readers of disjoint spans see exactly the records of the whole file, with the same line
    numbers, so a file can be ingested by several processes at once."""

    start: int  # offset of the first byte; 0 = the file's start (header and BOM included)
    end: int  # offset just past the last byte
    first_line: int  # 1-based number of the line starting at ``start``
    header: tuple[str, ...] = ()  # CSV: the file's header, needed when ``start`` > 0


class _Window(io.RawIOBase):
    """A raw file seen from ``start`` up to ``end`` only."""

    def __init__(self, raw: io.FileIO, start: int, end: int) -> None:
        self._raw = raw
        self._end = end
        raw.seek(start)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()
        super().close()

    def readinto(self, buffer: Any) -> int:
        left = self._end - self._raw.tell()
        if left <= 0:
            return 0
        view = memoryview(buffer)[:left]
        return self._raw.readinto(view) or 0


class RecordReader:
    """Iterate the records of one file (or of one :class:`Span` of it); each ``iter()``
    reads again from the start."""

    def __init__(
        self,
        path: Path,
        fmt: FileFormat,
        *,
        max_line_bytes: int | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        span: Span | None = None,
    ) -> None:
        if span is not None and fmt is FileFormat.JSON:
            raise ValueError("a JSON array cannot be read in spans")
        self.span = span
        self.path = path
        self.fmt = FileFormat(fmt)
        self.max_line_bytes = max_line_bytes
        self.chunk_bytes = chunk_bytes
        self._raw: io.FileIO | None = None
        self._bytes_done = 0
        self._columns: list[str] | None = None
        self._parquet: ParquetRows | None = None

    @property
    def bytes_read(self) -> int:
        """Bytes consumed from the file so far (read ahead by at most one chunk; Parquet:
        the row groups read)."""
        if self._parquet is not None:
            return self._parquet.bytes_read
        raw = self._raw
        start = self.span.start if self.span is not None else 0
        if raw is not None and not raw.closed:
            return raw.tell() - start
        return self._bytes_done - start if self._bytes_done else 0

    @property
    def columns(self) -> list[str] | None:
        """The CSV header, the keys of the first JSON object, or the Parquet schema's
        columns, once iteration started."""
        return self._parquet.columns if self._parquet is not None else self._columns

    def __iter__(self) -> Iterator[Record]:
        if self.fmt is FileFormat.PARQUET:
            return self._parquet_records()
        if self.fmt is FileFormat.CSV:
            return self._guard(self._csv)
        if self.fmt is FileFormat.JSONL:
            return self._guard(self._jsonl)
        return self._guard(self._json_array)

    def _guard(self, body: Callable[[_Binary], Iterator[_T]]) -> Iterator[_T]:
        try:
            raw = io.FileIO(self.path, "r")
        except OSError as exc:
            raise FileUnreadable(f"cannot read the file: {exc.strerror}") from exc
        self._raw = raw
        source: io.RawIOBase = raw if self.span is None else _Window(raw, self.span.start, self.span.end)
        buffered = io.BufferedReader(source, self.chunk_bytes)
        try:
            yield from body(buffered)
        except UnicodeDecodeError as exc:
            raise unreadable_utf8(self.path, exc, CHUNK_BYTES) from exc
        finally:
            self._bytes_done = raw.tell()
            buffered.close()

    # CSV ---------------------------------------------------------------------------------

    def _csv(self, buffered: _Binary) -> Iterator[Record]:
        good = good_record
        for item in self._csv_items(buffered, BLOCK_ROWS):
            if type(item) is RowBlock:
                header = self._columns
                for line, row in zip(item.lines, item.rows, strict=True):
                    yield good(line, dict(zip(header, row, strict=False)))  # type: ignore[arg-type]
            else:
                yield item  # type: ignore[misc]

    def blocks(self, size: int = BLOCK_ROWS) -> Iterator[Record | RowBlock]:
        """CSV only: the good rows in blocks of up to ``size`` (field lists and line numbers,
        header in :attr:`columns`), each bad row as a ``Record`` between them: the records
        of iteration in the same order, without a dict and a record per good row."""
        if self.fmt is not FileFormat.CSV:
            raise ValueError(f"blocks() reads CSV only, not {self.fmt.value}")
        return self._guard(functools.partial(self._csv_items, size=size))

    def _csv_items(self, buffered: _Binary, size: int) -> Iterator[Record | RowBlock]:
        limit = self.max_line_bytes
        # a BOM is the file's, at its start: a span after the first keeps a U+FEFF as data
        bom = "utf-8-sig" if self.span is None or self.span.start == 0 else "utf-8"
        text = io.TextIOWrapper(buffered, encoding=bom, newline="")
        try:
            lines = LineSource(text, limit, self.chunk_bytes)
            reader = csv_rows(lines, limit)
            span = self.span
            if span is None or span.start == 0:
                header = csv_header(reader, lines.overlong)
                base = 0
            else:  # a later span: the header is given, lines are counted from first_line
                header = list(span.header)
                base = span.first_line - 1
            self._columns = header
            width = len(header)
            overlong = lines.overlong
            prev = base + reader.line_num
            block = RowBlock([], [])
            while True:
                try:
                    for row in reader:
                        end = base + reader.line_num
                        due = overlong and overlong[0][0] <= end - base  # this row has an over-long line
                        if len(row) == width and not due:
                            block.lines.append(prev + 1)
                            block.rows.append(row)
                            if len(block.rows) >= size:
                                yield block
                                block = RowBlock([], [])
                        elif due or row:
                            if block.rows:
                                yield block
                                block = RowBlock([], [])
                            if due:
                                yield from _overlong_records(overlong, base, end - base)
                            else:
                                raw = lines.line(end - base).rstrip("\r\n") if end == prev + 1 else csv_line(row)
                                yield Record(prev + 1, None, _truncate(raw), f"expected {width} fields, got {len(row)}")
                        prev = end
                    if block.rows:
                        yield block
                    return
                except csv.Error as exc:
                    if block.rows:  # the rows before the error come first, even if it is fatal
                        yield block
                        block = RowBlock([], [])
                    raise_if_fatal(exc, prev + 1)
                    if overlong and overlong[0][0] <= reader.line_num:
                        yield from _overlong_records(overlong, base, reader.line_num)
                    else:
                        raw = _truncate(lines.line(reader.line_num).rstrip("\r\n"))
                        yield Record(prev + 1, None, raw, f"not valid CSV: {exc}")
                    prev = base + reader.line_num
        finally:
            text.detach()  # leave the file open for bytes_read; the guard closes it

    # Parquet (rows come typed and whole: no line limit, no bad row) ---------------------

    def _parquet_records(self) -> Iterator[Record]:
        span = self.span
        self._parquet = rows = ParquetRows(self.path, *((span.start, span.end) if span is not None else (0, None)))
        blank, no_problem = itertools.repeat(""), itertools.repeat(None)  # good_record(line, row), in C:
        return itertools.chain.from_iterable(  # no Python frame per row (columns: from ParquetRows)
            map(_new_record, itertools.repeat(Record), zip(itertools.count(first), batch, blank, no_problem))
            for first, batch in rows.batches()
        )

    # JSON Lines --------------------------------------------------------------------------

    def _jsonl(self, buffered: _Binary) -> Iterator[Record]:
        first_line = 1 if self.span is None else self.span.first_line
        if first_line == 1 and buffered.peek(3)[:3] == BOM:
            buffered.read(3)
        limit = self.max_line_bytes
        source: Iterable[bytes] = (
            buffered if limit is None else iter(functools.partial(buffered.readline, limit + 3), b"")
        )
        loads = orjson.loads
        # a number orjson may round: read that line exactly (exactjson.maybe_lossy, inlined)
        shape_table, long_run, tiny = exactjson.LOSSY_TABLE, exactjson.LONG_RUN, exactjson.TINY_EXPONENT
        good = good_record
        columns_known = False
        for lineno, line in enumerate(source, first_line):
            if limit is not None and len(line) > limit:
                size = len(line.rstrip(b"\r\n"))
                if size > limit:
                    if not line.endswith(b"\n"):
                        size += _drain_bytes(buffered, self.chunk_bytes)
                    text = line[:RAW_LIMIT_CHARS].decode("utf-8", "replace")
                    yield Record(lineno, None, text, over_limit("line", size, limit))
                    continue
            try:
                value = loads(line)
            except orjson.JSONDecodeError as exc:
                if not line.strip():
                    continue
                parsed = json_fallback(line, exc)
                if isinstance(parsed, str):
                    yield Record(lineno, None, _truncate(line.decode("utf-8", "replace").rstrip("\r\n")), parsed)
                    continue
                value = parsed[0]
            else:
                shape = line.translate(shape_table)
                if long_run in shape or tiny in shape:
                    value = exactjson.reread(line, value)
            if type(value) is dict:
                if not columns_known:
                    self._columns = list(value)
                    columns_known = True
                yield good(lineno, value)
            else:
                raw = _truncate(line.decode("utf-8").rstrip("\r\n"))
                yield Record(lineno, None, raw, f"not a JSON object (got {json_kind(value)})")

    # JSON array --------------------------------------------------------------------------

    def _json_array(self, buffered: _Binary) -> Iterator[Record]:
        for index, value, problem, raw in JsonArray(buffered, self.chunk_bytes, self.max_line_bytes):
            if problem is not None:
                yield Record(index, None, _truncate(raw), problem)
            elif type(value) is dict:
                if self._columns is None:
                    self._columns = list(value)
                yield good_record(index, value)
            else:
                yield Record(index, None, _truncate(raw), f"not a JSON object (got {json_kind(value)})")


def _overlong_records(overlong: list[tuple[int, str, str]], base: int, upto: int) -> Iterator[Record]:
    # An over-long line reaches csv.reader as "": a blank line, or nothing added to a quoted
    # field; the row it was in is reported bad with the line's size instead. ``overlong``
    # also holds later lines of the block being read: only those up to ``upto`` are due.
    while overlong and overlong[0][0] <= upto:
        line, problem, head = overlong.pop(0)
        yield Record(base + line, None, head, problem)


def _drain_bytes(buffered: _Binary, chunk_bytes: int) -> int:
    size = 0
    while piece := buffered.readline(chunk_bytes):
        content = piece.rstrip(b"\r\n")
        size += len(content)
        if content != piece:
            break
    return size


def iter_records(
    path: Path, fmt: FileFormat, *, max_line_bytes: int | None = None, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[Record]:
    """The records of ``path``; see ``RecordReader``."""
    return iter(RecordReader(path, fmt, max_line_bytes=max_line_bytes, chunk_bytes=chunk_bytes))


def raw_text(record: Record, fmt: FileFormat | None = None) -> str:
    """The record's raw text, or for a good row a faithful reconstruction for quarantine.

    Good rows become a CSV line when ``fmt`` is CSV (or, when ``fmt`` is not given, when every
    value is a string), else compact JSON.
    """
    if record.raw or record.data is None:
        return record.raw
    data = record.data
    as_csv = fmt is FileFormat.CSV if fmt is not None else all(type(v) is str for v in data.values())
    if as_csv:
        return csv_line(list(data.values()))
    return exactjson.dumps(data).decode("utf-8")


def read_header(path: Path, before: int | None = None) -> tuple[str, ...]:
    """A CSV file's header exactly as the whole-file reader takes it (blank lines skipped,
    quoted fields and line breaks in them included), reading no further than ``before``:
    what a span after the first needs (:attr:`Span.header`)."""
    end = path.stat().st_size if before is None else before
    reader = RecordReader(path, FileFormat.CSV, span=Span(0, end, 1))
    items = reader.blocks(size=1)
    try:
        next(items, None)  # the header, then at most one row
    finally:
        if isinstance(items, Generator):
            items.close()  # closes the file now
    return tuple(reader.columns or ())
