"""run_file: run a tenant's clientbatchingestapp on one claimed, staged file.

The app is a black box started through the one runner with the contract environment
(``services.app_run``). A big file goes to ``services.chunked`` instead, when the profile's
``big_files`` rules say so. The run's result and rejects are recorded; the file moves to
``archive/`` (ingested), ``failed/`` (permanent failure) or back to the queue with a backoff
(transient failure, exit 75).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from mysimbdp.adapters.files.writers import held_for_writing
from mysimbdp.domain.chunking import decide_chunking
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.records import FileRecord, RunRecord
from mysimbdp.domain.states import FileStatus, RunStatus
from mysimbdp.errors import StoreError, StoreUnavailable
from mysimbdp.formats.compression import plain_name
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.app_run import (
    AppRun,
    app_env,
    backoff_s,
    classify,
    finish_file,
    notify_outcome,
    record_run,
    run_app,
)
from mysimbdp.services.chunked import ChunkPublisher, ingest_chunked
from mysimbdp.services.generations import commit_generation, discard_generation
from mysimbdp.services.notify import excerpt
from mysimbdp.services.unpack import staged_size

log = get_logger("batchingestmanager")


async def run_file(
    platform: Platform, record: FileRecord, run_id: str, *, publish: ChunkPublisher | None = None
) -> FileRecord:
    """Run the app for ``record`` (already claimed under ``run_id``); return the new record.
    A file the profile's ``big_files`` rules call big is ingested in chunks: their tasks go
    to ``publish`` (the broker's work queue), or are run by this process when it is None."""
    tenant, profile = platform.tenant(record.tenant)
    app = profile.batch_app(record.app)
    run_dir = platform.home.run_dir(run_id)
    if app is None:
        message = f"tenant {record.tenant!r}: file {record.name!r}: app {record.app!r} is no longer in the profile"
        return finish_file(platform, record, FileStatus.FAILED, run_dir, reasons=[message])
    if changed := _changed_since_scan(record):
        message = f"tenant {record.tenant!r}: file {record.name!r}: rule changed_after_scan: {changed}; send it again"
        log.warning("file_changed_after_scan", tenant=record.tenant, file_id=record.id, file=record.name)
        return finish_file(platform, record, FileStatus.FAILED, run_dir, reasons=[message])
    decision = decide_chunking(staged_size(record), FileFormat(record.format), profile.big_files)
    if decision.chunked:
        return await ingest_chunked(platform, record, run_id, decision, publish=publish)
    attempt = record.attempts + 1
    platform.meta.start_run(RunRecord(run_id, record.id, record.tenant, app.name, attempt, time.time()))
    log.info(
        "run_started",
        tenant=record.tenant,
        file_id=record.id,
        run_id=run_id,
        app=app.name,
        attempt=attempt,
    )
    ran = await run_app(
        platform, tenant, app, record, run_id, app_env(platform, tenant, profile, record, run_id, run_dir)
    )
    return _after_run(platform, record, run_id, app.name, attempt, ran)


def _changed_since_scan(record: FileRecord) -> str:
    """Why the staged file of a file sent plain is no longer the bytes its scan read and its
    record describes (a writer that reopened it after the fetch), or "" when it is them."""
    path = Path(record.path)
    if plain_name(record.name) != record.name or not path.exists():  # a plain copy made here
        return ""
    if (size := path.stat().st_size) != record.size_bytes:
        return f"its staged file holds {size} bytes, its scan read {record.size_bytes}"
    return "a process holds its staged file open for writing" if held_for_writing(path) else ""


def _after_run(platform: Platform, record: FileRecord, run_id: str, app: str, attempt: int, ran: AppRun) -> FileRecord:
    outcome, started, error = ran.outcome, ran.started, ran.error
    rows_written, rows_rejected = ran.rows_written, ran.rows_rejected
    run_dir = platform.home.run_dir(run_id)
    run_status, again = classify(ran, attempt, platform.settings.max_attempts)
    if run_status is RunStatus.SUCCEEDED:
        status = FileStatus.INGESTED
        try:  # mode replace: the run commits here, its generation becomes the dataset
            commit_generation(platform, record)
        except StoreError as exc:
            again = isinstance(exc, StoreUnavailable) and attempt < platform.settings.max_attempts
            status = FileStatus.RETRY if again else FileStatus.FAILED
            error = f"the run succeeded but its rows could not replace dataset {record.dataset!r}: {exc}"
    else:
        status = FileStatus.RETRY if again else FileStatus.FAILED
    if status is FileStatus.FAILED:
        discard_generation(platform, record)
    ended = ran.ended
    record_run(platform, record, run_id, app, attempt, ran, run_status)
    log.info(
        "run_ended",
        tenant=record.tenant,
        file_id=record.id,
        run_id=run_id,
        status=str(run_status),
        outcome=outcome.describe(),
        rows_written=rows_written,
        rows_rejected=rows_rejected,
        seconds=round(ended - started, 3),
        peak_rss_bytes=outcome.peak_rss_bytes,
    )
    reasons = (
        [] if not error else [f"tenant {record.tenant!r}: file {record.name!r}: app {app!r} run {attempt}: {error}"]
    )
    if status is FileStatus.RETRY:
        delay = backoff_s(attempt, platform.settings.retry_base_s)
        platform.meta.set_status(
            record.id,
            FileStatus.RETRY,
            {"run_id": run_id, "error": error, "retry_in_s": round(delay, 2)},
            attempts=attempt,
            next_attempt_at=time.time() + delay,
            lease_owner="",
            reasons=reasons,
        )
        shutil.rmtree(run_dir, ignore_errors=True)
        updated = platform.meta.get_file(record.id)
        assert updated is not None
        return updated
    counts = {
        "rows_written": rows_written,
        "rows_rejected": rows_rejected,
        "rows_skipped": ran.rows_skipped,
    }
    finished = finish_file(platform, record, status, run_dir, reasons=reasons, attempts=attempt, **counts)
    facts = {"file": record.name, "file_id": record.id, "run_id": run_id, "app": app}
    failure = {
        "attempts": attempt,
        "exit_detail": outcome.describe(),
        "error": error,
        "stderr_tail": excerpt(outcome.stderr_tail),
    }
    notify_outcome(platform, record, status, facts, failure, rows_written=rows_written, rows_rejected=rows_rejected)
    return finished
