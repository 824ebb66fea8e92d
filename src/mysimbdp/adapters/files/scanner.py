"""Scan one file into ``FileFacts``: the IO side of the file check, in bounded memory.

Pass 1 reads the bytes once in 1 MiB chunks: size, sha256, NUL/control bytes, UTF-8
validity (the absolute offset of the first bad byte), BOM and the longest line. Pass 2 runs
only on non-empty UTF-8 text in a known format: the streaming ``RecordReader`` with the
profile's line limit, and the profile's row rules, counting bad rows by rule. A CSV with
no row rules and no line over the limit takes a lean pass that only counts fields per row.
A Parquet file (by its extension, or by its ``PAR1`` magic when the name says nothing) is
scanned by ``scanparquet`` instead: no text facts, its schema and rows.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from mysimbdp.adapters.files.scanparquet import looks_like_parquet, scan_parquet
from mysimbdp.domain.facts import FileFacts
from mysimbdp.domain.formats import EXTENSIONS, FileFormat
from mysimbdp.domain.quality import RowRuleLike, compile_rules, plain_rules
from mysimbdp.errors import FileUnreadable
from mysimbdp.formats.csvlines import csv_header, csv_rows, has_lone_cr, raise_if_fatal
from mysimbdp.formats.readers import RecordReader

if TYPE_CHECKING:
    from mysimbdp.domain.profile import Profile

CHUNK_BYTES = 1 << 20
MAX_SAMPLES = 5
# Share of control characters (other than tab, CR, LF, FF, BS) in the first chunk above
# which a file without NUL bytes still counts as binary.
BINARY_CONTROL_RATIO = 0.10
_CONTROL = frozenset(range(32)) - {8, 9, 10, 12, 13} | {127}
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL)


@dataclass(frozen=True)
class ScanRules:
    """The profile's rules a scan applies, as plain data: the scan child gets them as JSON
    and checks rows without importing the profile's models (pydantic)."""

    max_line_length_bytes: int
    row_rules: tuple[RowRuleLike, ...] = ()

    @classmethod
    def of(cls, profile: Profile) -> ScanRules:
        return cls(profile.limits.max_line_length_bytes, tuple(profile.quality.rules))

    def to_json(self) -> dict[str, Any]:
        return {
            "max_line_length_bytes": self.max_line_length_bytes,
            "row_rules": [
                {
                    "field": r.field,
                    "type": None if r.type is None else str(r.type),
                    "required": r.required,
                    "min": r.min,
                    "max": r.max,
                    "pattern": r.pattern,
                    "allowed": r.allowed,
                }
                for r in self.row_rules
            ],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ScanRules:
        return cls(int(doc["max_line_length_bytes"]), plain_rules(doc["row_rules"]))


@dataclass
class _Bytes:
    """What pass 1 learns; filled chunk by chunk."""

    size: int = 0
    sha256: str = ""
    is_binary: bool = False
    utf8_error: str | None = None
    has_bom: bool = False
    longest: int = 0
    longest_line: int = 0
    lines_done: int = 0
    carry: int = 0  # length of the line still open at the end of the last chunk
    carry_cr: bool = False  # ... and whether it ends with "\r"
    has_quote: bool = False  # a '"' anywhere: a CSV field may then hold a line break
    lone_cr: bool = False  # a "\r" not followed by "\n" (csv.reader ends a line there)


@dataclass
class _Rows:
    """What pass 2 learns."""

    total: int = 0
    bad: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    columns: list[str] | None = None
    unreadable: str | None = None


def _format_of(name: str) -> FileFormat | None:
    return EXTENSIONS.get(PurePath(name).suffix.lower())


def _longest_lines(facts: _Bytes, chunk: bytes) -> None:
    parts = chunk.split(b"\n")
    tail = parts.pop()  # the line still open at the end of the chunk
    if not parts:
        facts.carry += len(chunk)
        facts.carry_cr = chunk.endswith(b"\r")
        return
    # A line's length leaves out its "\r\n" or "\n". When every line end in the chunk is of
    # one kind, one offset fits all lines and max/index stay in C; mixed ends take a copy.
    crlf = chunk.count(b"\r\n") + (facts.carry_cr and chunk.startswith(b"\n"))
    cut = 1 if crlf == len(parts) else 0
    if 0 < crlf < len(parts):
        parts = chunk.replace(b"\r\n", b"\n").split(b"\n")
        parts.pop()
    lengths = list(map(len, parts))
    # the first piece ends the line left open by the last chunk ("\r" | "\n" across chunks)
    lengths[0] += facts.carry - (1 if cut == 0 and not parts[0] and facts.carry_cr else 0)
    longest = max(lengths)
    if longest - cut > facts.longest:
        facts.longest = longest - cut
        facts.longest_line = facts.lines_done + lengths.index(longest) + 1
    facts.lines_done += len(parts)
    facts.carry = len(tail)
    facts.carry_cr = tail.endswith(b"\r")


def _line_breaks(facts: _Bytes, chunk: bytes) -> None:
    """Note quotes and lone carriage returns (C-level counts); call before ``_longest_lines``."""
    facts.has_quote = facts.has_quote or b'"' in chunk
    facts.lone_cr = facts.lone_cr or has_lone_cr(chunk, facts.carry_cr, final=False)


def _scan_bytes(path: Path, sha256: str = "") -> _Bytes:
    """Pass 1; ``sha256``: the content's hash already known (the upload's receiver computed
    it while the bytes arrived), so the bytes are read for their checks but not hashed again."""
    facts = _Bytes()
    sha = None if sha256 else hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb", buffering=0) as f:
        while chunk := f.read(CHUNK_BYTES):
            if facts.size == 0:
                facts.has_bom = chunk.startswith(codecs.BOM_UTF8)
                controls = len(chunk.translate(None, _NOT_CONTROL))
                facts.is_binary = controls > BINARY_CONTROL_RATIO * len(chunk)
            if sha is not None:
                sha.update(chunk)
            facts.is_binary = facts.is_binary or b"\x00" in chunk
            if facts.utf8_error is None and not (chunk.isascii() and not decoder.getstate()[0]):
                _check_utf8(facts, decoder, chunk)
            _line_breaks(facts, chunk)
            _longest_lines(facts, chunk)
            facts.size += len(chunk)
        if facts.utf8_error is None:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                pending = len(decoder.getstate()[0])
                facts.utf8_error = (
                    f"not valid UTF-8 at byte {facts.size - pending} (line {facts.lines_done + 1}): "
                    "the file ends inside a multi-byte character"
                )
    facts.lone_cr = facts.lone_cr or facts.carry_cr
    facts.sha256 = sha.hexdigest() if sha is not None else sha256
    if facts.carry > 0:
        last = facts.carry - (1 if facts.carry_cr else 0)
        if last > facts.longest:
            facts.longest, facts.longest_line = last, facts.lines_done + 1
    return facts


def _check_utf8(facts: _Bytes, decoder: codecs.IncrementalDecoder, chunk: bytes) -> None:
    pending = len(decoder.getstate()[0])
    try:
        decoder.decode(chunk)
    except UnicodeDecodeError as exc:
        offset = facts.size - pending + exc.start
        line = facts.lines_done + 1 + exc.object.count(b"\n", 0, exc.start)
        bad = exc.object[exc.start : exc.end]
        facts.utf8_error = f"not valid UTF-8 at byte {offset} (line {line}, bytes {bad!r})"


def _problem_rule(problem: str) -> str:
    if problem.startswith("expected ") and " fields, got " in problem:
        return "ragged"
    if "over the limit of" in problem:
        return "line_length"
    return "parse"


def _scan_rows(path: Path, fmt: FileFormat, rules: ScanRules) -> _Rows:
    rows = _Rows()
    by_rule = rows.by_rule
    samples = rows.samples
    where = "element" if fmt is FileFormat.JSON else "line"
    checker = compile_rules(rules.row_rules)
    reader = RecordReader(path, fmt, max_line_bytes=rules.max_line_length_bytes)
    try:
        for record in reader:
            rows.total += 1
            data = record.data
            if data is None:
                problem = record.problem or "unreadable row"
                rule = _problem_rule(problem)
                by_rule[rule] = by_rule.get(rule, 0) + 1
                rows.bad += 1
                if len(samples) < MAX_SAMPLES:
                    samples.append(f"{where} {record.line}: {problem}")
            elif checker and (failures := checker.check(data)):
                rows.bad += 1
                for failure in failures:
                    by_rule[failure.rule] = by_rule.get(failure.rule, 0) + 1
                if len(samples) < MAX_SAMPLES:
                    samples.append(f"{where} {record.line}: " + "; ".join(f.message for f in failures))
    except FileUnreadable as exc:
        rows.unreadable = str(exc)
    rows.columns = reader.columns
    return rows


def _scan_csv_shape(path: Path, rules: ScanRules) -> _Rows:
    """The row pass of a CSV when no row rules apply and no line is over the limit.

    Reads as ``RecordReader`` does (same dialect, BOM, line numbers and ``FileUnreadable``
    messages, so the facts are the same), but only counts fields: no dict, no Record per row.
    """
    rows = _Rows()
    total = 0
    try:
        with path.open(encoding="utf-8-sig", newline="") as text:
            reader = csv_rows(text, rules.max_line_length_bytes)
            rows.columns = header = csv_header(reader)
            width = len(header)
            prev = reader.line_num
            while True:
                try:
                    for row in reader:
                        if len(row) != width:
                            if not row:  # a blank line is no row
                                prev = reader.line_num
                                continue
                            _bad_row(rows, "ragged", f"line {prev + 1}: expected {width} fields, got {len(row)}")
                        total += 1
                        prev = reader.line_num
                    break
                except csv.Error as exc:
                    raise_if_fatal(exc, prev + 1)
                    total += 1
                    _bad_row(rows, "parse", f"line {prev + 1}: not valid CSV: {exc}")
                    prev = reader.line_num
    except FileUnreadable as exc:
        rows.unreadable = str(exc)
    rows.total = total
    return rows


def _scan_csv_plain(path: Path, rules: ScanRules) -> _Rows:
    """The row pass of a CSV with no quote character and no lone CR, where every line break
    ends a record: a line's field count is its comma count + 1, counted in C for whole
    chunks (``map(bytes.count, ...)``). Gives the same facts as ``_scan_csv_shape``."""
    rows = _Rows()
    header: list[str] | None = None
    expected = 0
    line_no = 0  # lines before the current batch
    carry = b""
    bom_pending = True
    with path.open("rb") as f:
        while True:
            chunk = f.read(CHUNK_BYTES)
            data = carry + chunk
            if bom_pending and (len(data) >= len(codecs.BOM_UTF8) or not chunk):
                data = data.removeprefix(codecs.BOM_UTF8)  # as the reader's utf-8-sig does
                bom_pending = False
            elif bom_pending:
                carry = data
                continue
            lines = data.split(b"\n")
            carry = lines.pop() if chunk else b""
            if not chunk and not carry and lines == [b""]:
                lines = []
            if header is None and lines:
                skipped, header = _plain_header(lines, rules, rows)
                if header is None and rows.unreadable is not None:
                    return rows
                if header is not None:
                    expected = len(header) - 1
                    lines = lines[skipped + 1 :]
                    line_no += skipped + 1
            if header is not None:
                _count_plain(rows, lines, line_no, expected)
                line_no += len(lines)
            elif lines:
                line_no += len(lines)  # blank lines before the header
            if not chunk:
                break
    if header is None:
        _plain_header([], rules, rows)
    return rows


def _plain_header(lines: list[bytes], rules: ScanRules, rows: _Rows) -> tuple[int, list[str] | None]:
    """The header among ``lines`` (after blank ones) parsed as the reader would, and how many
    blank lines came first; ``rows.unreadable`` is set when ``lines`` is [] at the end."""
    for index, line in enumerate(lines):
        if line.strip(b"\r"):
            text = line.decode("utf-8").rstrip("\r")
            try:
                rows.columns = csv_header(csv_rows([text], rules.max_line_length_bytes))
            except FileUnreadable as exc:
                rows.unreadable = str(exc)
                return index, None
            return index, rows.columns
    if not lines:  # the end of the file, and no header: the reader's own message
        try:
            csv_header(csv_rows([], rules.max_line_length_bytes))
        except FileUnreadable as exc:
            rows.unreadable = str(exc)
    return len(lines), None


def _count_plain(rows: _Rows, lines: list[bytes], line_no: int, expected: int) -> None:
    counts = list(map(bytes.count, lines, itertools.repeat(b",")))
    # A blank line has no comma: with one column it would pass for a row, so look closer.
    if expected and counts.count(expected) == len(counts):
        rows.total += len(counts)
        return
    for index, count in enumerate(counts):
        if count == 0 and not lines[index].strip(b"\r"):
            continue  # a blank line is no row
        rows.total += 1
        if count != expected:
            _bad_row(rows, "ragged", f"line {line_no + index + 1}: expected {expected + 1} fields, got {count + 1}")


def _bad_row(rows: _Rows, rule: str, sample: str) -> None:
    rows.bad += 1
    rows.by_rule[rule] = rows.by_rule.get(rule, 0) + 1
    if len(rows.samples) < MAX_SAMPLES:
        rows.samples.append(sample)


def scan_file(path: Path, name: str, rules: ScanRules, sha256: str = "") -> FileFacts:
    """Scan ``path`` (the tenant called it ``name``) for ``check_file``. ``sha256``: the
    content's hash when the caller already has it (an upload hashed on receipt): every byte is
    still read and checked, only the hashing is skipped, and the facts carry this hash."""
    fmt = _format_of(name)
    if fmt is FileFormat.PARQUET or (fmt is None and looks_like_parquet(path)):
        return scan_parquet(path, name, rules.row_rules)  # no text facts, pyarrow only here
    seen = _scan_bytes(path, sha256)
    rows = _Rows()
    if seen.size > 0 and not seen.is_binary and seen.utf8_error is None and fmt is not None:
        # Pass 1's longest line counts a BOM and a lone "\r" in, so it is never shorter than
        # the reader's: when it is within the limit, no row is bad for its length.
        lean = fmt is FileFormat.CSV and not rules.row_rules
        if lean and seen.longest <= rules.max_line_length_bytes:
            plain = not seen.has_quote and not seen.lone_cr
            rows = _scan_csv_plain(path, rules) if plain else _scan_csv_shape(path, rules)
        else:
            rows = _scan_rows(path, fmt, rules)
    return FileFacts(
        name=name,
        size_bytes=seen.size,
        sha256=seen.sha256,
        format=fmt,
        is_binary=seen.is_binary,
        utf8_error=seen.utf8_error,
        has_bom=seen.has_bom,
        max_line_bytes=seen.longest,
        longest_line=seen.longest_line,
        columns=rows.columns,
        rows_total=rows.total,
        rows_bad=rows.bad,
        bad_by_rule=rows.by_rule,
        samples=tuple(rows.samples),
        unreadable=rows.unreadable,
    )
