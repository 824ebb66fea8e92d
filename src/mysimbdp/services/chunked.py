"""Big files as micro-batches: split into line-aligned chunks (a Parquet file: ranges of row
groups) that workers ingest in parallel.

The batch ingest manager calls :func:`ingest_chunked` for a file the profile's ``big_files``
rules call big (``domain.chunking``). It plans the chunks once (``adapters.chunker``; a
re-claimed file keeps its plan), records the decision with its reason, and hands one task
per chunk to ``publish`` (the broker's work queue, taken by ``mysimbdp worker`` processes
and by the workers inside ``up``), or runs them itself when there is no broker (the CLI's
``ingest`` without a running platform). It then watches the chunks: a chunk whose worker
died (lease expired) or whose transient failure's backoff passed is queued again. The file
is ingested when every chunk is done, failed when one failed for good.

A chunk run is an ordinary run of the tenant's app on bytes ``[start, end)`` of the file
(``MYSIMBDP_INPUT_START/END/FIRST_LINE``). Line numbers are those of the whole file, so the
default record key (file sha256, line) is the same as in one run: a chunk run again after a
crash rewrites the same keys, and nothing is stored twice. A Parquet chunk's bytes hold whole
row groups and its rows are numbered as in the whole file (``formats.parquet``): the same holds.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import orjson

from mysimbdp import contract
from mysimbdp.adapters.metastore.chunks import FINAL_CHUNK_STATES, ChunkCounts, ChunkRecord, ChunkStatus
from mysimbdp.domain.chunking import ChunkDecision
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.ids import new_id
from mysimbdp.domain.profile import Profile
from mysimbdp.domain.records import FileRecord, RunRecord, TenantRecord
from mysimbdp.domain.states import FileStatus, RunStatus
from mysimbdp.errors import MysimbdpError, StoreError, StoreUnavailable
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.app_run import (
    AppRun,
    app_env,
    backoff_s,
    classify,
    finish_file,
    notify_outcome,
    read_json,
    record_run,
    run_app,
)
from mysimbdp.services.generations import commit_generation, discard_generation

log = get_logger("batchingestmanager")

CHUNK_TASK_GROUP = "workers"  # the broker group every chunk worker, local or behind the API, pulls tasks in
ChunkPublisher = Callable[[str, Sequence[ChunkRecord]], Awaitable[None]]  # (tenant, chunks to queue)
WATCH_S = 0.5  # how often the manager looks at a chunked file's chunks


async def ingest_chunked(
    platform: Platform,
    record: FileRecord,
    run_id: str,
    decision: ChunkDecision,
    *,
    publish: ChunkPublisher | None,
) -> FileRecord:
    """Ingest ``record`` (claimed under ``run_id``) chunk by chunk; return its final record."""
    chunks = platform.meta.chunks.of_file(record.id)
    if not chunks:
        # numpy (the planner's quote scan) only where a file is chunked: not at every CLI start
        from mysimbdp.adapters.files import chunker

        planned = await asyncio.to_thread(
            chunker.plan_chunks, Path(record.path), FileFormat(record.format), decision.chunk_bytes
        )
        platform.meta.chunks.plan(record.tenant, record.id, [(c.start, c.end, c.first_line) for c in planned])
        chunks = platform.meta.chunks.of_file(record.id)
    platform.meta.set_status(
        record.id,
        FileStatus.RUNNING,
        {"chunked": decision.reason, "chunks": len(chunks), "run_id": run_id},
        expect=[FileStatus.RUNNING],
    )
    log.info("file_chunked", tenant=record.tenant, file_id=record.id, chunks=len(chunks), reason=decision.reason)
    local = _LocalWorkers(platform) if publish is None else None
    queue = local.publish if local is not None else publish
    assert queue is not None
    try:
        await queue(record.tenant, [c for c in chunks if c.status is ChunkStatus.QUEUED])
        return await _watch(platform, record, run_id, queue)
    finally:
        if local is not None:
            await local.close()


async def _watch(platform: Platform, record: FileRecord, run_id: str, queue: ChunkPublisher) -> FileRecord:
    progress = platform.home.run_dir(run_id) / "progress.json"
    progress.parent.mkdir(parents=True, exist_ok=True)
    while True:
        if due := platform.meta.chunks.requeue_due(record.id, time.time()):
            log.warning("chunks_requeued", tenant=record.tenant, file_id=record.id, chunks=[c.index for c in due])
            _end_lost_runs(platform, [c for c in due if c.status is ChunkStatus.RUNNING])
            await queue(record.tenant, due)
        chunks = platform.meta.chunks.of_file(record.id)
        _write_progress(platform, chunks, progress)
        if all(c.status in FINAL_CHUNK_STATES for c in chunks):
            if any(c.status is ChunkStatus.FAILED for c in chunks):
                discard_generation(platform, record)
                return _finish(platform, record, run_id, chunks)
            try:  # mode replace: the file commits when its last chunk is done
                await asyncio.to_thread(commit_generation, platform, record)
            except StoreUnavailable as exc:  # the chunks' rows wait in the generation: try again
                log.warning("generation_swap_waits", tenant=record.tenant, file_id=record.id, error=str(exc))
                await asyncio.sleep(WATCH_S * 10)
                continue
            except StoreError as exc:
                discard_generation(platform, record)
                return _finish(platform, record, run_id, chunks, swap_error=str(exc))
            return _finish(platform, record, run_id, chunks)
        await asyncio.sleep(WATCH_S)


def _end_lost_runs(platform: Platform, lost: Sequence[ChunkRecord]) -> None:
    """The runs of chunks whose lease expired while running (their worker died, or lost the
    platform and never came back) end as transient, and a remote worker's claim of one as
    ``lease_expired``: nothing else would end them, and the chunk is queued again under a new
    run. A worker that comes back late finishes nothing: the chunk is under another run id
    (``ChunkRegistry.finish``)."""
    now = time.time()
    for chunk in lost:
        error = f"chunk {chunk.index}: the lease of worker {chunk.worker!r} expired; the chunk is queued again"
        platform.meta.runs.end_lost(chunk.run_id, now, error)
        platform.meta.worker_claims.end(chunk.run_id, "lease_expired")


def _write_progress(platform: Platform, chunks: Sequence[ChunkRecord], path: Path) -> None:
    """The file's progress (what ``ingest --wait`` shows): finished chunks plus what each
    running chunk's app last reported."""
    rows = bytes_done = 0
    for chunk in chunks:
        if chunk.status in FINAL_CHUNK_STATES:
            rows += chunk.rows_written + chunk.rows_rejected + chunk.rows_skipped
            bytes_done += chunk.end - chunk.start
        elif chunk.status is ChunkStatus.RUNNING and chunk.run_id:
            now = read_json(platform.home.run_dir(chunk.run_id) / "progress.json")
            rows += int(now.get("rows", 0))
            bytes_done += int(now.get("bytes", 0))
    tmp = path.with_name(".progress.json.tmp")
    done = sum(1 for c in chunks if c.status is ChunkStatus.DONE)
    tmp.write_bytes(orjson.dumps({"rows": rows, "bytes": bytes_done, "chunks": len(chunks), "chunks_done": done}))
    os.replace(tmp, path)


def _finish(
    platform: Platform, record: FileRecord, run_id: str, chunks: Sequence[ChunkRecord], *, swap_error: str = ""
) -> FileRecord:
    failed = [c for c in chunks if c.status is ChunkStatus.FAILED]
    status = FileStatus.FAILED if failed or swap_error else FileStatus.INGESTED
    unit = "row" if record.format == FileFormat.PARQUET else "line"
    reasons = [
        f"tenant {record.tenant!r}: file {record.name!r}: chunk {c.index + 1}/{len(chunks)} "
        f"(bytes {c.start}-{c.end}, from {unit} {c.first_line}), attempt {c.attempts}: {c.error}"
        for c in failed
    ]
    if swap_error:
        reasons.append(
            f"tenant {record.tenant!r}: file {record.name!r}: its chunks are done but their rows could not replace "
            f"dataset {record.dataset!r}: {swap_error}"
        )
    counts = {
        "rows_written": sum(c.rows_written for c in chunks),
        "rows_rejected": sum(c.rows_rejected for c in chunks),
        "rows_skipped": sum(c.rows_skipped for c in chunks),
    }
    run_dir = platform.home.run_dir(run_id)
    finished = finish_file(platform, record, status, run_dir, reasons=reasons, attempts=record.attempts + 1, **counts)
    log.info("file_chunks_finished", tenant=record.tenant, file_id=record.id, status=str(status), **counts)
    facts = {"file": record.name, "file_id": record.id, "run_id": run_id, "app": record.app}
    failure = {"attempts": max((c.attempts for c in failed), default=0), "error": "; ".join(reasons)}
    written, rejected = counts["rows_written"], counts["rows_rejected"]
    notify_outcome(platform, record, status, facts, failure, rows_written=written, rows_rejected=rejected)
    return finished


async def run_chunk_task(platform: Platform, tenant: str, file_id: str, index: int, worker: str) -> bool:
    """Run chunk ``index`` of ``file_id`` if it is queued (claiming it first); False when
    there was nothing to do (a duplicate task, a finished file, a task of another tenant)."""
    record = platform.meta.get_file(file_id)
    if record is None or record.tenant != tenant:
        log.warning("chunk_task_refused", tenant=tenant, file_id=file_id, chunk=index, why="no such file of the tenant")
        return False
    if record.status is not FileStatus.RUNNING:
        return False
    run_id = new_id("r")
    ttl_s = platform.settings.lease_ttl_s
    chunk = platform.meta.chunks.claim(file_id, index, worker, ttl_s, run_id)
    if chunk is None:
        return False
    renewer = asyncio.create_task(_renew(platform, worker, ttl_s))
    try:
        await _run_claimed(platform, record, chunk)
    finally:
        renewer.cancel()
        await asyncio.gather(renewer, return_exceptions=True)
    return True


async def _renew(platform: Platform, worker: str, ttl_s: float) -> None:
    while True:
        await asyncio.sleep(ttl_s / 3)
        try:
            platform.meta.chunks.renew(worker, ttl_s)
        except MysimbdpError as exc:  # a store hiccup: the next renewal may work
            log.warning("chunk_lease_renewal_failed", worker=worker, error=str(exc))


def chunk_env(
    platform: Platform, tenant: TenantRecord, profile: Profile, record: FileRecord, chunk: ChunkRecord, run_dir: Path
) -> dict[str, str]:
    """The contract environment of one run of ``chunk`` (bytes ``[start, end)`` of the file)."""
    env = app_env(platform, tenant, profile, record, chunk.run_id, run_dir)
    env[contract.INPUT_START] = str(chunk.start)
    env[contract.INPUT_END] = str(chunk.end)
    env[contract.INPUT_FIRST_LINE] = str(chunk.first_line)
    env[contract.PARALLELISM] = "1"  # the chunks are the parallelism
    return env


def start_chunk_run(platform: Platform, record: FileRecord, chunk: ChunkRecord, app: str) -> None:
    """Record the start of ``chunk``'s run (claimed, about to be started here or by a remote worker)."""
    platform.meta.start_run(RunRecord(chunk.run_id, record.id, record.tenant, app, chunk.attempts, time.time()))


def conclude_chunk(
    platform: Platform, record: FileRecord, chunk: ChunkRecord, app: str, ran: AppRun
) -> ChunkStatus | None:
    """Record how ``chunk``'s run ended (its run, its counts, a retry's backoff): the same for a
    chunk run here and one run by a remote worker (``services.remotework``). None: the chunk
    had been taken from this run meanwhile (its lease expired), which recorded nothing on it."""
    run_id, attempt, outcome = chunk.run_id, chunk.attempts, ran.outcome
    run_status, again = classify(ran, attempt, platform.settings.max_attempts)
    if run_status is RunStatus.SUCCEEDED:
        status = ChunkStatus.DONE
    else:
        status = ChunkStatus.RETRY if again else ChunkStatus.FAILED
    counts = ChunkCounts(ran.rows_written, ran.rows_rejected, ran.rows_skipped, ran.bytes_read)
    record_run(platform, record, run_id, app, attempt, ran, run_status)
    retry_at = time.time() + backoff_s(attempt, platform.settings.retry_base_s) if status is ChunkStatus.RETRY else 0.0
    held = platform.meta.chunks.finish(chunk, status, counts, error=ran.error, next_attempt_at=retry_at)
    if not held:
        log.warning("chunk_taken_over", tenant=record.tenant, file_id=record.id, chunk=chunk.index, run_id=run_id)
    log.info(
        "chunk_ended",
        tenant=record.tenant,
        file_id=record.id,
        chunk=chunk.index,
        run_id=run_id,
        status=str(status),
        outcome=outcome.describe(),
        rows_written=counts.rows_written,
        rows_rejected=counts.rows_rejected,
        seconds=round(ran.ended - ran.started, 3),
        peak_rss_bytes=outcome.peak_rss_bytes,
    )
    if status is ChunkStatus.DONE:
        shutil.rmtree(platform.home.run_dir(run_id), ignore_errors=True)
    return status if held else None


async def _run_claimed(platform: Platform, record: FileRecord, chunk: ChunkRecord) -> None:
    tenant, profile = platform.tenant(record.tenant)
    app = profile.batch_app(record.app)
    if app is None:
        error = f"app {record.app!r} is no longer in the profile"
        platform.meta.chunks.finish(chunk, ChunkStatus.FAILED, ChunkCounts(), error=error)
        return
    run_dir = platform.home.run_dir(chunk.run_id)
    env = chunk_env(platform, tenant, profile, record, chunk, run_dir)
    start_chunk_run(platform, record, chunk, app.name)
    ran = await run_app(platform, tenant, app, record, chunk.run_id, env)
    conclude_chunk(platform, record, chunk, app.name, ran)


class _LocalWorkers:
    """Runs queued chunks in this process (no broker): ``settings.workers`` at a time."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.owner = f"local:{new_id('w')}"
        self._slots = asyncio.Semaphore(max(1, platform.settings.workers))
        self._tasks: set[asyncio.Task[bool]] = set()

    async def publish(self, tenant: str, chunks: Sequence[ChunkRecord]) -> None:
        for chunk in chunks:
            task = asyncio.create_task(self._run(tenant, chunk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, tenant: str, chunk: ChunkRecord) -> bool:
        async with self._slots:
            return await run_chunk_task(self.platform, tenant, chunk.file_id, chunk.index, self.owner)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
