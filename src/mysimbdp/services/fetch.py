"""fetch_file: check one inbox file against its tenant's profile; stage it or reject it.

The decision is recorded in the meta store before and after the file moves, so a crash at
any point leaves either the file in the inbox (fetched again) or a record that
``reconcile`` completes. Nothing is parsed into the store here.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from mysimbdp.adapters import filesystem
from mysimbdp.adapters.scanner import scan_file
from mysimbdp.domain.filecheck import FileFacts, QuotaUsage, Violation, check_file
from mysimbdp.domain.ids import new_id
from mysimbdp.domain.profile import NotifyEvent
from mysimbdp.domain.qualitycounts import FileQuality, file_quality
from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.routing import no_batch_app
from mysimbdp.domain.states import FileStatus
from mysimbdp.logs import get_logger
from mysimbdp.platform import Platform
from mysimbdp.services.notify import notify

log = get_logger("fetchdata")

DAY_S = 86_400.0
CLAIM_PREFIX = ".fetching-"


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


def _extension(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if suffix.isascii() and len(suffix) <= 10 else ""


def fetch_file(platform: Platform, tenant: str, path: Path) -> FetchDecision:
    """Validate ``path`` (a complete file in ``tenant``'s inbox) and move it on."""
    started = time.monotonic()
    received = time.time()  # when the fetch took the file: the start of its record
    _, profile = platform.tenant(tenant)
    name = path.name
    file_id = new_id("f")
    # Claim the file with an atomic rename to a hidden name: a second fetcher (another
    # process, the CLI) gets FileNotFoundError instead of fetching it twice.
    claimed = path.with_name(f"{CLAIM_PREFIX}{file_id}-{name}")
    os.rename(path, claimed)
    try:
        facts = scan_file(claimed, name, profile)
    except BaseException:
        os.rename(claimed, path)  # give it back untouched
        raise
    path = claimed
    now = time.time()
    files_today, bytes_today = platform.meta.quota_usage(tenant, now - DAY_S)
    violations = check_file(tenant, facts, profile, QuotaUsage(files_today, bytes_today))
    app = profile.app_for(name, facts.format)
    if app is None:
        reason = no_batch_app(profile, name, facts.format)
        violations.append(Violation("app", f"tenant {tenant!r}: file {name!r}: rule app: {reason}"))
    record = FileRecord(
        id=file_id,
        tenant=tenant,
        name=name,
        sha256=facts.sha256,
        size_bytes=facts.size_bytes,
        format=str(facts.format or ""),
        status=FileStatus.RECEIVED,
        received_at=received,
        updated_at=now,
        path=str(path),
        app=app.name if app else "",
        dataset=profile.dataset_for(app, name) if app else "",
        rows_total=facts.rows_total,
    )
    threshold = profile.quality.max_bad_row_ratio
    quality = file_quality(file_id, tenant, received, facts, threshold, [v.rule for v in violations])
    if not violations:
        earlier = platform.meta.accepted_with_sha(tenant, facts.sha256)
        if earlier is not None:
            message = (
                f"tenant {tenant!r}: file {name!r}: rule duplicate: same content (sha256 "
                f"{facts.sha256[:12]}…) as file {earlier.id} ({earlier.name!r}), {earlier.status}"
            )
            return _reject(platform, record, FileStatus.DUPLICATE, [message], facts, started, quality=quality)
        return _stage(platform, record, facts, started, quality)
    return _reject(
        platform,
        record,
        FileStatus.REJECTED,
        [v.message for v in violations],
        facts,
        started,
        [v.rule for v in violations],
        quality=quality,
    )


def _staged_path(platform: Platform, record: FileRecord) -> Path:
    """Where an accepted file waits: ``staging/<tenant>/<file id><extension>``."""
    return platform.home.area("staging", record.tenant) / f"{record.id}{_extension(record.name)}"


def _stage(
    platform: Platform, record: FileRecord, facts: FileFacts, started: float, quality: FileQuality
) -> FetchDecision:
    staged = _staged_path(platform, record)
    platform.meta.insert_file(record, quality=quality)
    filesystem.move(Path(record.path), staged)
    platform.meta.set_status(
        record.id,
        FileStatus.STAGED,
        {
            "path": str(staged),
            "app": record.app,
            "dataset": record.dataset,
            "rows": facts.rows_total,
        },
        path=str(staged),
    )
    seconds = time.monotonic() - started
    log.info(
        "file_staged",
        tenant=record.tenant,
        file_id=record.id,
        file=record.name,
        size_bytes=record.size_bytes,
        rows=facts.rows_total,
        app=record.app,
        seconds=round(seconds, 3),
    )
    return FetchDecision(record.id, record.tenant, record.name, FileStatus.STAGED, staged, (), facts, seconds)


def _reject(
    platform: Platform,
    record: FileRecord,
    status: FileStatus,
    reasons: list[str],
    facts: FileFacts,
    started: float,
    rules: list[str] | None = None,
    *,
    quality: FileQuality,
) -> FetchDecision:
    area = platform.home.area("rejected", record.tenant)
    target = area / f"{record.id}{_extension(record.name)}"
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
        dataclasses.replace(record, status=status, reasons=tuple(reasons), path=str(target)),
        {"reasons": reasons},
        quality=quality,
    )
    filesystem.move(Path(record.path), target)
    (area / f"{record.id}.reason.json").write_bytes(orjson.dumps(reason_doc, option=orjson.OPT_INDENT_2))
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


def reconcile(platform: Platform) -> int:
    """Finish or undo fetches interrupted by a crash; returns how many were repaired.

    Run once when fetchdata starts, before any fetch."""
    repaired = 0
    for record in platform.meta.list_files(statuses=[FileStatus.RECEIVED]):
        staged = _staged_path(platform, record)
        if staged.exists():
            platform.meta.set_status(record.id, FileStatus.STAGED, {"reconciled": True}, path=str(staged))
        else:
            reason = "fetch interrupted before staging; the file is fetched again from the inbox"
            platform.meta.set_status(record.id, FileStatus.REJECTED, {"reconciled": True}, reasons=[reason])
        repaired += 1
    for tenant in platform.home.tenants_with_inbox():
        for claimed in platform.home.area("inbox", tenant).glob(f"{CLAIM_PREFIX}*"):
            original = claimed.name[len(CLAIM_PREFIX) :].split("-", 1)[-1]
            os.rename(claimed, claimed.with_name(original))
            repaired += 1
    return repaired
