"""Split a file into line-aligned byte spans that separate processes can ingest at once.

Only files where every line break ends a record can be split this way: JSON Lines always,
CSV when it holds no quote character at all (a quoted field may contain a line break) and
no lone carriage return. Anything else is read by one process. Chunking files with quoted
line breaks is left to the platform's big-file path.

A Parquet file of several row groups (in file order) is split into contiguous ranges of
whole groups, balanced by their compressed bytes: a span is a byte range holding the groups
whose first byte falls in it (as a chunk of :mod:`mysimbdp.formats.parquet`), its
``first_line`` the number of its first row. Row numbers come from the footer, so every part
numbers its rows as a one-process run does. A file of one row group is one span.
"""

from __future__ import annotations

from pathlib import Path

from mysimbdp.domain.formats import FileFormat
from mysimbdp.errors import FileUnreadable
from mysimbdp.formats.csvlines import has_lone_cr
from mysimbdp.formats.parquet import read_layout
from mysimbdp.formats.readers import Span, read_header

MIN_SPAN_BYTES = 16 * 1024 * 1024
_CHUNK = 1 << 20


def plan_spans(path: Path, fmt: FileFormat, parts: int, *, min_span_bytes: int | None = None) -> list[Span]:
    """Up to ``parts`` spans of at least ``min_span_bytes`` (default :data:`MIN_SPAN_BYTES`)
    covering the whole file; a single span (the whole file) when it cannot or need not be split."""
    min_span_bytes = min_span_bytes or MIN_SPAN_BYTES
    size = path.stat().st_size
    whole = [Span(0, size, 1)]
    parts = min(parts, size // max(1, min_span_bytes))
    if parts >= 2 and fmt is FileFormat.PARQUET:
        return _parquet_spans(path, parts) or whole
    if parts < 2 or fmt not in (FileFormat.CSV, FileFormat.JSONL):
        return whole
    targets = [size * k // parts for k in range(1, parts)]
    cuts: list[tuple[int, int]] = []  # (offset just after a newline, lines before it)
    newlines = 0
    offset = 0
    after_cr = False
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            final = offset + len(chunk) == size
            if fmt is FileFormat.CSV and (b'"' in chunk or has_lone_cr(chunk, after_cr, final=final)):
                return whole
            after_cr = chunk.endswith(b"\r")
            while targets and targets[0] < offset + len(chunk):
                at = chunk.find(b"\n", max(0, targets[0] - offset))
                if at < 0:
                    break  # the next newline is in a later chunk
                cut = offset + at + 1
                if not cuts or cut > cuts[-1][0]:
                    cuts.append((cut, newlines + chunk.count(b"\n", 0, at + 1)))
                targets.pop(0)
            newlines += chunk.count(b"\n")
            offset += len(chunk)
            if targets and targets[0] < offset:
                targets[0] = offset  # continue the search in the next chunk
    cuts = [(cut, lines) for cut, lines in cuts if cut < size]
    if not cuts:
        return whole
    header: tuple[str, ...] = ()
    if fmt is FileFormat.CSV:
        header = read_header(path, cuts[0][0])
        if not header or cuts[0][0] <= len(",".join(header).encode()) + 1:
            return whole
    spans: list[Span] = []
    start, first_line = 0, 1
    for cut, lines_before in cuts:
        spans.append(Span(start, cut, first_line, header))
        start, first_line = cut, lines_before + 1
    spans.append(Span(start, size, first_line, header))
    return spans


def _parquet_spans(path: Path, parts: int) -> list[Span]:
    """Up to ``parts`` spans of contiguous row groups, balanced by bytes; [] when the file
    cannot be split (one group, groups out of file order, an unreadable footer: the one
    process that reads it then reports the problem)."""
    try:
        layout = read_layout(path)
    except FileUnreadable:
        return []
    groups = layout.groups
    if len(groups) < 2 or not layout.ordered:
        return []
    parts = min(parts, len(groups))
    before = [0]  # compressed bytes of the groups before group i
    for group in groups:
        before.append(before[-1] + group.size_bytes)
    total = before[-1]
    firsts: list[int] = []  # index of the first group of each part after the first
    for k in range(1, parts):
        target = total * k / parts
        low = firsts[-1] + 1 if firsts else 1
        if low >= len(groups):
            break
        best = min(range(low, len(groups)), key=lambda i: abs(before[i] - target))
        firsts.append(best)
    bounds = [0, *(groups[i].start for i in firsts), layout.size_bytes]
    rows = [1, *(groups[i].rows_before + 1 for i in firsts)]
    return [Span(bounds[n], bounds[n + 1], rows[n]) for n in range(len(rows))]
