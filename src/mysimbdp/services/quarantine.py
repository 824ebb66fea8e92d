"""Quarantine: list, show and purge a tenant's quarantined rows and messages (replay:
``services.quarantine_replay``). Every call is scoped to one tenant; a file of another
tenant is :class:`UnknownSource`, as if it did not exist."""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from mysimbdp.adapters.broker import tenant_stream_problem
from mysimbdp.adapters.metastore.quarantine import PurgeRecord
from mysimbdp.domain.records import FileRecord, QuarantinedRow
from mysimbdp.domain.replay import stream_of, summarize_reasons
from mysimbdp.domain.sources import STREAM_PREFIX
from mysimbdp.errors import MysimbdpError
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform

__all__ = [
    "PurgeRecord",
    "Selection",
    "SourceSummary",
    "UnknownSource",
    "check",
    "default_user",
    "purge",
    "purges",
    "show",
    "summarize",
]

log = get_logger("quarantine")


class UnknownSource(MysimbdpError):
    """A replay or purge names a file that is not one of the tenant's (or a bad stream name)."""


@dataclass(frozen=True)
class Selection:
    """Which of one tenant's entries: of one file, of one stream, or all of them."""

    tenant: str
    file_id: str | None = None
    stream: str | None = None

    def __post_init__(self) -> None:
        if self.file_id is not None and self.stream is not None:
            raise MysimbdpError(f"tenant {self.tenant!r}: give a file or a stream, not both")

    def __str__(self) -> str:
        if self.file_id is not None:
            return f"tenant {self.tenant!r}, file {self.file_id!r}"
        if self.stream is not None:
            return f"tenant {self.tenant!r}, stream {self.stream!r}"
        return f"tenant {self.tenant!r}"


@dataclass(frozen=True)
class SourceSummary:
    """What one file or one stream has in the quarantine."""

    tenant: str
    kind: str  # "batch" | "stream"
    source: str  # the file id, or the stream name
    name: str  # the file's name, or the stream name
    entries: int
    first_at: float
    last_at: float
    reasons: list[tuple[str, int]]  # the most frequent kinds of reason (of the newest entries)


def default_user() -> str:
    """Who a purge is recorded as when no one is named: the OS user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# -- reading ----------------------------------------------------------------------------------
def check(platform: Platform, sel: Selection) -> FileRecord | None:
    """The selected file (None for a stream or every source); an unknown tenant, a file of
    another tenant and a bad stream name are errors."""
    platform.tenant(sel.tenant)
    if sel.stream is not None and (problem := tenant_stream_problem(sel.stream)):
        raise UnknownSource(f"tenant {sel.tenant!r}: {problem}")
    if sel.file_id is None or sel.file_id.startswith(STREAM_PREFIX):
        return None
    record = platform.meta.get_file(sel.file_id)
    if record is None or record.tenant != sel.tenant:
        raise UnknownSource(f"tenant {sel.tenant!r}: no file {sel.file_id!r}; list them with 'mysimbdp files'")
    return record


def summarize(platform: Platform, sel: Selection) -> list[SourceSummary]:
    """Per file and per stream: entries, first and last, the most frequent reasons."""
    check(platform, sel)
    ledger = platform.meta.quarantine
    groups: dict[tuple[str, str], list[tuple[str, int, float, float]]] = {}
    for count in ledger.sources(sel.tenant, file_id=sel.file_id, stream=sel.stream):
        stream = stream_of(count.file_id)
        key = ("stream", stream) if stream is not None else ("batch", count.file_id)
        groups.setdefault(key, []).append((count.file_id, count.entries, count.first_at, count.last_at))
    summaries = []
    for (kind, source), parts in groups.items():
        if kind == "stream":
            name, reasons = source, ledger.reasons(sel.tenant, stream=source)
        else:
            record = platform.meta.get_file(source)
            name, reasons = (record.name if record else source), ledger.reasons(sel.tenant, file_id=source)
        summaries.append(
            SourceSummary(
                sel.tenant,
                kind,
                source,
                name,
                sum(p[1] for p in parts),
                min(p[2] for p in parts),
                max(p[3] for p in parts),
                summarize_reasons(reasons),
            )
        )
    return summaries


def show(platform: Platform, sel: Selection, *, limit: int, offset: int) -> tuple[list[QuarantinedRow], int]:
    """A page of the selection's entries (file and line order) and how many there are."""
    check(platform, sel)
    return platform.meta.quarantine.entries(
        sel.tenant, file_id=sel.file_id, stream=sel.stream, limit=limit, offset=offset
    )


# -- purge ------------------------------------------------------------------------------------
def purge(platform: Platform, sel: Selection, *, purged_by: str, via: str) -> PurgeRecord:
    """Delete the selection's entries for good, recording who, when, how many and why they
    were quarantined (the most frequent reasons)."""
    check(platform, sel)
    if not purged_by.strip():
        raise MysimbdpError(f"{sel}: a purge must say who does it (--by)")
    ledger = platform.meta.quarantine
    reasons = summarize_reasons(ledger.reasons(sel.tenant, file_id=sel.file_id, stream=sel.stream), top=5)
    record = ledger.purge(
        sel.tenant, file_id=sel.file_id, stream=sel.stream, purged_by=purged_by.strip(), via=via, reasons=reasons
    )
    log.info("quarantine_purged", tenant=sel.tenant, selection=record.selection, entries=record.entries, by=purged_by)
    return record


def purges(
    platform: Platform, tenant: str | None, *, limit: int = 100, offset: int = 0
) -> tuple[list[PurgeRecord], int]:
    if tenant is not None:
        platform.tenant(tenant)
    return platform.meta.quarantine.purges(tenant, limit=limit, offset=offset)
