"""Rejecting a taken file: its record, its reason document next to it in ``rejected/<tenant>/``,
the move, the log line and the tenant's notification (used by fetch and reconcile)."""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import orjson

from mysimbdp.adapters.files import home as filesystem
from mysimbdp.adapters.files.home import kind_of
from mysimbdp.domain.facts import FileFacts
from mysimbdp.domain.formats import EXTENSIONS
from mysimbdp.domain.notifications import NotifyEvent
from mysimbdp.domain.qualitycounts import FileQuality, file_quality
from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.states import FileStatus
from mysimbdp.formats.compression import plain_name
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.notify import notify

log = get_logger("fetchdata")


@dataclass(frozen=True)
class FetchDecision:
    file_id: str
    tenant: str
    name: str
    status: FileStatus  # STAGED, REJECTED or DUPLICATE
    path: Path  # where the file is now
    reasons: tuple[str, ...] = ()
    facts: FileFacts | None = field(default=None, repr=False)
    seconds: float = 0.0


def extension_of(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if suffix.isascii() and len(suffix) <= 10 else ""


def unscanned_facts(name: str, size_bytes: int) -> FileFacts:
    """The facts of a file whose scan gave none: its name, size and format (from the extension)."""
    return FileFacts(
        name=name,
        size_bytes=size_bytes,
        sha256="",
        format=EXTENSIONS.get(PurePath(plain_name(name)).suffix.lower()),
        is_binary=False,
        utf8_error=None,
        has_bom=False,
        max_line_bytes=0,
        longest_line=0,
        columns=None,
        rows_total=0,
        rows_bad=0,
        bad_by_rule={},
        samples=(),
        unreadable=None,
    )


def unscanned_record(
    file_id: str, tenant: str, facts: FileFacts, status: FileStatus, path: Path, received_at: float
) -> FileRecord:
    """The record of a file that has only its :func:`unscanned_facts` (no sha256, no rows)."""
    return FileRecord(
        id=file_id,
        tenant=tenant,
        name=facts.name,
        sha256="",
        size_bytes=facts.size_bytes,
        format=str(facts.format or ""),
        status=status,
        received_at=received_at,
        updated_at=time.time(),
        path=str(path),
    )


def reject_file(
    platform: Platform,
    record: FileRecord,
    status: FileStatus,
    reasons: list[str],
    facts: FileFacts,
    started: float,
    rules: list[str] | None = None,
    *,
    quality: FileQuality,
    detail: dict[str, object] | None = None,
    keep: bool = True,
) -> FetchDecision:
    """Record ``record``'s file as ``status`` with ``reasons``, write its reason document and move
    it into ``rejected/<tenant>/`` (``keep=False``: remove it, e.g. a symbolic link)."""
    area = platform.home.area("rejected", record.tenant)
    target = area / f"{record.id}{extension_of(record.name)}"
    reason_doc = {
        "tenant": record.tenant,
        "file": record.name,
        "file_id": record.id,
        "status": status,
        "sha256": record.sha256,
        "size_bytes": record.size_bytes,
        "rules": rules or ["duplicate"],
        "reasons": reasons,
        "rejected_at": time.time(),
        "bad_rows_by_rule": facts.bad_by_rule,
        "bad_row_samples": list(facts.samples),
    }
    platform.meta.insert_file(
        dataclasses.replace(record, status=status, reasons=tuple(reasons), path=str(target if keep else "")),
        {"reasons": reasons, "rules": reason_doc["rules"], **(detail or {})},
        quality=quality,
    )
    # The reason first, then the move: a crash between them leaves the claim, which
    # ``reconcile`` moves after its final record instead of scanning it again.
    (area / f"{record.id}.reason.json").write_bytes(orjson.dumps(reason_doc, option=orjson.OPT_INDENT_2))
    if keep:
        filesystem.move(Path(record.path), target)
    else:
        Path(record.path).unlink(missing_ok=True)  # a link itself, never its target
    seconds = time.monotonic() - started
    log.warning(
        "file_rejected",
        tenant=record.tenant,
        file_id=record.id,
        file=record.name,
        status=str(status),
        reasons=reasons,
    )
    notify(
        platform,
        record.tenant,
        NotifyEvent.FILE_REJECTED,
        file=record.name,
        file_id=record.id,
        status=str(status),
        reasons=list(reasons),
    )
    return FetchDecision(record.id, record.tenant, record.name, status, target, tuple(reasons), facts, seconds)


SYMLINK, NOT_REGULAR = "symlink", "not_a_regular_file"


def reject_special(
    platform: Platform,
    tenant: str,
    file_id: str,
    claimed: Path,
    taken: tuple[str, float, float],  # (name, received at, started at)
) -> FetchDecision:
    """Reject a claimed inbox entry that is not a regular file, never opening it: a symbolic link
    (rule ``symlink``, value its target's text, not followed) or a FIFO, socket or device (rule
    ``not_a_regular_file``). The entry itself is removed, with its record and reason document."""
    name, received, started = taken
    mode = os.lstat(claimed).st_mode
    if stat.S_ISLNK(mode):
        rule, value = SYMLINK, os.readlink(claimed)
        what = f"it is a symbolic link to {value!r}; links are never followed"
    else:
        rule, value = NOT_REGULAR, kind_of(mode)
        what = f"it is {value}; it is never opened"
    message = f"tenant {tenant!r}: file {name!r}: rule {rule}: {what}; put the file itself in the inbox"
    facts = unscanned_facts(name, 0)
    _, profile = platform.tenant(tenant)
    quality = file_quality(file_id, tenant, received, facts, profile.quality.max_bad_row_ratio, [rule])
    record = unscanned_record(file_id, tenant, facts, FileStatus.RECEIVED, claimed, received)
    return reject_file(
        platform,
        record,
        FileStatus.REJECTED,
        [message],
        facts,
        started,
        [rule],
        quality=quality,
        detail={"value": value},
        keep=False,
    )
