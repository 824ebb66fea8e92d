"""``mysimbdp worker --api URL``: a chunk worker on a machine without the platform home.

A :class:`RemoteChunkWorker` (``slots`` chunks at once) claims chunk tasks through the API's
worker routes with its worker token, fetches each chunk's byte ranges and its tenant's bundle
(checked by sha256; bundles cached per version), runs the app as a local chunk worker does
(``services.remoterun``) while renewing the chunk's lease and reporting its progress every
third of the lease, and sends the run's outcome, result and rejects, which the API records in
the chunk ledger (``services.remotework``).

Losing nothing: bytes or a bundle that fail their check are refused and the chunk is given back
at once (it runs again; nothing of it is recorded). A worker that loses the platform mid-chunk
stops renewing: the chunk's lease expires and the batch manager queues it again, and its finish,
if it comes late, is refused (the chunk is no longer its task's). A worker told its lease was
lost kills its run. A chunk run again writes the same record keys: nothing is stored twice.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from mysimbdp.adapters.workerapi import WorkerApi
from mysimbdp.domain.remotetask import RemoteTask
from mysimbdp.errors import ApiError, ChunkFetchRefused
from mysimbdp.logs import get_logger, log_context
from mysimbdp.managers.slots import drain, wait_for_change
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.remoterun import ensure_bundle, fetch_input, progress_of, run_chunk_app, worker_dir

__all__ = ["RemoteChunkWorker", "serve_remote_worker"]

log = get_logger("chunkworker")

IDLE_POLL_S = 0.5  # between claims when no chunk is waiting or the API cannot be reached
FINISH_ATTEMPTS = 5  # a finish that cannot reach the API is sent again, a second apart


class RemoteChunkWorker:
    def __init__(self, platform: Platform, api: WorkerApi, *, slots: int, drain_s: float = 30.0) -> None:
        if slots < 1:
            raise ValueError(f"a chunk worker needs at least 1 slot, got {slots}")
        self.platform, self.api, self.slots, self.drain_s = platform, api, slots, drain_s
        self.label = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker_started", api=self.api.url, worker=self.label, slots=self.slots)
        refused: ApiError | None = None
        while not stop.is_set():
            task: RemoteTask | None = None
            if len(self._running) < self.slots:
                try:
                    task = await self.api.claim(self.label)
                except ApiError as exc:
                    if exc.status == 401:  # an unknown or revoked token: no use asking again
                        log.error("worker_token_refused", worker=self.label, error=str(exc))
                        refused = exc
                        break
                    log.warning("worker_claim_failed", worker=self.label, error=str(exc))  # away: try again soon
                except ChunkFetchRefused as exc:
                    log.warning("worker_claim_failed", worker=self.label, error=str(exc))
            if task is not None:
                handler = asyncio.create_task(self._handle(task))
                self._running.add(handler)
                handler.add_done_callback(self._running.discard)
                continue
            await wait_for_change(stop, self._running, IDLE_POLL_S)
        await drain(self._running, self.drain_s, worker=self.label)
        log.info("worker_stopped", worker=self.label)
        if refused is not None:
            raise refused

    async def _handle(self, task: RemoteTask) -> None:
        run_dir = worker_dir(self.platform) / "runs" / task.task
        run_dir.mkdir(parents=True, exist_ok=True)
        me = asyncio.current_task()
        assert me is not None
        keeper = asyncio.create_task(self._keep_lease(task, run_dir, me))
        started = time.monotonic()
        try:
            with log_context(tenant=task.tenant, file_id=task.file_id, chunk=str(task.index), run_id=task.task):
                await self._run(task, run_dir)
            log.info("chunk_task_done", worker=self.label, task=task.task, s=round(time.monotonic() - started, 3))
        except ApiError as exc:  # the platform is away: the lease expires and the chunk runs again
            log.warning("chunk_platform_lost", worker=self.label, task=task.task, error=str(exc))
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            shutil.rmtree(run_dir, ignore_errors=True)

    async def _run(self, task: RemoteTask, run_dir: Path) -> None:
        input_path = run_dir / "input"
        try:
            try:
                bundle = await ensure_bundle(self.platform, self.api, task)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                raise ChunkFetchRefused(str(exc)) from exc  # the bundle changed since the claim: run it again
            await fetch_input(self.api, task, input_path)
            ran = await run_chunk_app(self.platform, task, bundle, input_path, run_dir)
        except ChunkFetchRefused as exc:
            log.error("chunk_fetch_refused", worker=self.label, task=task.task, error=str(exc))
            await self.api.give_back(task, str(exc))
            return
        input_path.unlink(missing_ok=True)
        for attempt in range(1, FINISH_ATTEMPTS + 1):
            try:
                outcome = await self.api.finish(task, ran.report())
                break
            except ApiError as exc:
                if exc.status or attempt == FINISH_ATTEMPTS:
                    raise
                await asyncio.sleep(1.0)
        log.info("chunk_recorded", worker=self.label, task=task.task, outcome=outcome, exit=ran.outcome.describe())

    async def _keep_lease(self, task: RemoteTask, run_dir: Path, handler: asyncio.Task[Any]) -> None:
        """Renew the chunk's lease (with its progress) every third of it; kill the run when the
        API says the chunk is no longer this task's."""
        while True:
            await asyncio.sleep(task.lease_ttl_s / 3)
            rows, bytes_read = progress_of(run_dir)
            try:
                held = await self.api.progress(task, rows, bytes_read)
            except ApiError as exc:  # a blip: the next renewal may work, else the lease expires
                log.warning("chunk_lease_renewal_failed", worker=self.label, task=task.task, error=str(exc))
                continue
            if not held:
                log.warning("chunk_lease_lost", worker=self.label, task=task.task, tenant=task.tenant)
                handler.cancel()
                return


async def serve_remote_worker(
    platform: Platform, stop: asyncio.Event, *, api_url: str, token: str, ca_cert: str | None, slots: int
) -> None:
    """Run chunks claimed through the API at ``api_url`` with ``token`` until ``stop``."""
    api = WorkerApi(api_url, token, ca_cert=ca_cert)
    try:
        await RemoteChunkWorker(platform, api, slots=slots).run(stop)
    finally:
        await api.close()
