"""One run of a tenant's clientbatchingestapp, as a black box: the pieces a whole-file run
(``services.run_batch``) and a chunk run (``services.chunked``) share.

The app is started through the one runner with the contract environment; afterwards its
result JSON is read and its rejects are copied into the meta store's quarantine.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mysimbdp import contract
from mysimbdp.adapters.files import home as filesystem
from mysimbdp.adapters.process import runner
from mysimbdp.adapters.process.sandbox import app_grant
from mysimbdp.domain.backoff import backoff_s as backoff
from mysimbdp.domain.notifications import NotifyEvent
from mysimbdp.domain.profile import BatchApp, Profile
from mysimbdp.domain.records import FileRecord, QuarantinedRow, RunRecord, TenantRecord
from mysimbdp.domain.states import EXIT_TEMPFAIL, FileStatus, RunStatus
from mysimbdp.logs import log_context
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.notify import notify

QUARANTINE_BATCH = 1000


def backoff_s(attempt: int, base_s: float) -> float:
    """A file run's wait after a transient failure: base, 2·base, 4·base … (±25 %)."""
    return backoff(attempt, base_s, jitter=0.25)


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def read_rejects(path: Path, record: FileRecord, run_id: str) -> Iterator[QuarantinedRow]:
    """The rows an app run rejected (its ``$MYSIMBDP_REJECTS`` file); an unreadable entry is
    itself quarantined, under a negative line number."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                item = orjson.loads(line)
                yield QuarantinedRow(
                    record.tenant,
                    record.id,
                    run_id,
                    int(item["line"]),
                    str(item.get("raw", "")),
                    str(item.get("reason", "")),
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                reason = f"unreadable reject entry {number} written by the app"
                yield QuarantinedRow(
                    record.tenant,
                    record.id,
                    run_id,
                    -number,
                    line.decode(errors="replace")[:10_000],
                    reason,
                )


def record_quarantine(platform: Platform, path: Path, record: FileRecord, run_id: str) -> int:
    """Copy the app's rejects file into the meta store's quarantine; return how many."""
    batch: list[QuarantinedRow] = []
    count = 0
    for row in read_rejects(path, record, run_id):
        batch.append(row)
        count += 1
        if len(batch) >= QUARANTINE_BATCH:
            platform.meta.add_quarantine(batch)
            batch = []
    platform.meta.add_quarantine(batch)
    return count


def app_env(
    platform: Platform,
    tenant: TenantRecord,
    profile: Profile,
    record: FileRecord,
    run_id: str,
    run_dir: Path,
    *,
    replay: bool = False,
) -> dict[str, str]:
    """The contract environment (``mysimbdp.contract``) for a run of ``record``'s app (a
    quarantine ``replay``: a dataset in mode replace is appended to, not replaced)."""
    write = profile.write_for(record.dataset)
    return {
        contract.TENANT: record.tenant,
        contract.RUN_ID: run_id,
        contract.FILE_ID: record.id,
        contract.INPUT: record.path,
        contract.INPUT_NAME: record.name,
        contract.INPUT_FORMAT: record.format,
        contract.INPUT_SHA256: record.sha256,
        contract.DATASET: record.dataset,
        contract.KEY_FIELDS: ",".join(profile.key_fields),
        contract.WRITE: (write.for_replay() if replay else write).to_json(),
        contract.QUALITY: profile.quality.model_dump_json(),
        contract.MAX_LINE_BYTES: str(profile.limits.max_line_length_bytes),
        contract.COREDMS_URL: tenant.coredms_url,
        contract.RESULT: str(run_dir / "result.json"),
        contract.REJECTS: str(run_dir / "rejects.jsonl"),
        contract.PROGRESS: str(run_dir / "progress.json"),
        contract.STORE_TIMEOUT_S: str(platform.settings.store_timeout_s),
        contract.PARALLELISM: str(platform.settings.app_parallelism),
        contract.PART_MIN_BYTES: str(platform.settings.app_part_min_bytes),
    }


@dataclass(frozen=True)
class AppRun:
    """What one run of the app left behind."""

    outcome: runner.Outcome
    result: dict[str, Any]
    quarantined: int
    started: float
    ended: float

    @property
    def rows_written(self) -> int:  # rows_stored counts rows already there from an interrupted earlier run too
        return int(self.result.get("rows_stored", self.result.get("rows_written", 0)))

    @property
    def rows_rejected(self) -> int:
        return int(self.result.get("rows_rejected", self.quarantined))

    @property
    def rows_skipped(self) -> int:
        return int(self.result.get("rows_skipped", 0))

    @property
    def bytes_read(self) -> int:
        return int(self.result.get("bytes_read", 0))

    @property
    def error(self) -> str:
        return "" if self.outcome.ok else str(self.result.get("error") or self.outcome.describe())


def classify(ran: AppRun, attempt: int, max_attempts: int) -> tuple[RunStatus, bool]:
    """The run's status, and whether to try again: a transient failure (exit 75, the store
    was unavailable) with attempts left."""
    if ran.outcome.ok:
        return RunStatus.SUCCEEDED, False
    if ran.outcome.exit_code == EXIT_TEMPFAIL:
        return RunStatus.TRANSIENT, attempt < max_attempts
    return RunStatus.FAILED, False


def record_run(
    platform: Platform,
    record: FileRecord,
    run_id: str,
    app: str,
    attempt: int,
    ran: AppRun,
    status: RunStatus,
    *,
    rows_written: int | None = None,
    error: str | None = None,
) -> None:
    """Write the finished run (timings, counts, peak memory, error, stderr tail); a caller
    that judges the run itself gives its own ``rows_written`` and ``error``."""
    outcome = ran.outcome
    platform.meta.finish_run(
        RunRecord(
            run_id,
            record.id,
            record.tenant,
            app,
            attempt,
            ran.started,
            status,
            ran.ended,
            outcome.exit_code,
            ran.rows_written if rows_written is None else rows_written,
            ran.rows_rejected,
            ran.bytes_read,
            outcome.peak_rss_bytes,
            ran.error if error is None else error,
            outcome.stderr_tail[-4000:],
        )
    )


async def run_app(
    platform: Platform, tenant: TenantRecord, app: BatchApp, record: FileRecord, run_id: str, env: dict[str, str]
) -> AppRun:
    """Run ``app`` with ``env`` in ``run_id``'s directory; collect its result and rejects."""
    run_dir = platform.home.run_dir(run_id)
    work = run_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    limits = runner.Limits(timeout_s=app.timeout_s, memory_bytes=app.memory_mb * 1024 * 1024, cpu_s=app.cpu_s)
    grant = app_grant(
        record.tenant,
        platform.home.root,
        bundle=tenant.bundle_dir,
        inputs=[env[contract.INPUT]],
        writable=[run_dir],
        coredms_url=tenant.coredms_url,
        network=str(app.network),
    )
    with log_context(tenant=record.tenant, file_id=record.id, run_id=run_id):
        outcome = await runner.run(
            runner.app_argv(app.command, tenant.bundle_dir),
            env=runner.build_env(env, platform.env),
            cwd=work,
            limits=limits,
            sandbox=platform.sandbox(grant),
        )
    result = read_json(run_dir / "result.json")
    quarantined = record_quarantine(platform, run_dir / "rejects.jsonl", record, run_id)
    return AppRun(outcome, result, quarantined, started, time.time())


def finish_file(
    platform: Platform,
    record: FileRecord,
    status: FileStatus,
    run_dir: Path,
    *,
    reasons: list[str],
    **fields: Any,
) -> FileRecord:
    """Record the file's final state, then move it to ``archive/`` or ``failed/``."""
    area = "archive" if status is FileStatus.INGESTED else "failed"
    target = platform.home.area(area, record.tenant) / Path(record.path).name
    # Record first, then move: a crash in between leaves a file in staging whose record is
    # final (harmless, its rows are stored), never a running record without its input.
    platform.meta.set_status(
        record.id,
        status,
        {"reasons": reasons, **fields},
        path=str(target),
        lease_owner="",
        reasons=reasons,
        **fields,
    )
    if Path(record.path).exists():
        filesystem.move(Path(record.path), target)
    if status is FileStatus.INGESTED:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        shutil.rmtree(run_dir / "work", ignore_errors=True)
    updated = platform.meta.get_file(record.id)
    assert updated is not None
    return updated


def notify_outcome(
    platform: Platform,
    record: FileRecord,
    status: FileStatus,
    facts: dict[str, Any],
    failure: dict[str, Any],
    *,
    rows_written: int,
    rows_rejected: int,
) -> None:
    """The tenant's notifications about a file's end: ``run_failed`` (with ``failure``'s
    details) when it failed for good, ``quarantine_ratio_exceeded`` when rows were quarantined."""
    if status is FileStatus.FAILED:
        notify(platform, record.tenant, NotifyEvent.RUN_FAILED, **facts, **failure)
    rows_total = record.rows_total or rows_written + rows_rejected
    if status is FileStatus.INGESTED and rows_rejected > 0 and rows_total > 0:
        notify(
            platform,
            record.tenant,
            NotifyEvent.QUARANTINE_RATIO_EXCEEDED,
            scope="file",
            **facts,
            rows_total=rows_total,
            rows_quarantined=rows_rejected,
            ratio=round(rows_rejected / rows_total, 6),
        )
