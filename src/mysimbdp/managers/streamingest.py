"""mysimbdp-streamingestmanager: keeps each tenant stream's clientstreamingestapp instances
at their target count.

Targets live in the meta store (``stream start|stop`` set them; a stream's first message
through the API sets its app's ``min_instances``). Every tick the manager starts what is
missing and stops what is extra. An instance is a subprocess started by the one runner
(allow-listed environment, fresh working directory, rlimits, parent-death signal); it is
stopped with SIGTERM (it finishes and acks its batch) and, after a grace period, SIGKILL.
An instance that exits on its own is restarted with exponential backoff (1 s, 2 s, ... up
to 60 s); one that crashed ``CRASH_LOOP_RESTARTS`` times in a row is reported as a crash
loop (state ``crash_loop``, logged as an error, the tenant's webhooks notified once) and
keeps being retried at the longest backoff. Each instance's state is recorded for
``stream status``, and what it quarantined (its ``rejects.jsonl``) is copied into the meta
store's quarantine every tick, as ``file_id`` ``stream:<stream>:<instance>``, numbered by
entry (so a second read adds nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

from mysimbdp import contract
from mysimbdp.adapters.broker import Broker
from mysimbdp.adapters.process import runner
from mysimbdp.adapters.process.sandbox import Sandbox, app_grant
from mysimbdp.domain.backoff import backoff_s
from mysimbdp.domain.components import STREAM_MANAGER
from mysimbdp.domain.ids import new_id
from mysimbdp.domain.notifications import NotifyEvent
from mysimbdp.domain.profile import Profile, StreamApp
from mysimbdp.domain.records import QuarantinedRow, StreamInstance, StreamTarget
from mysimbdp.domain.sources import stream_source
from mysimbdp.errors import MysimbdpError
from mysimbdp.logs import get_logger, log_context
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.notify import excerpt, notify

log = get_logger("streamingestmanager")

COMPONENT = STREAM_MANAGER  # its heartbeat's name (domain/components.py)
MAX_BACKOFF_S = 60.0
CRASH_LOOP_RESTARTS = 5
STOP_GRACE_S = 10.0
FOREVER_S = 10 * 365 * 24 * 3600.0  # a stream app has no wall-clock timeout


@dataclass
class _Running:
    record: StreamInstance
    task: asyncio.Task[runner.Outcome] | None = None
    next_start_at: float = 0.0
    stopping: bool = False
    pids: list[int] = field(default_factory=list)
    rejects_read: tuple[int, int] = (0, 0)  # bytes and entries of rejects.jsonl already in the meta store


class StreamIngestManager:
    def __init__(self, platform: Platform, broker: Broker, tenant_broker_url: Callable[[str], str]) -> None:
        self.platform = platform
        self.broker = broker  # the platform's: declares a stream before its first instance starts
        self.tenant_broker_url = tenant_broker_url  # what the tenant's apps get (its own user)
        self._slots: dict[tuple[str, str, str], list[_Running]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        registry = self.platform.meta.streams
        registry.mark_all_stopped()
        log.info("stream_manager_started", broker=self.broker.url.split("@")[-1])
        while not stop.is_set():
            try:
                self.platform.meta.beat(COMPONENT, str(os.getpid()))
                self.reconcile(registry.targets())
            except MysimbdpError as exc:
                log.warning("stream_tick_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.platform.settings.poll_interval_s)
        await self.stop_all()
        log.info("stream_manager_stopped")

    # -- reconciling ------------------------------------------------------------------------
    def reconcile(self, targets: list[StreamTarget]) -> None:
        """Start missing instances, stop extra ones, restart exited ones when due."""
        wanted = {(t.tenant, t.stream, t.app): t.instances for t in targets}
        for key in set(self._slots) | set(wanted):
            slots = self._slots.setdefault(key, [])
            self._collect_exits(slots)
            for slot in slots:
                self._take_rejects(slot)
            active = [s for s in slots if not s.stopping]
            want = wanted.get(key, 0)
            for slot in active[want:]:
                self._stop(slot)
            for _ in range(want - len(active)):
                slots.append(self._new_slot(*key))
            now = time.monotonic()
            for slot in slots:
                if slot.task is None and not slot.stopping and now >= slot.next_start_at:
                    self._start(slot)
            self._slots[key] = [s for s in slots if not (s.stopping and (s.task is None or s.task.done()))]

    def _new_slot(self, tenant: str, stream: str, app: str) -> _Running:
        now = time.time()
        record = StreamInstance(new_id("i"), tenant, stream, app, "starting", 0, now, now, 0)
        return _Running(record)

    def _collect_exits(self, slots: list[_Running]) -> None:
        for slot in slots:
            if slot.task is None or not slot.task.done():
                continue
            task, slot.task = slot.task, None
            outcome = None if task.cancelled() or task.exception() else task.result()
            detail = outcome.describe() if outcome is not None else f"the runner failed: {task.exception()!r}"
            if slot.stopping:
                self._record(slot, "stopped", detail, outcome)
                continue
            restarts = slot.record.restarts + 1
            delay = backoff_s(restarts, 1.0, cap_s=MAX_BACKOFF_S)
            slot.next_start_at = time.monotonic() + delay
            state = "crash_loop" if restarts >= CRASH_LOOP_RESTARTS else "backoff"
            slot.record = replace(slot.record, restarts=restarts)
            self._record(slot, state, detail, outcome)
            event = log.error if state == "crash_loop" else log.warning
            event(
                "stream_instance_exited",
                tenant=slot.record.tenant,
                stream=slot.record.stream,
                instance=slot.record.id,
                detail=detail,
                restarts=restarts,
                restart_in_s=delay,
                state=state,
            )
            if restarts == CRASH_LOOP_RESTARTS:  # entering the crash loop, not each later restart
                notify(
                    self.platform,
                    slot.record.tenant,
                    NotifyEvent.APP_CRASH_LOOP,
                    instance=slot.record.id,
                    stream=slot.record.stream,
                    app=slot.record.app,
                    restarts=restarts,
                    exit_detail=detail,
                    stderr_tail=excerpt(slot.record.stderr_tail),
                )

    # -- starting and stopping --------------------------------------------------------------
    def _start(self, slot: _Running) -> None:
        rec = slot.record
        try:
            tenant, profile = self.platform.tenant(rec.tenant)
            app = next(a for a in profile.stream_apps if a.name == rec.app)
        except (MysimbdpError, StopIteration) as exc:
            slot.next_start_at = time.monotonic() + MAX_BACKOFF_S
            self._record(slot, "backoff", f"cannot start: {exc!r}", None)
            return
        argv = runner.app_argv(app.command, tenant.bundle_dir)
        workdir = self._workdir(rec)
        env = runner.build_env(self._contract(rec, app, profile, tenant.coredms_url, workdir), self.platform.env)
        limits = runner.Limits(timeout_s=FOREVER_S, memory_bytes=app.memory_mb * 1024 * 1024, grace_s=STOP_GRACE_S)
        grant = app_grant(
            rec.tenant,
            self.platform.home.root,
            bundle=tenant.bundle_dir,
            writable=[workdir],
            coredms_url=tenant.coredms_url,
            broker_url=env[contract.BROKER_URL],
            network=str(app.network),
        )
        sandbox = self.platform.sandbox(grant)

        def started(pid: int) -> None:
            slot.pids.append(pid)
            self._record(slot, "running", "", None, pid=pid)

        slot.task = asyncio.create_task(self._launch(rec, argv, env, workdir, limits, sandbox, started))
        log.info("stream_instance_starting", tenant=rec.tenant, stream=rec.stream, app=rec.app, instance=rec.id)

    async def _launch(
        self,
        rec: StreamInstance,
        argv: list[str],
        env: dict[str, str],
        workdir: Path,
        limits: runner.Limits,
        sandbox: Sandbox,
        started: Callable[[int], None],
    ) -> runner.Outcome:
        # The tenant's own user may use its stream, not create it: the platform does.
        await self.broker.declare(rec.tenant, rec.stream)
        with log_context(tenant=rec.tenant, stream=rec.stream, instance=rec.id):
            return await runner.run(argv, env=env, cwd=workdir, limits=limits, sandbox=sandbox, on_start=started)

    def _contract(
        self, rec: StreamInstance, app: StreamApp, profile: Profile, coredms_url: str, workdir: str | os.PathLike[str]
    ) -> dict[str, str]:
        quality = profile.quality.model_dump_json() if app.check_quality and profile.quality.rules else ""
        return {
            contract.TENANT: rec.tenant,
            contract.STREAM: rec.stream,
            contract.GROUP: rec.app,
            contract.INSTANCE: rec.id,
            contract.DATASET: app.dataset or rec.stream,
            contract.BROKER_URL: self.tenant_broker_url(rec.tenant),
            contract.COREDMS_URL: coredms_url,
            contract.REJECTS: str(os.path.join(workdir, "rejects.jsonl")),
            contract.BATCH_SIZE: str(app.batch_size),
            contract.MAX_DELIVERIES: str(app.max_deliveries),
            contract.REPORT_PERIOD_S: str(app.report_period_s),
            contract.KEY_FIELDS: ",".join(profile.key_fields),
            contract.WRITE: profile.write_for(app.dataset or rec.stream).to_json(),  # never replace (profile)
            contract.QUALITY: quality,  # "": the app checks no rules
            contract.STORE_TIMEOUT_S: str(self.platform.settings.store_timeout_s),
        }

    def _workdir(self, rec: StreamInstance) -> Path:
        return self.platform.home.root / "runs" / "streams" / rec.id

    def _take_rejects(self, slot: _Running) -> None:
        """Copy the instance's new complete ``rejects.jsonl`` entries into the meta store."""
        path = self._workdir(slot.record) / "rejects.jsonl"
        offset, entries = slot.rejects_read
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]
        if not complete:
            return
        lines = complete.splitlines()
        rec = slot.record
        rows = [_quarantined(rec, entries + n, line) for n, line in enumerate(lines, 1)]
        with contextlib.suppress(MysimbdpError):  # read again at the next tick
            self.platform.meta.add_quarantine(rows)
            slot.rejects_read = (offset + len(complete), entries + len(lines))

    def _stop(self, slot: _Running) -> None:
        slot.stopping = True
        if slot.task is None:
            self._record(slot, "stopped", "stopped before it started", None)
            return
        if slot.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(slot.pids[-1], signal.SIGTERM)  # it finishes and acks its batch
        asyncio.get_running_loop().call_later(STOP_GRACE_S, _cancel, slot.task)

    async def stop_all(self) -> None:
        """SIGTERM every instance, wait for them (SIGKILL after the grace period)."""
        tasks = []
        for slots in self._slots.values():
            for slot in slots:
                if slot.task is not None:
                    tasks.append(slot.task)
                    self._stop(slot)
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_S + 5)
        for slots in self._slots.values():
            self._collect_exits(slots)
            for slot in slots:
                self._take_rejects(slot)
        self._slots.clear()

    def _record(
        self, slot: _Running, state: str, detail: str, outcome: runner.Outcome | None, *, pid: int | None = None
    ) -> None:
        slot.record = replace(
            slot.record,
            state=state,
            pid=pid if pid is not None else (0 if state != "running" else slot.record.pid),
            updated_at=time.time(),
            exit_detail=detail,
            stderr_tail=outcome.stderr_tail[-4000:] if outcome is not None else slot.record.stderr_tail,
        )
        with contextlib.suppress(MysimbdpError):
            self.platform.meta.streams.record_instance(slot.record)


def _quarantined(rec: StreamInstance, number: int, line: bytes) -> QuarantinedRow:
    """One ``rejects.jsonl`` entry (``{"id", "stream", "raw", "reason"}``, see the SDK) as a quarantined row."""
    file_id = stream_source(rec.stream, rec.id)
    try:
        item = orjson.loads(line)
        reason = f"message {item['id']}: {item['reason']}"
        return QuarantinedRow(rec.tenant, file_id, rec.id, number, str(item.get("raw", "")), reason)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        reason = f"unreadable reject entry {number} written by instance {rec.id}"
        return QuarantinedRow(rec.tenant, file_id, rec.id, number, line.decode(errors="replace")[:10_000], reason)


def _cancel(task: asyncio.Task[runner.Outcome]) -> None:
    if not task.done():
        task.cancel()  # the runner kills the process group
