"""Plan the chunks of a big file: byte ranges cut on record boundaries, each ingested alone.

``plan_chunks`` reads the file once, in blocks of ``BLOCK_BYTES``, and cuts it at the first
record boundary at or past every ``chunk_bytes``. Reading the chunks one after the other,
each with ``RecordReader(path, fmt, span=chunk_span(path, fmt, chunk))``, gives exactly the
records of reading the whole file: the same data, the same bad rows, the same line numbers.

Where a record ends:

- JSON Lines: at every "\\n". A JSON array is never cut: it is one chunk.
- Parquet: at the first byte of a row group (its footer says where each starts), so a chunk
  is a range of whole row groups and ``first_line`` the number of its first row; a file whose
  groups do not lie in their order, or with one group, is one chunk (``plan_parquet``).
- CSV (RFC 4180 as Python's csv module reads it): at a "\\n" with an even number of quote
  characters before it in the file. An escaped quote ("") counts two and keeps the parity.

Parity tells the truth only while every quote plays the role its parity gives it. A quote
with an even number of quotes before it opens a quoted field, so it must start its field:
it follows ",", "\\n", the file's start, or the closing quote of an escape. A quote with an
odd number before it closes the field (or starts an escape), so ",", "\\r\\n", "\\n", a
quote or the file's end must follow it. A stray quote in an unquoted field (``ab"c``, text
to the csv module) or text after a closing quote (``"a"b``, a bad row whose line the module
skips, quotes and all) breaks the rule; so does a lone "\\r", which ends a line where
counting "\\n" does not. The planner checks every quote, vectorised with numpy over whole
blocks (no Python loop per byte or per quote), and never cuts past the first quote that
breaks the rule or the first lone "\\r": the rest of the file goes into the last chunk. An
odd file costs parallelism, never correctness; an Old-Mac file ("\\r" line ends) is one chunk.

More CSV rules: the first cut comes after the header (the first non-blank row); the chunks
after the first get the header from :func:`chunk_span`, read by the whole-file reader; and no
cut is made before a line starting with a UTF-8 byte-order mark (the chunk's reader would
drop it as the file's BOM, while the whole-file reader keeps it in the data).

Guarantees: at least one chunk; chunk 0 starts at 0 and holds the BOM and the header; chunks
are contiguous, in order, cover ``[0, size)`` and none is empty (an empty file is one empty
chunk); every chunk but the last holds at least ``chunk_bytes`` bytes (a longer row makes a
longer chunk). Memory is a few times ``BLOCK_BYTES``, whatever the file's size. Speed (page
cache, one core): about 1 GiB/s without quotes, a few hundred MiB/s with a quote every few
bytes; the scan stops at the first byte it cannot vouch for.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from mysimbdp.domain.formats import FileFormat
from mysimbdp.formats.parquet import read_layout
from mysimbdp.formats.readers import BOM, Span, read_header

__all__ = ["BLOCK_BYTES", "Chunk", "chunk_span", "plan_chunks", "plan_parquet"]

BLOCK_BYTES = 4 << 20
MIN_BLOCK_BYTES = 4  # a block holds a whole BOM

_QUOTE = ord('"')
_LONE_CR = re.compile(rb"\r(?!\n)")


def _byte_set(members: bytes) -> npt.NDArray[np.bool_]:
    table = np.zeros(256, dtype=np.bool_)
    table[list(members)] = True
    return table


# An escape "" is a closing quote followed by an opening one.
_MAY_OPEN_AFTER = _byte_set(b',\n"')  # what may come right before an opening quote
_MAY_FOLLOW_CLOSE = _byte_set(b',\r\n"')  # what may come right after a closing quote


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes ``[start, end)`` of a file; ``first_line``: the whole-file reader's number for the
    line starting at ``start``."""

    index: int
    start: int
    end: int
    first_line: int


def plan_chunks(path: Path, fmt: FileFormat, chunk_bytes: int, *, block_bytes: int = BLOCK_BYTES) -> list[Chunk]:
    """Chunks of about ``chunk_bytes`` covering ``path``, cut on record boundaries (see the
    module); ``block_bytes``: how much is read at a time (tests make it tiny)."""
    if chunk_bytes < 1 or block_bytes < MIN_BLOCK_BYTES:
        raise ValueError(
            f"file {str(path)!r}: chunk_bytes must be >= 1 and block_bytes >= {MIN_BLOCK_BYTES}, "
            f"got {chunk_bytes} and {block_bytes}"
        )
    fmt = FileFormat(fmt)
    size = path.stat().st_size
    if fmt is FileFormat.JSON or size <= chunk_bytes:
        return [Chunk(0, 0, size, 1)]
    if fmt is FileFormat.PARQUET:
        return plan_parquet(path, chunk_bytes)
    with path.open("rb") as fh:
        cuts = _Cutter(fh, fmt, chunk_bytes, size).cuts(block_bytes)
    bounds = [(0, 1), *cuts, (size, 0)]
    return [
        Chunk(index, start, end, first_line)
        for index, ((start, first_line), (end, _)) in enumerate(itertools.pairwise(bounds))
    ]


def plan_parquet(path: Path, chunk_bytes: int) -> list[Chunk]:
    """Chunks of whole row groups, each but the last holding at least ``chunk_bytes`` of
    them (compressed); raises ``FileUnreadable`` when the footer cannot be read."""
    layout = read_layout(path)
    bounds = [(0, 1)]  # (start, first row) of each chunk
    taken = 0
    for group in layout.groups if layout.ordered else ():
        if taken >= chunk_bytes and group.rows:
            bounds.append((group.start, group.rows_before + 1))
            taken = 0
        taken += group.size_bytes
    ends = [start for start, _ in bounds[1:]] + [layout.size_bytes]
    return [
        Chunk(index, start, end, first_row)
        for index, ((start, first_row), end) in enumerate(zip(bounds, ends, strict=True))
    ]


def chunk_span(path: Path, fmt: FileFormat, chunk: Chunk) -> Span | None:
    """What ``RecordReader(path, fmt, span=...)`` needs to read ``chunk``: its bytes, first line
    and, for a CSV chunk after the first, the file's header. None for a JSON array (read whole).

    Raises ``FileUnreadable`` when the CSV header cannot be read, as reading the file would."""
    fmt = FileFormat(fmt)
    if fmt is FileFormat.JSON:
        return None
    header = read_header(path, chunk.start) if fmt is FileFormat.CSV and chunk.start > 0 else ()
    return Span(chunk.start, chunk.end, chunk.first_line, header)


class _Cutter:
    """One pass over a file's blocks, collecting cuts as ``(offset, first line after it)``."""

    def __init__(self, fh: BinaryIO, fmt: FileFormat, chunk_bytes: int, size: int) -> None:
        self._fh = fh
        self._csv = fmt is FileFormat.CSV
        self._chunk_bytes = chunk_bytes
        self._size = size
        self._target = chunk_bytes  # the next cut goes at the first boundary at or after this
        self._found: list[tuple[int, int]] = []
        self._quotes = _QuoteCheck()
        self._after_cr = False  # the previous block ended with "\r"
        self._content_at = -1 if self._csv else 0  # CSV: first byte of the header, once seen

    def cuts(self, block_bytes: int) -> list[tuple[int, int]]:
        offset = 0  # of the block in the file
        newlines = 0  # before the block
        while block := self._fh.read(block_bytes):
            if offset == 0 and self._csv and block.startswith(BOM):
                block, offset = block[len(BOM) :], len(BOM)
            odd = self._quotes.odd
            limit = self._safe_until(block, offset)
            if block:
                self._cut_block(block, offset, newlines, odd, limit)
            if limit < offset + len(block):
                break  # nothing past the first byte that cannot be vouched for is cut
            newlines += block.count(b"\n")
            offset += len(block)
        return self._found

    def _safe_until(self, block: bytes, offset: int) -> int:
        """The end of the part of the file, up to this block's end, where cuts are safe."""
        if not self._csv or not block:
            return offset + len(block)
        if self._content_at < 0 and (blank := len(block) - len(block.lstrip(b"\r\n"))) < len(block):
            self._content_at = offset + blank
        bad = [offset + at for at in (self._quotes.first_bad(block), self._first_lone_cr(block)) if at is not None]
        return min(bad, default=offset + len(block))

    def _first_lone_cr(self, block: bytes) -> int | None:
        """Index of the first "\\r" not followed by "\\n" (-1: the one ending the previous block)."""
        after_cr, self._after_cr = self._after_cr, block.endswith(b"\r")
        if after_cr and not block.startswith(b"\n"):
            return -1
        found = _LONE_CR.search(block) if b"\r" in block else None
        # a "\r" ending the block is judged by the next block; at the end of the file no
        # cut follows it anyway
        return found.start() if found is not None and found.start() < len(block) - 1 else None

    def _cut_block(self, block: bytes, offset: int, newlines: int, odd: bool, limit: int) -> None:
        """Cut at the first boundary at or after each target that falls in ``block``; ``odd``:
        the block starts inside a quoted field."""
        end = len(block)
        at = max(0, self._target - 1 - offset)  # where the "\n" ending a chunk is looked for
        if at >= end:
            return
        odd = self._csv and odd ^ (block.count(b'"', 0, at) & 1 == 1)
        while at < end:
            if odd:  # skip to the quote closing the field
                at = block.find(b'"', at) + 1
                if at == 0:
                    return
                odd = False
                continue
            newline = block.find(b"\n", at)
            if newline < 0:
                return
            if self._csv and (quote := block.find(b'"', at, newline)) >= 0:
                at, odd = quote + 1, True
                continue
            cut = offset + newline + 1
            if cut > limit or cut >= self._size:
                return
            at = newline + 1
            if self._may_cut(cut):
                self._found.append((cut, newlines + block.count(b"\n", 0, at) + 1))
                self._target = cut + self._chunk_bytes
                jump = max(at, self._target - 1 - offset)
                odd = self._csv and block.count(b'"', at, jump) & 1 == 1
                at = jump

    def _may_cut(self, cut: int) -> bool:
        if not self._csv:
            return True
        if self._content_at < 0 or cut <= self._content_at:
            return False  # the header row has not ended yet
        return os.pread(self._fh.fileno(), len(BOM), cut) != BOM


class _QuoteCheck:
    """Quote parity across blocks, and the first quote placed against its parity's role."""

    def __init__(self) -> None:
        self.odd = False  # inside a quoted field at the end of the blocks seen
        self._last = ord("\n")  # the byte before the next block ("\n" = the file's start)

    def first_bad(self, block: bytes) -> int | None:
        """Index in ``block`` of the first misplaced quote (-1: the closing quote that ended
        the previous block), or None; moves the state past ``block``."""
        odd, last = self.odd, self._last
        self._last = block[-1]
        if not odd and last == _QUOTE and not _MAY_FOLLOW_CLOSE[block[0]]:
            return -1
        if b'"' not in block:
            return None
        data = np.frombuffer(block, dtype=np.uint8)
        quotes = np.flatnonzero(data == _QUOTE)
        self.odd = odd ^ (quotes.size % 2 == 1)
        opening = quotes[int(odd) :: 2]  # an even number of quotes before it in the file
        closing = quotes[1 - int(odd) :: 2]
        before = data[opening - 1]
        if opening.size and opening[0] == 0:
            before[0] = last
        if closing.size and closing[-1] == len(block) - 1:
            closing = closing[:-1]  # the next block checks what follows it
        after = data[closing + 1]
        misplaced = [
            int(at[np.argmin(fine)])  # the first False
            for at, fine in ((opening, _MAY_OPEN_AFTER[before]), (closing, _MAY_FOLLOW_CLOSE[after]))
            if not fine.all()
        ]
        return min(misplaced, default=None)
