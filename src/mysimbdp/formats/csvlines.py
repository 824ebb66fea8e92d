"""CSV pieces shared by the record reader and the platform's scanner (private to the SDK).

One dialect (strict, default quoting), one header rule, one verdict on fatal parse errors,
and a line source that keeps an over-long line from ever being held whole in memory.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from mysimbdp.domain.sources import RAW_LIMIT_CHARS
from mysimbdp.errors import FileUnreadable
from mysimbdp.formats.jsonarray import over_limit

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

__all__ = ["MIN_CSV_FIELD_CHARS", "LineSource", "csv_header", "csv_line", "csv_rows", "has_lone_cr", "raise_if_fatal"]

# The csv module refuses fields over 128 Ki characters by default; a legal line can be longer.
# The limit stays finite so that a quote that is never closed cannot eat all memory.
MIN_CSV_FIELD_CHARS = 16 * 1024 * 1024


# Line breaks that str.splitlines knows and csv.reader does not (a block holding one is cut
# by io.StringIO instead, which breaks lines as the file object does).
_ODD_BREAKS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def _split_lines(text: str) -> list[str]:
    """``text`` cut into lines, line breaks kept: at "\n", "\r\n" and a lone "\r" only."""
    odd = text.count("\r") != text.count("\r\n") or any(mark in text for mark in _ODD_BREAKS)
    return list(io.StringIO(text, newline="")) if odd else text.splitlines(keepends=True)


class LineSource:
    """Physical lines for csv.reader; a line over the limit is replaced by "" and noted in
    :attr:`overlong` (it is never held whole: it is measured and skipped in pieces).

    Lines are cut from large blocks of text in C and handed to csv.reader through
    ``itertools.chain``, so no Python code runs per line. :meth:`line` gives back the text
    of a recent line."""

    def __init__(self, text: io.TextIOWrapper, limit: int | None, chunk_bytes: int) -> None:
        self.overlong: list[tuple[int, str, str]] = []  # (line, problem, head of the text)
        self._text = text
        self._limit = limit
        self._chunk_bytes = max(chunk_bytes, 1)
        self._held: list[tuple[int, list[str]]] = []  # the last two blocks: (first line, lines)
        self._lines: Iterator[str] = itertools.chain.from_iterable(self._blocks())

    def __iter__(self) -> Iterator[str]:
        return self._lines

    def line(self, number: int) -> str:
        """The text of line ``number`` (1-based, from where reading started), if still held."""
        for first, lines in reversed(self._held):
            if first <= number < first + len(lines):
                return lines[number - first]
        return ""

    def _blocks(self) -> Iterator[list[str]]:
        read, limit = self._text.read, self._limit
        tail = ""  # the start of a line that goes on in the next block
        first = 1  # the number of the next line handed out
        while True:
            block = read(self._chunk_bytes)
            at_end = not block
            text = tail + block
            if not text:
                return
            lines = _split_lines(text)
            # The last line goes on in the next block unless it ended in "\n" (after a "\r"
            # may come the "\n" of a "\r\n") or the file ended.
            tail = "" if at_end or lines[-1].endswith("\n") else lines.pop()
            if limit is not None and lines:
                self._blank_overlong(lines, first, limit)
            if tail and limit is not None and len(tail) > limit:  # over the limit: never held whole
                head, tail = tail, ""
                if head.endswith("\r"):  # it ended; a "\n" right after is still its line break
                    head = head[:-1]
                    tail = read(1).removeprefix("\n")
                    size = len(head.encode("utf-8"))
                else:
                    rest, tail = self._drain()
                    size = len(head.encode("utf-8")) + rest
                self.overlong.append((first + len(lines), over_limit("line", size, limit), head[:RAW_LIMIT_CHARS]))
                lines.append("")
            if lines:
                self._held = [*self._held[-1:], (first, lines)]
                first += len(lines)
                yield lines
            if at_end:
                return

    def _blank_overlong(self, lines: list[str], first: int, limit: int) -> None:
        quick = limit // 4  # a line of fewer characters cannot be over the limit in UTF-8 bytes
        if max(map(len, lines)) <= quick:
            return
        for index, line in enumerate(lines):
            if len(line) > quick:
                content = line.rstrip("\r\n")
                size = len(content.encode("utf-8"))
                if size > limit:
                    self.overlong.append((first + index, over_limit("line", size, limit), content[:RAW_LIMIT_CHARS]))
                    lines[index] = ""

    def _drain(self) -> tuple[int, str]:
        """Read the rest of an over-long line in pieces: its size in bytes, and any text read
        past its end (the character after a "\r" that turned out not to be a "\r\n")."""
        size = 0
        while piece := self._text.readline(self._chunk_bytes):
            content = piece.rstrip("\r\n")
            size += len(content.encode("utf-8"))
            if content != piece:
                # readline may stop between the "\r" and the "\n" of a "\r\n": look one further
                return size, self._text.read(1).removeprefix("\n") if piece.endswith("\r") else ""
        return size, ""


def csv_rows(lines: Iterable[str], max_line_bytes: int | None) -> CsvReader:
    """The one CSV dialect (strict, default quoting) over ``lines``, with room for the longest line."""
    if csv.field_size_limit() < max(max_line_bytes or 0, MIN_CSV_FIELD_CHARS):
        csv.field_size_limit(max(max_line_bytes or 0, MIN_CSV_FIELD_CHARS))
    return csv.reader(lines, strict=True)


def csv_header(reader: CsvReader, overlong: list[tuple[int, str, str]] | None = None) -> list[str]:
    """The first non-blank row of ``reader``, or ``FileUnreadable`` saying why it is no usable header."""
    try:
        for row in reader:
            if overlong and overlong[0][0] <= reader.line_num:
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
