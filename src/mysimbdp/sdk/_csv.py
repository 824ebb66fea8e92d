"""CSV pieces shared by the record reader and the platform's scanner (private to the SDK).

One dialect (strict, default quoting), one header rule, one verdict on fatal parse errors,
and a line source that keeps an over-long line from ever being held whole in memory.
"""

from __future__ import annotations

import csv
import functools
import io
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from mysimbdp.errors import FileUnreadable
from mysimbdp.sdk._jsonarray import RAW_LIMIT_CHARS, over_limit

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

__all__ = ["MIN_CSV_FIELD_CHARS", "LineSource", "csv_header", "csv_line", "csv_rows", "has_lone_cr", "raise_if_fatal"]

# The csv module refuses fields over 128 Ki characters by default; a legal line can be longer.
# The limit stays finite so that a quote that is never closed cannot eat all memory.
MIN_CSV_FIELD_CHARS = 16 * 1024 * 1024


class LineSource:
    """Physical lines for csv.reader; a line over the limit is read in pieces and replaced by ""."""

    def __init__(self, text: io.TextIOWrapper, limit: int | None, chunk_bytes: int) -> None:
        self.last = ""
        self.overlong: list[tuple[int, str, str]] = []  # (line, problem, head of the text)
        self._text = text
        self._limit = limit
        self._chunk_bytes = chunk_bytes
        self._lines = self._read()

    def __iter__(self) -> Iterator[str]:
        return self._lines

    def _read(self) -> Iterator[str]:
        limit = self._limit
        text = self._text
        if limit is None:
            for line in text:
                self.last = line
                yield line
            return
        quick = limit // 4  # a line of fewer characters cannot be over the limit in UTF-8 bytes
        for lineno, line in enumerate(iter(functools.partial(text.readline, limit + 2), ""), 1):
            if len(line) > quick:
                content = line.rstrip("\r\n")
                size = len(content.encode("utf-8"))
                if size > limit:
                    if content == line:  # the line goes on
                        size += self._drain()
                    self.overlong.append((lineno, over_limit("line", size, limit), content[:RAW_LIMIT_CHARS]))
                    line = ""
            self.last = line
            yield line

    def _drain(self) -> int:
        size = 0
        while piece := self._text.readline(self._chunk_bytes):
            content = piece.rstrip("\r\n")
            size += len(content.encode("utf-8"))
            if content != piece:
                break
        return size


def csv_rows(lines: Iterable[str], max_line_bytes: int | None) -> CsvReader:
    """The one CSV dialect (strict, default quoting) over ``lines``, with room for the longest line."""
    if csv.field_size_limit() < max(max_line_bytes or 0, MIN_CSV_FIELD_CHARS):
        csv.field_size_limit(max(max_line_bytes or 0, MIN_CSV_FIELD_CHARS))
    return csv.reader(lines, strict=True)


def csv_header(reader: Iterator[list[str]], overlong: list[tuple[int, str, str]] | None = None) -> list[str]:
    """The first non-blank row of ``reader``, or ``FileUnreadable`` saying why it is no usable header."""
    try:
        for row in reader:
            if overlong:
                line, problem, _ = overlong[0]
                raise FileUnreadable(f"line {line}: the header {problem}")
            if row:
                break
        else:
            raise FileUnreadable("line 1: no header row: the file holds no CSV rows")
    except csv.Error as exc:
        raise_if_fatal(exc, 1)
        raise FileUnreadable(f"line 1: the header row is not valid CSV: {exc}") from exc
    duplicates = sorted(name for name, count in Counter(row).items() if count > 1)
    if duplicates:
        raise FileUnreadable(f"line 1: duplicate column names in the header: {duplicates}; make them unique")
    return row


def raise_if_fatal(exc: csv.Error, line: int) -> None:
    """Raise ``FileUnreadable`` when ``exc`` (a row starting on ``line``) means no later row can be read."""
    message = str(exc)
    if "unexpected end of data" in message:
        raise FileUnreadable(
            f"line {line}: a quoted field starts in the row on this line and is never closed "
            '(unterminated quote); close the quote or escape it as ""'
        ) from exc
    if "field larger than field limit" in message:
        raise FileUnreadable(
            f"line {line}: a field grows over {csv.field_size_limit()} characters; most likely a quote "
            "opened in the row on this line is never closed"
        ) from exc


def csv_line(row: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue()


def has_lone_cr(chunk: bytes, after_cr: bool, *, final: bool) -> bool:
    """Whether ``chunk`` of a file holds a carriage return not followed by a newline (csv.reader
    ends a line there, where counting newlines does not). ``after_cr``: the previous chunk
    ended with "\r"; a "\r" ending this chunk is judged by the next one unless ``final``."""
    if after_cr and not chunk.startswith(b"\n"):
        return True
    crs = chunk.count(b"\r")
    return crs > 0 and crs - chunk.count(b"\r\n") - (chunk.endswith(b"\r") and not final) > 0
