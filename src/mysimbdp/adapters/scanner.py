"""Scan one file into ``FileFacts``: the IO side of the file check, in bounded memory.

Pass 1 reads the bytes once in 1 MiB chunks: size, sha256, NUL/control bytes, UTF-8
validity (the absolute offset of the first bad byte), BOM and the longest line. Pass 2 runs
only on non-empty UTF-8 text in a known format: the streaming ``RecordReader`` with the
profile's line limit, and the profile's row rules, counting bad rows by rule.
"""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from mysimbdp.domain.filecheck import FileFacts
from mysimbdp.domain.profile import EXTENSIONS, FileFormat, Profile
from mysimbdp.domain.quality import compile_rules
from mysimbdp.errors import FileUnreadable
from mysimbdp.sdk.readers import RecordReader

CHUNK_BYTES = 1 << 20
MAX_SAMPLES = 5
# Share of control characters (other than tab, CR, LF, FF, BS) in the first chunk above
# which a file without NUL bytes still counts as binary.
BINARY_CONTROL_RATIO = 0.10
_CONTROL = frozenset(range(32)) - {8, 9, 10, 12, 13} | {127}
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL)


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
    parts = chunk.replace(b"\r\n", b"\n").split(b"\n")
    if len(parts) == 1:
        facts.carry += len(chunk)
        facts.carry_cr = chunk.endswith(b"\r")
        return
    lengths = list(map(len, parts))
    # the first piece ends the line left open by the last chunk ("\r" | "\n" across chunks)
    lengths[0] += facts.carry - (1 if not parts[0] and facts.carry_cr else 0)
    longest = max(lengths[:-1])
    if longest > facts.longest:
        facts.longest = longest
        facts.longest_line = facts.lines_done + lengths.index(longest) + 1
    facts.lines_done += len(parts) - 1
    facts.carry = lengths[-1]
    facts.carry_cr = parts[-1].endswith(b"\r")


def _scan_bytes(path: Path) -> _Bytes:
    facts = _Bytes()
    sha = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb", buffering=0) as f:
        while chunk := f.read(CHUNK_BYTES):
            if facts.size == 0:
                facts.has_bom = chunk.startswith(codecs.BOM_UTF8)
                controls = len(chunk.translate(None, _NOT_CONTROL))
                facts.is_binary = controls > BINARY_CONTROL_RATIO * len(chunk)
            sha.update(chunk)
            facts.is_binary = facts.is_binary or b"\x00" in chunk
            if facts.utf8_error is None and not (chunk.isascii() and not decoder.getstate()[0]):
                _check_utf8(facts, decoder, chunk)
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
    facts.sha256 = sha.hexdigest()
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


def _scan_rows(path: Path, fmt: FileFormat, profile: Profile) -> _Rows:
    rows = _Rows()
    by_rule = rows.by_rule
    samples = rows.samples
    where = "element" if fmt is FileFormat.JSON else "line"
    checker = compile_rules(profile.quality.rules)
    reader = RecordReader(path, fmt, max_line_bytes=profile.limits.max_line_length_bytes)
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


def scan_file(path: Path, name: str, profile: Profile) -> FileFacts:
    """Scan ``path`` (the tenant called it ``name``) for ``check_file``."""
    seen = _scan_bytes(path)
    fmt = _format_of(name)
    rows = _Rows()
    if seen.size > 0 and not seen.is_binary and seen.utf8_error is None and fmt is not None:
        rows = _scan_rows(path, fmt, profile)
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
