"""mysimbdp-batchingestmanager: claims staged files and runs tenant apps on them, fairly.

A loop with ``run(stop)``: every tick it requeues files whose lease expired (their manager
died), picks runnable files with :func:`pick_files` within ``max_workers`` and each app's
concurrency, claims them under a lease it keeps renewing, and runs each as a task. A big
file (``big_files`` in the profile) is claimed without a slot: its task only queues and
watches the chunks, which the chunk workers run (``services.chunked``). A file staged
here (by fetchdata, an upload) wakes the loop through :meth:`wake`; one staged by another
process (the CLI's ``ingest --wait``) wakes it through inotify on the staging area. On stop
it takes no new file and waits up to ``drain_s`` for running apps, then kills them and
puts their files back in the queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
import uuid
from typing import Any

from mysimbdp.adapters.files.watch import wake_on_changes
from mysimbdp.domain.chunking import decide_chunking
from mysimbdp.domain.components import BATCH_MANAGER
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.ids import new_id
from mysimbdp.domain.profile import Profile
from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.scheduling import AppKey, pick_files
from mysimbdp.domain.states import FileStatus
from mysimbdp.errors import MysimbdpError
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.chunked import ChunkPublisher
from mysimbdp.services.run_batch import run_file
from mysimbdp.services.unpack import staged_size

log = get_logger("batchingestmanager")

COMPONENT = BATCH_MANAGER  # its heartbeat's name (domain/components.py)


class BatchIngestManager:
    def __init__(self, platform: Platform, *, drain_s: float = 30.0, publish: ChunkPublisher | None = None) -> None:
        self.platform = platform
        self.publish = publish  # where a big file's chunk tasks go (None: this process runs them)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.drain_s = drain_s
        self._tasks: dict[asyncio.Task[FileRecord], FileRecord] = {}
        self._watching: set[asyncio.Task[FileRecord]] = set()  # big files' tasks: chunks run elsewhere
        self._last_served: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._crashed: dict[str, str] = {}  # file id -> error: crashed runs not yet requeued

    def wake(self) -> None:
        """Look for work now (fetchdata calls this after staging a file)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.platform.settings
        log.info("manager_started", owner=self.owner, max_workers=settings.max_workers)
        last_renew = 0.0
        watcher = asyncio.create_task(wake_on_changes(self.platform.home.root / "staging", stop, self._wake))
        while not stop.is_set():
            now = time.time()
            try:
                self.platform.meta.beat(COMPONENT, self.owner)
                if now - last_renew >= settings.lease_ttl_s / 3:
                    self.platform.meta.renew_leases(self.owner, settings.lease_ttl_s)
                    last_renew = now
                self._requeue_expired(now)
                self._start_some(now)
            except MysimbdpError as exc:  # a store hiccup: log and try again next tick
                log.warning("manager_tick_failed", error=str(exc))
            await self._sleep(stop, settings.poll_interval_s)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await self._drain()
        self.platform.meta.clear_beat(COMPONENT, self.owner)
        log.info("manager_stopped", owner=self.owner)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
        ]
        waiters.extend(self._tasks)
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters[:2]:
            w.cancel()
        self._wake.clear()
        for task in [t for t in self._tasks if t.done()]:
            record = self._tasks.pop(task)
            self._watching.discard(task)
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error(
                    "run_crashed",
                    tenant=record.tenant,
                    file_id=record.id,
                    error=repr(exc),
                    exc_info=exc,
                )
                self._crashed[record.id] = repr(exc)
        self._requeue_crashed()

    def _requeue_crashed(self) -> None:
        """Put the files of crashed runs back in the queue; one the meta store cannot take now
        (a failover outlasting its reconnection) is tried again next time, never dropped."""
        for file_id, error in list(self._crashed.items()):
            try:
                self.platform.meta.set_status(file_id, FileStatus.STAGED, {"error": error}, lease_owner="")
            except MysimbdpError as exc:
                log.warning("run_requeue_failed", file_id=file_id, error=str(exc))
                return
            del self._crashed[file_id]

    def _requeue_expired(self, now: float) -> None:
        for record in self.platform.meta.expired_leases(now):
            if self.platform.meta.set_status(
                record.id,
                FileStatus.STAGED,
                {"requeued_from": record.lease_owner},
                expect=[FileStatus.RUNNING],
                lease_owner="",
            ):
                log.warning(
                    "lease_expired_requeued",
                    tenant=record.tenant,
                    file_id=record.id,
                    owner=record.lease_owner,
                )

    def _start_some(self, now: float) -> None:
        runnable = self.platform.meta.runnable(now)
        if not runnable:
            return
        profiles: dict[str, Profile] = {}
        concurrency: dict[AppKey, int] = {}
        for f in runnable:
            if f.tenant not in profiles:
                try:
                    profiles[f.tenant] = self.platform.tenant(f.tenant)[1]
                except MysimbdpError:
                    continue
                for app in profiles[f.tenant].batch_apps:
                    concurrency[(f.tenant, app.name)] = app.concurrency
        known = [f for f in runnable if f.tenant in profiles]
        # A big file's task only watches its chunks (the chunk workers run them): it takes
        # no run slot, so two big files never hold up everyone's small ones.
        big = {f.id for f in known if _chunked(f, profiles[f.tenant])}
        for f in known:
            if f.id in big:
                self._start(f, watching=True)
        free = self.platform.settings.max_workers - (len(self._tasks) - len(self._watching))
        if free <= 0:
            return
        running: dict[AppKey, int] = {}
        for task, record in self._tasks.items():
            if task not in self._watching:
                key = (record.tenant, record.app)
                running[key] = running.get(key, 0) + 1
        chosen = pick_files(
            [f for f in known if f.id not in big],
            free_slots=free,
            running=running,
            concurrency=concurrency,
            last_served=self._last_served,
        )
        for f in chosen:
            self._start(f, watching=False)

    def _start(self, f: FileRecord, *, watching: bool) -> None:
        run_id = new_id("r")
        if not self.platform.meta.claim(f.id, self.owner, self.platform.settings.lease_ttl_s, run_id):
            return
        self._last_served[f.tenant] = time.monotonic()
        task = asyncio.create_task(
            run_file(self.platform, dataclasses.replace(f, run_id=run_id), run_id, publish=self.publish)
        )
        self._tasks[task] = f
        if watching:
            self._watching.add(task)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        log.info("manager_draining", running=len(self._tasks), drain_s=self.drain_s)
        _, pending = await asyncio.wait(list(self._tasks), timeout=self.drain_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task, record in self._tasks.items():
            if task in pending:
                self.platform.meta.set_status(
                    record.id,
                    FileStatus.STAGED,
                    {"interrupted": "platform stopped"},
                    expect=[FileStatus.RUNNING],
                    lease_owner="",
                )
        self._tasks.clear()
        self._watching.clear()


def _chunked(f: FileRecord, profile: Profile) -> bool:
    """Whether ``run_file`` will ingest ``f`` in chunks (the same pure decision)."""
    return decide_chunking(staged_size(f), FileFormat(f.format), profile.big_files).chunked
