"""fetch_file: check one inbox file against its tenant's profile; stage it or reject it.

The decision is recorded in the meta store before and after the file moves, so a crash at
any point leaves either the file in the inbox (fetched again) or a record that
:func:`mysimbdp.services.reconcile.reconcile` completes. Nothing is parsed into the store here.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import stat
import threading
import time
from pathlib import Path

from mysimbdp.adapters.files import home as filesystem
from mysimbdp.adapters.files.claims import claim_name, parse_claim
from mysimbdp.adapters.files.decompress import Unpacked
from mysimbdp.adapters.files.scanjob import ScanFailure, ScanLimits, scan_contained
from mysimbdp.adapters.files.writers import Snapshot, held_for_writing, snapshot
from mysimbdp.adapters.process.sandbox import Grant
from mysimbdp.domain.facts import FileFacts
from mysimbdp.domain.filecheck import QuotaUsage, Violation, check_file
from mysimbdp.domain.ids import new_id
from mysimbdp.domain.profile import Profile
from mysimbdp.domain.qualitycounts import FileQuality, file_quality
from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.routing import no_batch_app
from mysimbdp.domain.states import FileStatus
from mysimbdp.errors import FileStillWritten
from mysimbdp.formats.compression import plain_name
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.rejection import FetchDecision as FetchDecision
from mysimbdp.services.rejection import (
    extension_of,
    reject_file,
    reject_special,
    unscanned_facts,
    unscanned_record,
)
from mysimbdp.services.unpack import unpack

log = get_logger("fetchdata")

DAY_S = 86_400.0
RECEIVED_PREFIX = "_received-"  # an upload answered before its checks, waiting for them
_FILE_ID = re.compile(r"f[0-9a-f]{20}")  # domain.ids.new_id("f")


@dataclasses.dataclass(frozen=True)
class Received:
    """What an upload's receiver computed of a file while its bytes arrived."""

    sha256: str
    size_bytes: int


def fetch_file(platform: Platform, tenant: str, path: Path, *, cancel: threading.Event | None = None) -> FetchDecision:
    """Validate ``path`` (a complete file in ``tenant``'s inbox) and move it on.

    The file's content is read only by its scan, in a limited process of its own (see
    :mod:`mysimbdp.adapters.files.scanjob`): a scan that times out, runs out of memory or crashes
    rejects the file with that rule, and nothing of it reaches this process. When ``cancel``
    is set meanwhile (the platform is stopping), the scan is killed, the file goes back to the
    inbox untouched and :class:`~mysimbdp.errors.RunCancelled` is raised."""
    platform.tenant(tenant)  # an unknown tenant's file stays in its inbox, unclaimed
    if parse_received(path.name) is not None:  # an upload answered 202 whose checks did not run yet
        decision = fetch_received(platform, tenant, path, cancel=cancel)
        if decision is None:  # checked by the API process meanwhile
            raise FileNotFoundError(path)
        return decision
    return fetch_claimed(platform, tenant, claim_file(platform, path), cancel=cancel)


def claim_file(platform: Platform, path: Path) -> Path:
    """Take ``path`` out of its inbox: one atomic rename to a hidden name that names this
    platform's claim owner and a new file id. A second fetcher (another process, the CLI) gets
    :class:`FileNotFoundError` instead of fetching it twice, and ``reconcile`` leaves the claim
    alone while its owner lives."""
    claimed = path.with_name(claim_name(platform.claim_owner.id, new_id("f"), path.name))
    os.rename(path, claimed)
    return claimed


def fetch_claimed(
    platform: Platform,
    tenant: str,
    claimed: Path,
    *,
    cancel: threading.Event | None = None,
    received: Received | None = None,
) -> FetchDecision:
    """The rest of :func:`fetch_file`, for a file this platform claimed. ``received``: what an
    upload's receiver learnt of the bytes while they arrived (their sha256 and count): the scan
    then checks every byte but does not hash them again, and the record's sha256 is the
    receiver's. Only for a file of that size (else it is hashed as any inbox file is)."""
    taken = parse_claim(claimed.name)
    assert taken is not None and taken.owner == platform.claim_owner.id, claimed
    return _fetch_as(platform, tenant, claimed, (taken.file_id, taken.original), cancel, received)


def received_name(file_id: str, name: str) -> str:
    """The name of an upload answered before its checks (``Prefer: respond-async``) while it
    waits for them in its tenant's inbox: the API process checks it at once, and fetchdata
    (:func:`fetch_file`) under its file id when a crash or a stop cut that short."""
    return f"{RECEIVED_PREFIX}{file_id}-{name}"


def parse_received(name: str) -> tuple[str, str] | None:
    """(file id, name) of a :func:`received_name`, else None."""
    if not name.startswith(RECEIVED_PREFIX):
        return None
    file_id, dash, original = name[len(RECEIVED_PREFIX) :].partition("-")
    return (file_id, original) if dash and _FILE_ID.fullmatch(file_id) and original else None


def fetch_received(
    platform: Platform,
    tenant: str,
    path: Path,
    received: Received | None = None,
    cancel: threading.Event | None = None,
) -> FetchDecision | None:
    """Check an upload answered before its checks (``path``: its :func:`received_name`), under
    its file id, as :func:`fetch_claimed` does; None when it is gone or was decided before.
    :class:`FileStillWritten` while another thread or process checks it (an exclusive ``flock``
    on the file, dropped by the kernel however its holder ends). Run by the API process right
    after its 202 answer and by fetchdata (:func:`fetch_file`) for what a crash, a stop or a
    failure left: the file stays where it is until it is decided (a store outage, ``cancel``).
    A decision recorded before a crash is finished, never made twice (a 'received' record:
    accepted, moved into staging as reconcile does). A name with no upload's ``checking``
    record of this tenant under its id (one a tenant made up) is fetched as a plain inbox
    file, under a new id."""
    taken = parse_received(path.name)
    assert taken is not None, path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:  # fetchdata, after a settle time, tries again
            raise FileStillWritten(tenant, taken[1], "its checks run in another thread or process") from exc
        if not path.exists():  # checked by another holder before this one took the lock
            return None
        record = platform.meta.get_file(taken[0])
        if record is None or record.tenant != tenant:  # no upload's record: a name a tenant chose, an inbox file
            return fetch_claimed(platform, tenant, claim_file(platform, path), cancel=cancel)
        if record.status is FileStatus.CHECKING:
            known = received or Received(record.sha256, record.size_bytes)
            return _fetch_as(platform, tenant, path, taken, cancel, known, give_back=False)
        if record.status is FileStatus.RECEIVED:  # accepted: the move into staging was cut short
            staged = filesystem.move(path, staged_path(platform, record))
            platform.meta.set_status(record.id, FileStatus.STAGED, {"reconciled": True}, path=str(staged))
        elif record.status in (FileStatus.REJECTED, FileStatus.DUPLICATE) and not Path(record.path).exists():
            filesystem.move(path, Path(record.path))  # decided: the move was cut short
        else:
            path.unlink(missing_ok=True)
        return None
    finally:
        os.close(fd)


def _fetch_as(
    platform: Platform,
    tenant: str,
    claimed: Path,
    taken: tuple[str, str],  # (file id, name)
    cancel: threading.Event | None,
    known: Received | None,
    *,
    give_back: bool = True,
) -> FetchDecision:
    """Check ``claimed`` as file ``taken``; on an exception, give it back to the inbox under its
    name (``give_back``) or leave it where it is (an upload waiting under its received name)."""
    started = time.monotonic()
    received_at = time.time()  # when the fetch took the file: the start of its record
    file_id, name = taken
    when = (name, received_at, started)
    plain = plain_name(name)  # its format, app and dataset come from the name without ".gz"
    if not stat.S_ISREG(os.lstat(claimed).st_mode):  # a link, a FIFO, a device: never opened
        return reject_special(platform, tenant, file_id, claimed, when)
    before = snapshot(claimed)
    sha256 = known.sha256 if known is not None and known.size_bytes == before.size else ""
    unpacked: Unpacked | Violation | None = None
    try:
        _, profile = platform.tenant(tenant)
        if held_for_writing(claimed):  # a writer has it open: not complete, given back
            raise FileStillWritten(tenant, name, "a process holds it open for writing")
        unpacked = unpack(platform, tenant, claimed, name, profile, cancel)
        if isinstance(unpacked, Violation):
            return _reject_unscanned(platform, tenant, profile, file_id, claimed, when, unpacked)
        if unpacked is not None:  # its record holds the compressed file's sha256: the plain copy's is not needed
            sha256 = unpacked.sha256
        scanned = _scan(platform, tenant, unpacked.path if unpacked else claimed, plain, profile, cancel, sha256)
        _check_unchanged(tenant, name, claimed, before, unpacked.bytes_in if unpacked else _bytes_read(scanned))
    except BaseException:
        if isinstance(unpacked, Unpacked):
            unpacked.path.unlink(missing_ok=True)
        if give_back:
            os.rename(claimed, claimed.with_name(name))  # give it back untouched
        raise
    packed: dict[str, object] = {}
    if unpacked is not None:  # the record holds what was sent: the compressed size and sha256
        packed = {"compression": str(unpacked.compression), "uncompressed_bytes": unpacked.bytes_out}
    if isinstance(scanned, ScanFailure):
        if unpacked is not None:
            unpacked.path.unlink(missing_ok=True)
        failure = scanned
        message = f"tenant {tenant!r}: file {name!r}: rule {failure.rule}: its scan {failure.value}; {failure.remedy}"
        log.warning("file_scan_failed", tenant=tenant, file_id=file_id, file=name, rule=failure.rule)
        violation = Violation(failure.rule, message)
        return _reject_unscanned(platform, tenant, profile, file_id, claimed, when, violation)
    facts = scanned
    if unpacked is not None:
        facts = dataclasses.replace(facts, name=name, size_bytes=unpacked.bytes_in, sha256=unpacked.sha256)
    path = claimed
    now = time.time()
    files_today, bytes_today = platform.meta.quota_usage(tenant, now - DAY_S, besides=file_id)
    violations = check_file(tenant, facts, profile, QuotaUsage(files_today, bytes_today))
    app = profile.app_for(plain, facts.format)
    if app is None:
        reason = no_batch_app(profile, plain, facts.format)
        violations.append(Violation("app", f"tenant {tenant!r}: file {name!r}: rule app: {reason}"))
    record = FileRecord(
        id=file_id,
        tenant=tenant,
        name=name,
        sha256=facts.sha256,
        size_bytes=facts.size_bytes,
        format=str(facts.format or ""),
        status=FileStatus.RECEIVED,
        received_at=received_at,
        updated_at=now,
        path=str(path),
        app=app.name if app else "",
        dataset=profile.dataset_for(app, plain) if app else "",
        rows_total=facts.rows_total,
    )
    threshold = profile.quality.max_bad_row_ratio
    quality = file_quality(file_id, tenant, received_at, facts, threshold, [v.rule for v in violations])
    earlier = None if violations else platform.meta.accepted_with_sha(tenant, facts.sha256)
    if unpacked is not None and not violations and earlier is None:
        staged = _stage(platform, dataclasses.replace(record, path=str(unpacked.path)), facts, started, quality, packed)
        claimed.unlink()  # spent: its plain copy is staged (reconcile removes it after a crash here)
        return staged
    if unpacked is not None:
        unpacked.path.unlink(missing_ok=True)  # rejected: the file as sent is kept, not its plain copy
    if not violations:
        if earlier is not None:
            message = (
                f"tenant {tenant!r}: file {name!r}: rule duplicate: same content (sha256 "
                f"{facts.sha256[:12]}…) as file {earlier.id} ({earlier.name!r}), {earlier.status}"
            )
            return reject_file(
                platform, record, FileStatus.DUPLICATE, [message], facts, started, quality=quality, detail=packed
            )
        return _stage(platform, record, facts, started, quality)
    return reject_file(
        platform,
        record,
        FileStatus.REJECTED,
        [v.message for v in violations],
        facts,
        started,
        [v.rule for v in violations],
        quality=quality,
        detail=packed,
    )


def _bytes_read(scanned: FileFacts | ScanFailure) -> int | None:
    return scanned.size_bytes if isinstance(scanned, FileFacts) else None


def _check_unchanged(tenant: str, name: str, claimed: Path, before: Snapshot, bytes_read: int | None) -> None:
    """Raise :class:`FileStillWritten` unless the file is, after its scan, what it was before it
    (inode, size, mtime, ctime), the scan read all of it, and no process holds it open for
    writing: a writer that appends after the claim still writes into the claimed inode."""
    after = snapshot(claimed)
    if after != before:
        raise FileStillWritten(tenant, name, f"it changed while it was scanned ({before.size} -> {after.size} bytes)")
    if bytes_read is not None and bytes_read != after.size:
        raise FileStillWritten(tenant, name, f"its scan read {bytes_read} of its {after.size} bytes")
    if held_for_writing(claimed):
        raise FileStillWritten(tenant, name, "a process holds it open for writing")


def _scan(
    platform: Platform,
    tenant: str,
    claimed: Path,
    name: str,
    profile: Profile,
    cancel: threading.Event | None,
    sha256: str = "",
) -> FileFacts | ScanFailure:
    """The scan in its limited process, in the sandbox where the machine has one (it may read
    the claimed file and the runtime, write nothing, connect nowhere); ``sha256``: known (or,
    for the plain copy of a compressed file, not needed), not computed again."""
    settings = platform.settings
    sandbox = None
    if platform.sandbox_status.enforced:
        sandbox = platform.sandbox(Grant(tenant, platform.home.root, read=(claimed,), network="none"))
    return scan_contained(
        claimed,
        name,
        profile,
        limits=ScanLimits(settings.scan_timeout_s, settings.scan_memory_bytes),
        sandbox=sandbox,
        parent_env=platform.env,
        cancel=cancel,
        sha256=sha256,
    )


def _reject_unscanned(
    platform: Platform,
    tenant: str,
    profile: Profile,
    file_id: str,
    claimed: Path,
    taken: tuple[str, float, float],  # (name, received at, started at)
    violation: Violation,
) -> FetchDecision:
    """Reject a file whose scan or decompression timed out, ran out of memory, crashed or
    found a bomb or a corrupt stream: final, never retried."""
    name, received, started = taken
    facts = unscanned_facts(name, claimed.stat().st_size)
    record = unscanned_record(file_id, tenant, facts, FileStatus.RECEIVED, claimed, received)
    threshold = profile.quality.max_bad_row_ratio
    quality = file_quality(file_id, tenant, received, facts, threshold, [violation.rule])
    return reject_file(
        platform, record, FileStatus.REJECTED, [violation.message], facts, started, [violation.rule], quality=quality
    )


def staged_path(platform: Platform, record: FileRecord) -> Path:
    """Where an accepted file waits: ``staging/<tenant>/<file id><extension>``."""
    return platform.home.area("staging", record.tenant) / f"{record.id}{extension_of(plain_name(record.name))}"


def _stage(
    platform: Platform,
    record: FileRecord,
    facts: FileFacts,
    started: float,
    quality: FileQuality,
    detail: dict[str, object] | None = None,
) -> FetchDecision:
    staged = staged_path(platform, record)
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
            **(detail or {}),
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
