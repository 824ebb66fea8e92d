"""Chunk tasks over the broker: the batch manager publishes them, workers take them.

Each tenant has a platform stream ``mysimbdp_chunks`` (``CHUNKS_STREAM``) on the databroker;
a task is ``{"file_id": ..., "index": ...}``. A :class:`ChunkWorker` (``slots`` chunks at
once) looks in the meta store for tenants with queued chunks, pulls their tasks round-robin,
runs each through :func:`services.chunked.run_chunk_task` (which claims the chunk in the
meta store first) and acks it afterwards. ``up`` runs one with ``settings.workers`` slots;
``mysimbdp worker`` runs more, on this machine or others sharing the broker, the meta store
and the platform home. A worker killed mid-chunk leaves the task un-acked (the broker
delivers it again) and the chunk's lease to expire (the manager queues it again): either way
the chunk runs again, and its writes are idempotent.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Sequence

import orjson

from mysimbdp.adapters.broker import CHUNKS_STREAM, Broker, Message
from mysimbdp.adapters.metastore.chunks import ChunkRecord
from mysimbdp.errors import BrokerError, MysimbdpError
from mysimbdp.logs import get_logger, log_context
from mysimbdp.managers.slots import drain, wait_for_change
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.chunked import CHUNK_TASK_GROUP, run_chunk_task

log = get_logger("chunkworker")

GROUP = CHUNK_TASK_GROUP
IDLE_POLL_S = 0.25


class ChunkTasks:
    """Publishes chunk tasks (the batch manager's side)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._declared: set[str] = set()

    async def publish(self, tenant: str, chunks: Sequence[ChunkRecord]) -> None:
        if not chunks:
            return
        if tenant not in self._declared:
            await self.broker.declare(tenant, CHUNKS_STREAM)
            self._declared.add(tenant)
        bodies = [orjson.dumps({"file_id": c.file_id, "index": c.index}) for c in chunks]
        # the attempt in the id: a chunk queued again after its worker died is a new message
        ids = [f"{c.file_id}.{c.index}.{c.attempts}" for c in chunks]
        await self.broker.publish(tenant, CHUNKS_STREAM, bodies, ids)


class ChunkWorker:
    def __init__(self, platform: Platform, broker: Broker, *, slots: int, drain_s: float = 30.0) -> None:
        if slots < 1:
            raise ValueError(f"a chunk worker needs at least 1 slot, got {slots}")
        self.platform = platform
        self.broker = broker
        self.slots = slots
        self.drain_s = drain_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._running: set[asyncio.Task[None]] = set()
        self._turn = 0  # round-robin start among tenants

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker_started", owner=self.owner, slots=self.slots)
        while not stop.is_set():
            took = 0
            try:
                took = await self._take(self.slots - len(self._running))
            except MysimbdpError as exc:  # a store or broker hiccup: try again shortly
                log.warning("worker_tick_failed", owner=self.owner, error=str(exc))
            if took == 0 or len(self._running) >= self.slots:
                await wait_for_change(stop, self._running, IDLE_POLL_S)
        await drain(self._running, self.drain_s, owner=self.owner)
        log.info("worker_stopped", owner=self.owner)

    async def _take(self, free: int) -> int:
        if free <= 0:
            return 0
        tenants = self.platform.meta.chunks.tenants_with_queued()
        if not tenants:
            return 0
        self._turn = (self._turn + 1) % len(tenants)
        took = 0
        for tenant in tenants[self._turn :] + tenants[: self._turn]:
            if took >= free:
                break
            messages = await self.broker.pull(tenant, CHUNKS_STREAM, GROUP, max_messages=free - took, timeout_s=0.05)
            for message in messages:
                task = asyncio.create_task(self._handle(tenant, message))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            took += len(messages)
        return took

    async def _handle(self, tenant: str, message: Message) -> None:
        try:
            task = orjson.loads(message.body)
            file_id, index = str(task["file_id"]), int(task["index"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("chunk_task_unreadable", tenant=tenant, body=message.body[:200].decode(errors="replace"))
            await self._settle(message, ack=True)
            return
        started = time.monotonic()
        try:
            with log_context(tenant=tenant, file_id=file_id, chunk=str(index)):
                ran = await run_chunk_task(self.platform, tenant, file_id, index, self.owner)
        except Exception as exc:  # anything before or around the run: let the broker deliver it again
            log.error("chunk_task_crashed", tenant=tenant, file_id=file_id, chunk=index, error=repr(exc), exc_info=exc)
            await self._settle(message, ack=False)
            return
        await self._settle(message, ack=True)
        if ran:
            log.info(
                "chunk_task_done", tenant=tenant, file_id=file_id, chunk=index, s=round(time.monotonic() - started, 3)
            )

    async def _settle(self, message: Message, *, ack: bool) -> None:
        try:
            await (self.broker.ack([message]) if ack else self.broker.nak([message]))
        except BrokerError as exc:  # the broker will deliver it again; the chunk's state decides
            log.warning("chunk_task_settle_failed", error=str(exc))


async def serve_worker(platform: Platform, stop: asyncio.Event, *, slots: int) -> None:
    """``mysimbdp worker``: connect to the platform's broker and run chunks until ``stop``."""
    broker = platform.broker(platform.running_broker_url())
    await broker.connect()
    try:
        await ChunkWorker(platform, broker, slots=slots).run(stop)
    finally:
        await broker.close()
