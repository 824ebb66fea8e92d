"""reconcile: finish or undo the fetches a crash cut short, and only those.

Run once when fetchdata starts, before its first fetch. Which fetches are cut short is told
by their claims' owners (:mod:`mysimbdp.adapters.files.claims`): a claim or a 'received' record
whose owner still holds its lock belongs to a live fetcher (the CLI's ``ingest``, another
process) and is left alone.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from mysimbdp.adapters.files import home as filesystem
from mysimbdp.adapters.files.claims import CLAIM_PREFIX, ClaimName, dead_owner, parse_claim, remove_dead_locks
from mysimbdp.domain.qualitycounts import file_quality
from mysimbdp.domain.states import FileStatus
from mysimbdp.errors import TenantError
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.fetch import staged_path
from mysimbdp.services.rejection import reject_file, unscanned_facts, unscanned_record

__all__ = ["SCAN_INTERRUPTED", "reconcile"]

log = get_logger("fetchdata")

SCAN_INTERRUPTED = "scan.interrupted"  # the platform stopped during the scan


def reconcile(platform: Platform) -> int:
    """Finish or undo fetches interrupted by a crash; returns how many were repaired.

    Run once when fetchdata starts, before any fetch. Only claims whose owner is dead are
    touched (:mod:`mysimbdp.adapters.files.claims`): a live fetcher's (the CLI's, another
    process's) is its own, however long it takes. A file whose decision was recorded is
    moved where its record says, never scanned again. A claimed file with no record was being
    scanned when the platform stopped: it goes back to the inbox once (recorded, rule
    ``scan.interrupted``), and is rejected if the platform stops while scanning it again."""
    repaired = 0
    locks = platform.home.claims_dir
    for record in platform.meta.list_files(statuses=[FileStatus.RECEIVED]):
        staged, claimed = staged_path(platform, record), Path(record.path)
        taken = parse_claim(claimed.name)
        with dead_owner(locks, taken.owner if taken else "") as dead:
            if not dead:  # its fetcher lives and is between the record and the move: its own
                continue
            if not staged.exists() and claimed.exists():  # accepted: the move into staging was cut short
                filesystem.move(claimed, staged)
            if staged.exists():
                platform.meta.set_status(record.id, FileStatus.STAGED, {"reconciled": True}, path=str(staged))
            else:
                reason = f"tenant {record.tenant!r}: file {record.name!r}: fetch interrupted and the file is gone"
                platform.meta.set_status(record.id, FileStatus.REJECTED, {"reconciled": True}, reasons=[reason])
            repaired += 1
    for tenant in platform.home.tenants_with_inbox():
        for claimed in platform.home.area("inbox", tenant).glob(f"{CLAIM_PREFIX}*"):
            taken = parse_claim(claimed.name)
            assert taken is not None
            with dead_owner(locks, taken.owner) as dead:
                if dead and claimed.exists():  # a live owner's claim is being scanned: left alone
                    _undo_claim(platform, tenant, claimed, taken)
                    repaired += 1
        repaired += _remove_partial_outputs(platform, tenant)
    remove_dead_locks(locks)
    return repaired


def _undo_claim(platform: Platform, tenant: str, claimed: Path, taken: ClaimName) -> None:
    """Finish or undo the claim of a fetcher that died (its owner's lock is held meanwhile)."""
    decided = platform.meta.get_file(taken.file_id)
    if decided is not None and decided.status in (FileStatus.REJECTED, FileStatus.DUPLICATE):
        filesystem.move(claimed, Path(decided.path))  # decided: the move was cut short
    elif decided is not None and decided.status is not FileStatus.RECEIVED and Path(decided.path) != claimed:
        claimed.unlink()  # a compressed file whose plain copy was staged: spent, not fetched again
    elif decided is None and taken.original:
        try:
            _interrupted(platform, tenant, taken.file_id, claimed, taken.original)
        except TenantError:  # removed meanwhile: left in its inbox, as any file of an unknown tenant
            os.rename(claimed, claimed.with_name(taken.original))
    else:
        os.rename(claimed, claimed.with_name(taken.original or claimed.name.lstrip(".")))


def _remove_partial_outputs(platform: Platform, tenant: str) -> int:
    """Remove what a dead fetcher's decompression left in staging (``staging/<tenant>/<claim
    name>``, hidden): a partial output has no record (its claim went back to the inbox above,
    or was rejected), and a complete one with a record was staged by the first loop."""
    removed = 0
    staging = platform.home.area("staging", tenant)
    for partial in staging.glob(f"{CLAIM_PREFIX}*") if staging.is_dir() else ():
        taken = parse_claim(partial.name)
        with dead_owner(platform.home.claims_dir, taken.owner if taken else "") as dead:
            if dead and partial.exists():
                partial.unlink()
                log.warning("partial_output_removed", tenant=tenant, path=str(partial))
                removed += 1
    return removed


def _interrupted(platform: Platform, tenant: str, file_id: str, claimed: Path, name: str) -> None:
    """A claimed file without a record: the platform stopped (killed) during its scan."""
    earlier = platform.meta.latest_file_named(tenant, name, 0.0)
    again = earlier is not None and any(f"rule {SCAN_INTERRUPTED}:" in reason for reason in earlier.reasons)
    facts = unscanned_facts(name, claimed.stat().st_size)
    now = time.time()
    record = unscanned_record(file_id, tenant, facts, FileStatus.REJECTED, claimed, now)
    where = f"tenant {tenant!r}: file {name!r}: rule {SCAN_INTERRUPTED}: the platform stopped while scanning it"
    if earlier is not None and again:
        message = (
            f"{where}, for the second time (first as file {earlier.id}); it is not scanned again: "
            "check the file, then send it again"
        )
        _, profile = platform.tenant(tenant)
        quality = file_quality(file_id, tenant, now, facts, profile.quality.max_bad_row_ratio, [SCAN_INTERRUPTED])
        reject_file(
            platform,
            record,
            FileStatus.REJECTED,
            [message],
            facts,
            time.monotonic(),
            [SCAN_INTERRUPTED],
            quality=quality,
        )
        return
    message = f"{where}; it is scanned once more from the inbox"
    inbox_path = claimed.with_name(name)
    platform.meta.insert_file(
        dataclasses.replace(record, reasons=(message,), path=str(inbox_path)),
        {"reasons": [message], "rules": [SCAN_INTERRUPTED], "reconciled": True},
    )
    os.rename(claimed, inbox_path)
    log.warning("fetch_interrupted", tenant=tenant, file_id=file_id, file=name)
