"""A streaming parser for one top-level JSON array: its elements one at a time, in bounded memory.

``RecordReader`` turns the elements into records; this module only finds them. An element that
is not valid JSON or is over the size limit is stepped over by ``_Structure`` (which tracks
strings and nesting without parsing), so one bad element does not end the file.
"""

from __future__ import annotations

import codecs
import io
import json
import re
from collections.abc import Iterator
from typing import Any, TypeAlias

from mysimbdp.domain.exactjson import exact_float, exact_int
from mysimbdp.domain.sources import RAW_LIMIT_CHARS
from mysimbdp.errors import FileUnreadable

Binary: TypeAlias = "io.BufferedReader[io.FileIO] | io.BufferedReader[io.RawIOBase]"


def over_limit(what: str, size_bytes: int, limit: int) -> str:
    """The problem text for a line or element of ``size_bytes`` over ``limit``."""
    return f"{what} is {size_bytes} bytes, over the limit of {limit}"


def reject_constant(name: str) -> Any:
    """``parse_constant`` for ``json``: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


_WS_RE = re.compile(r"[ \t\r\n]*")
_STRUCTURE_RE = re.compile(r'["\[\]{},]')
_STRING_STOP_RE = re.compile(r'["\\]')


class _Structure:
    """Finds where a JSON array element ends (the ',' or ']' after it) without parsing it.

    Used to step over an element that is not valid JSON or is over the size limit; ``feed``
    can be called again with more text when the element goes on.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def feed(self, buf: str, pos: int) -> int | None:
        end = len(buf)
        while pos < end:
            if self.escaped:
                self.escaped = False
                pos += 1
            elif self.in_string:
                if (m := _STRING_STOP_RE.search(buf, pos)) is None:
                    return None
                pos = m.end()
                self.escaped = m.group() == "\\"
                self.in_string = self.escaped
            else:
                if (m := _STRUCTURE_RE.search(buf, pos)) is None:
                    return None
                char, pos = m.group(), m.end()
                if char == '"':
                    self.in_string = True
                elif char in "[{":
                    self.depth += 1
                elif char in "]}":
                    if self.depth:
                        self.depth -= 1
                    elif char == "]":
                        return m.start()
                elif not self.depth:
                    return m.start()
        return None


Element = tuple[int, Any, str | None, str]  # (index, value, problem, raw text)


class JsonArray:
    """Streams the elements of one top-level JSON array: raw_decode over a growing buffer."""

    def __init__(self, f: Binary, chunk_bytes: int, limit: int | None) -> None:
        self._f = f
        self._chunk_bytes = chunk_bytes
        self._limit = limit
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._decode = json.JSONDecoder(
            parse_float=exact_float, parse_int=exact_int, parse_constant=reject_constant
        ).raw_decode
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._lines_before = 0

    def _fill(self, want_chars: int) -> None:
        """Read until at least ``want_chars`` more characters are buffered, or the end of the file."""
        self._lines_before += self.buf.count("\n", 0, self.pos)
        parts = [self.buf[self.pos :]]
        got = 0
        while got < want_chars and not self.eof:
            chunk = self._f.read(self._chunk_bytes)
            self.eof = not chunk
            parts.append(text := self._decoder.decode(chunk, self.eof))
            got += len(text)
        self.buf = "".join(parts)
        self.pos = 0

    def _line(self, index: int) -> int:
        return self._lines_before + self.buf.count("\n", 0, index) + 1

    def _next_char(self) -> str:
        """The next character that is not whitespace, "" at the end of the file."""
        while True:
            match = _WS_RE.match(self.buf, self.pos)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if self.eof:
                return ""
            self._fill(1)

    def _found(self) -> str:
        return repr(self.buf[self.pos : self.pos + 20])

    def _truncated(self, index: int) -> FileUnreadable:
        return FileUnreadable(
            f"line {self._line(len(self.buf))}: the JSON array is truncated: element {index} or the "
            "closing ']' is missing; the file may have been cut off"
        )

    def __iter__(self) -> Iterator[Element]:
        first = self._next_char()
        if first != "[":
            if not first:
                raise FileUnreadable("line 1: the JSON file is empty; expected an array of objects")
            raise FileUnreadable(
                f"line {self._line(self.pos)}: the top level of a JSON file must be an array of objects, "
                f"found {self._found()}; send an array, or use JSON Lines (.jsonl) for one object per line"
            )
        self.pos += 1
        index = 0
        if self._next_char() != "]":
            while True:
                index += 1
                yield self._element(index)
                char = self._next_char()
                if char != ",":
                    break
                self.pos += 1
            if not char:
                raise self._truncated(index + 1)
            if char != "]":
                raise FileUnreadable(
                    f"line {self._line(self.pos)}: expected ',' or ']' after element {index} of the JSON "
                    f"array, found {self._found()}"
                )
        self.pos += 1
        if self._next_char():
            raise FileUnreadable(
                f"line {self._line(self.pos)}: unexpected data after the end of the JSON array: {self._found()}"
            )

    def _element(self, index: int) -> Element:
        limit = self._limit
        while True:
            if not self._next_char():
                raise self._truncated(index)
            start = self.pos
            buf = self.buf
            try:
                value, end = self._decode(buf, start)
            except (ValueError, RecursionError) as exc:
                stop = _Structure().feed(buf, start)
                if stop is not None:
                    self.pos = stop
                    raw = buf[start:stop].strip()
                    return (index, None, f"not valid JSON: {exc}" if raw else "not valid JSON: missing value", raw)
                if self.eof:
                    raise self._truncated(index) from exc
                if limit is not None and len(buf) - start > limit:
                    return self._skip_overlong(index, limit)
                self._fill(max(self._chunk_bytes, len(buf) - start))
                continue
            if end + 2 >= len(buf) and not self.eof:  # a number may go on: "1." + "5", "1e" + "-3"
                self._fill(max(self._chunk_bytes, len(buf) - start))
                continue
            self.pos = end
            if limit is not None and end - start > limit // 4:
                size = len(buf[start:end].encode("utf-8"))
                if size > limit:
                    return (index, None, over_limit("element", size, limit), buf[start : start + RAW_LIMIT_CHARS])
            return (index, value, None, "" if type(value) is dict else buf[start:end])

    def _skip_overlong(self, index: int, limit: int) -> Element:
        head = self.buf[self.pos : self.pos + RAW_LIMIT_CHARS]
        structure = _Structure()
        size = 0
        while (stop := structure.feed(self.buf, self.pos)) is None:
            size += len(self.buf[self.pos :].encode("utf-8"))
            if self.eof:
                raise self._truncated(index)
            self.pos = len(self.buf)
            self._fill(self._chunk_bytes)
        size += len(self.buf[self.pos : stop].rstrip().encode("utf-8"))
        self.pos = stop
        return (index, None, over_limit("element", size, limit), head)
