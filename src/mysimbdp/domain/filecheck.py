"""Check one file's facts against its tenant's profile: every violated rule, not the first.

Each rule is a small pure function of a ``_Check`` (tenant, facts, profile, quota usage)
that yields violations; ``check_file`` applies the ``RULES`` chain in order. Rules that look
inside the rows stay silent when the file is empty, binary, not UTF-8 or unreadable: the
rule that explains why says it once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePath

from mysimbdp.domain.facts import FileFacts
from mysimbdp.domain.formats import EXTENSIONS, FileFormat
from mysimbdp.domain.naming import file_name_problems
from mysimbdp.domain.profile import Profile


@dataclass(frozen=True)
class QuotaUsage:
    files_today: int  # accepted files in the rolling 24 h before this one
    bytes_today: int


@dataclass(frozen=True)
class Violation:
    rule: str  # short id, e.g. "size"
    message: str  # names the tenant, the file, the rule, the value and the limit


@dataclass(frozen=True)
class _Check:
    tenant: str
    facts: FileFacts
    profile: Profile
    usage: QuotaUsage

    def violation(self, rule: str, text: str) -> Violation:
        return Violation(rule, f"tenant {self.tenant!r}: file {self.facts.name!r}: rule {rule}: {text}")

    @property
    def has_text(self) -> bool:
        """The file is non-empty UTF-8 text in a known format: its rows mean something."""
        facts = self.facts
        return facts.size_bytes > 0 and not facts.is_binary and facts.utf8_error is None and facts.format is not None

    @property
    def has_rows(self) -> bool:
        return self.has_text and self.facts.unreadable is None


Rule = Callable[[_Check], Iterator[Violation]]


def file_name(c: _Check) -> Iterator[Violation]:
    for problem in file_name_problems(c.facts.name):
        yield c.violation("file_name", f"{problem}; use a plain file name without folders")


def format_allowed(c: _Check) -> Iterator[Violation]:
    allowed = ", ".join(str(f) for f in c.profile.formats)
    if c.facts.format is None:
        suffix = PurePath(c.facts.name).suffix or "(none)"
        known = ", ".join(EXTENSIONS)
        yield c.violation(
            "format",
            f"extension {suffix!r} is not a known format (known extensions: {known}; allowed formats: {allowed})",
        )
    elif c.facts.format not in c.profile.formats:
        yield c.violation("format", f"format {c.facts.format} is not allowed for this tenant (allowed: {allowed})")


def empty(c: _Check) -> Iterator[Violation]:
    if c.facts.size_bytes == 0:
        yield c.violation("empty", "the file is 0 bytes; send a file with data")


def binary(c: _Check) -> Iterator[Violation]:
    if c.facts.size_bytes > 0 and c.facts.is_binary:
        yield c.violation("binary", "the file holds binary data (NUL or control bytes), not text; send UTF-8 text")


def encoding(c: _Check) -> Iterator[Violation]:
    if c.facts.utf8_error is not None and not c.facts.is_binary:
        limit = f"files must be UTF-8 text ({c.profile.encoding}): re-save it as UTF-8"
        yield c.violation("encoding", f"{c.facts.utf8_error}; {limit}")


def size(c: _Check) -> Iterator[Violation]:
    limit = c.profile.limits.max_file_size_bytes
    if c.facts.size_bytes > limit:
        yield c.violation("size", f"{c.facts.size_bytes} bytes is over the limit of {limit} bytes")


def daily_files(c: _Check) -> Iterator[Violation]:
    limit = c.profile.limits.max_files_per_day
    count = c.usage.files_today + 1
    if count > limit:
        yield c.violation(
            "daily_files", f"this would be file {count} in the last 24 h, over the limit of {limit} files per day"
        )


def daily_bytes(c: _Check) -> Iterator[Violation]:
    limit = c.profile.limits.max_bytes_per_day
    total = c.usage.bytes_today + c.facts.size_bytes
    if total > limit:
        yield c.violation(
            "daily_bytes",
            f"{c.usage.bytes_today} bytes already accepted in the last 24 h + {c.facts.size_bytes} bytes = "
            f"{total} bytes, over the limit of {limit} bytes per day",
        )


def line_length(c: _Check) -> Iterator[Violation]:
    # A JSON array may legally sit on one line; its elements are held to the limit by the
    # reader instead (bad rows counted under "line_length").
    limit = c.profile.limits.max_line_length_bytes
    if c.has_text and c.facts.format is not FileFormat.JSON and c.facts.max_line_bytes > limit:
        yield c.violation(
            "line_length",
            f"line {c.facts.longest_line} is {c.facts.max_line_bytes} bytes, over the limit of {limit} bytes",
        )


def unreadable(c: _Check) -> Iterator[Violation]:
    if c.has_text and c.facts.unreadable is not None:
        yield c.violation("unreadable", c.facts.unreadable)


def header_only(c: _Check) -> Iterator[Violation]:
    if c.has_rows and c.facts.rows_total == 0:
        what = "a header and no data rows" if c.facts.format is FileFormat.CSV else "no records"
        yield c.violation("header_only", f"the file has {what} (0 rows, at least 1 needed)")


def required_columns(c: _Check) -> Iterator[Violation]:
    required = c.profile.required_columns
    if not required or not c.has_rows:
        return
    present = set(c.facts.columns or ())
    missing = [name for name in required if name not in present]
    if missing:
        yield c.violation(
            "required_columns",
            f"missing required columns {missing} (the file has {len(c.facts.columns or [])} columns; "
            f"{len(required)} are required)",
        )


def bad_row_ratio(c: _Check) -> Iterator[Violation]:
    facts = c.facts
    limit = c.profile.quality.max_bad_row_ratio
    if not c.has_rows or facts.rows_total == 0:
        return
    ratio = facts.rows_bad / facts.rows_total
    if ratio > limit:
        by_rule = ", ".join(f"{rule}={count}" for rule, count in sorted(facts.bad_by_rule.items()))
        examples = "; e.g. " + " | ".join(facts.samples[:3]) if facts.samples else ""
        yield c.violation(
            "bad_row_ratio",
            f"{facts.rows_bad} of {facts.rows_total} rows are bad (ratio {ratio:.3f}), over the limit of "
            f"{limit:.3f}; by rule: {by_rule}{examples}",
        )


RULES: tuple[Rule, ...] = (
    file_name,
    format_allowed,
    empty,
    binary,
    encoding,
    size,
    daily_files,
    daily_bytes,
    line_length,
    unreadable,
    header_only,
    required_columns,
    bad_row_ratio,
)


def check_file(tenant: str, facts: FileFacts, profile: Profile, usage: QuotaUsage) -> list[Violation]:
    """Every profile rule ``facts`` break, in ``RULES`` order; empty when the file is accepted."""
    check = _Check(tenant, facts, profile, usage)
    return [violation for rule in RULES for violation in rule(check)]


def compression_violation(tenant: str, name: str, rule: str, text: str) -> Violation:
    """A compressed file that was not decompressed (rule ``compression``, ``uncompressed_size``,
    ``expansion_ratio`` or ``decompress.*``): its limits are checked while decompressing, in
    :mod:`mysimbdp.adapters.files.decompress`, not on facts."""
    return Violation(rule, f"tenant {tenant!r}: file {name!r}: rule {rule}: {text}")


def unsupported_compression(tenant: str, name: str, kind: str, supported: tuple[str, ...]) -> Violation:
    """A file compressed (or archived) in a way the platform does not decompress."""
    return compression_violation(
        tenant,
        name,
        "compression",
        f"the file is {kind}-compressed, which is not supported (supported: {', '.join(supported)}); "
        "send it uncompressed or compressed with one of those",
    )
