"""run_file: run a tenant's clientbatchingestapp on one claimed, staged file.

The app is a black box started through the one runner with the contract environment. Its
result and rejects are recorded; the file moves to ``archive/`` (ingested), ``failed/``
(permanent failure) or back to the queue with a backoff (transient failure, exit 75).
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from mysimbdp import contract
from mysimbdp.adapters import filesystem, runner
from mysimbdp.domain.profile import NotifyEvent
from mysimbdp.domain.records import FileRecord, QuarantinedRow, RunRecord
from mysimbdp.domain.states import EXIT_TEMPFAIL, FileStatus, RunStatus
from mysimbdp.logs import get_logger, log_context
from mysimbdp.platform import Platform
from mysimbdp.services.notify import excerpt, notify

log = get_logger("batchingestmanager")

QUARANTINE_BATCH = 1000


def backoff_s(attempt: int, base_s: float) -> float:
    """Exponential backoff with jitter: base, 2·base, 4·base … (±25 %)."""
    return float(base_s * 2 ** (attempt - 1) * random.uniform(0.75, 1.25))  # noqa: S311


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _rejects(path: Path, record: FileRecord, run_id: str) -> Iterator[QuarantinedRow]:
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


def _record_quarantine(platform: Platform, rows: Iterator[QuarantinedRow]) -> int:
    batch: list[QuarantinedRow] = []
    count = 0
    for row in rows:
        batch.append(row)
        count += 1
        if len(batch) >= QUARANTINE_BATCH:
            platform.meta.add_quarantine(batch)
            batch = []
    platform.meta.add_quarantine(batch)
    return count


async def run_file(platform: Platform, record: FileRecord, run_id: str) -> FileRecord:
    """Run the app for ``record`` (already claimed under ``run_id``); return the new record."""
    tenant, profile = platform.tenant(record.tenant)
    app = next((a for a in profile.batch_apps if a.name == record.app), None)
    run_dir = platform.home.run_dir(run_id)
    work = run_dir / "work"
    if app is None:
        message = f"tenant {record.tenant!r}: file {record.name!r}: app {record.app!r} is no longer in the profile"
        return _finish(platform, record, FileStatus.FAILED, run_dir, reasons=[message])
    attempt = record.attempts + 1
    started = time.time()
    platform.meta.start_run(RunRecord(run_id, record.id, record.tenant, app.name, attempt, started))
    env = {
        contract.TENANT: record.tenant,
        contract.RUN_ID: run_id,
        contract.FILE_ID: record.id,
        contract.INPUT: record.path,
        contract.INPUT_NAME: record.name,
        contract.INPUT_FORMAT: record.format,
        contract.INPUT_SHA256: record.sha256,
        contract.DATASET: record.dataset,
        contract.KEY_FIELDS: ",".join(profile.key_fields),
        contract.QUALITY: profile.quality.model_dump_json(),
        contract.MAX_LINE_BYTES: str(profile.limits.max_line_length_bytes),
        contract.COREDMS_URL: tenant.coredms_url,
        contract.RESULT: str(run_dir / "result.json"),
        contract.REJECTS: str(run_dir / "rejects.jsonl"),
        contract.PROGRESS: str(run_dir / "progress.json"),
        contract.STORE_TIMEOUT_S: str(platform.settings.store_timeout_s),
        contract.PARALLELISM: str(platform.settings.app_parallelism),
    }
    limits = runner.Limits(timeout_s=app.timeout_s, memory_bytes=app.memory_mb * 1024 * 1024, cpu_s=app.cpu_s)
    log.info(
        "run_started",
        tenant=record.tenant,
        file_id=record.id,
        run_id=run_id,
        app=app.name,
        attempt=attempt,
    )
    work.mkdir(parents=True, exist_ok=True)
    with log_context(tenant=record.tenant, file_id=record.id, run_id=run_id):
        outcome = await runner.run(
            runner.app_argv(app.command, tenant.bundle_dir),
            env=runner.build_env(env, platform.env),
            cwd=work,
            limits=limits,
        )
    result = _read_json(run_dir / "result.json")
    quarantined = _record_quarantine(platform, _rejects(run_dir / "rejects.jsonl", record, run_id))
    # rows_stored counts rows already present from an interrupted earlier run too.
    rows_written = int(result.get("rows_stored", result.get("rows_written", 0)))
    rows_rejected = int(result.get("rows_rejected", quarantined))
    if outcome.ok:
        status, run_status, error = FileStatus.INGESTED, RunStatus.SUCCEEDED, ""
    elif outcome.exit_code == EXIT_TEMPFAIL:
        run_status, error = RunStatus.TRANSIENT, str(result.get("error") or outcome.describe())
        status = FileStatus.RETRY if attempt < platform.settings.max_attempts else FileStatus.FAILED
    else:
        status, run_status = FileStatus.FAILED, RunStatus.FAILED
        error = str(result.get("error") or outcome.describe())
    ended = time.time()
    platform.meta.finish_run(
        RunRecord(
            run_id,
            record.id,
            record.tenant,
            app.name,
            attempt,
            started,
            run_status,
            ended,
            outcome.exit_code,
            rows_written,
            rows_rejected,
            int(result.get("bytes_read", 0)),
            outcome.peak_rss_bytes,
            error,
            outcome.stderr_tail[-4000:],
        )
    )
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
        []
        if not error
        else [f"tenant {record.tenant!r}: file {record.name!r}: app {app.name!r} run {attempt}: {error}"]
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
        "rows_skipped": int(result.get("rows_skipped", 0)),
    }
    finished = _finish(platform, record, status, run_dir, reasons=reasons, attempts=attempt, **counts)
    facts = {"file": record.name, "file_id": record.id, "run_id": run_id, "app": app.name}
    if status is FileStatus.FAILED:  # for good: permanent, or the last transient attempt
        notify(
            platform,
            record.tenant,
            NotifyEvent.RUN_FAILED,
            **facts,
            attempts=attempt,
            exit_detail=outcome.describe(),
            error=error,
            stderr_tail=excerpt(outcome.stderr_tail),
        )
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
    return finished


def _finish(
    platform: Platform,
    record: FileRecord,
    status: FileStatus,
    run_dir: Path,
    *,
    reasons: list[str],
    **fields: Any,
) -> FileRecord:
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
