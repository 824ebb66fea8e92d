"""The stream side of the SDK: ``sdk.run_stream(transform)`` is a whole clientstreamingestapp.

The loop: pull a batch of broker messages, decode their envelopes, ``transform`` each
record, write the documents to the tenant's dataset keyed by envelope id (or the profile's
key fields) in one idempotent transaction, and only then ack the messages. So a crash at
any point redelivers what was not acked, and the store ends with each record once.

- A record whose transform raises (``Reject`` or any exception), a document the store
  refuses, and a broker message that is no valid JSON are quarantined with the reason
  (``$MYSIMBDP_REJECTS``, one JSON line each) and acked: one bad message never blocks the
  stream. A message that keeps failing for any other reason is quarantined once it has been
  delivered ``$MYSIMBDP_MAX_DELIVERIES`` times.
- The store or the broker being unavailable is transient: the batch is given back (nak)
  and the loop waits and tries again; nothing is marked bad.
- Every ``$MYSIMBDP_REPORT_PERIOD_S`` the instance publishes a report (messages, records,
  bytes, errors, average and p95 latency publish → committed, backlog; see
  ``docs/stream-reports.md``) to the tenant's ``mysimbdp_reports`` stream for the monitor.
- SIGTERM / SIGINT: the batch in hand is finished and acked, then the app exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, NoReturn

import orjson

from mysimbdp import contract
from mysimbdp._libc import keep_freed_memory
from mysimbdp.adapters.broker import DEFAULT_ACK_WAIT_S, REPORTS_STREAM, Broker, Message, open_broker
from mysimbdp.adapters.coredms import DocumentStore, KeyFieldMissing, open_store, record_keys
from mysimbdp.domain.envelope import Envelope, MessageInvalid, decode_batch
from mysimbdp.domain.scaling import Report
from mysimbdp.errors import AppContractError, BrokerUnavailable, StoreUnavailable
from mysimbdp.sdk._writer import write_finding_bad
from mysimbdp.sdk.batch import Reject

Transform = Callable[[dict[str, Any]], dict[str, Any] | None]

PULL_TIMEOUT_S = 1.0
RETRY_S = 1.0
RAW_LIMIT = 10 * 1024
REQUIRED = (
    contract.TENANT,
    contract.STREAM,
    contract.DATASET,
    contract.BROKER_URL,
    contract.COREDMS_URL,
    contract.REJECTS,
)


@dataclass(frozen=True, slots=True)
class StreamConfig:
    tenant: str
    stream: str
    dataset: str
    broker_url: str
    coredms_url: str
    rejects: Path
    group: str = "app"
    instance: str = ""
    batch_size: int = 100
    max_deliveries: int = 5
    ack_wait_s: float = DEFAULT_ACK_WAIT_S
    report_period_s: float = 5.0
    key_fields: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StreamConfig:
        problems = [f"{name} is not set" for name in REQUIRED if not env.get(name)]
        numbers: dict[str, int] = {}
        for name, default in ((contract.BATCH_SIZE, 100), (contract.MAX_DELIVERIES, 5)):
            try:
                numbers[name] = int(env.get(name) or default)
                if numbers[name] < 1:
                    raise ValueError(numbers[name])
            except ValueError:
                problems.append(f"{name}={env.get(name)!r} is not a positive integer")
        seconds: dict[str, float] = {}
        for name, fallback in ((contract.ACK_WAIT_S, DEFAULT_ACK_WAIT_S), (contract.REPORT_PERIOD_S, 5.0)):
            try:
                seconds[name] = float(env.get(name) or fallback)
                if seconds[name] <= 0:
                    raise ValueError(seconds[name])
            except ValueError:
                problems.append(f"{name}={env.get(name)!r} is not a positive number of seconds")
        if problems:
            raise AppContractError("stream app contract environment: " + "; ".join(problems))
        return cls(
            tenant=env[contract.TENANT],
            stream=env[contract.STREAM],
            dataset=env[contract.DATASET],
            broker_url=env[contract.BROKER_URL],
            coredms_url=env[contract.COREDMS_URL],
            rejects=Path(env[contract.REJECTS]),
            group=env.get(contract.GROUP) or "app",
            instance=env.get(contract.INSTANCE) or str(os.getpid()),
            batch_size=numbers[contract.BATCH_SIZE],
            max_deliveries=numbers[contract.MAX_DELIVERIES],
            ack_wait_s=seconds[contract.ACK_WAIT_S],
            report_period_s=seconds[contract.REPORT_PERIOD_S],
            key_fields=tuple(n.strip() for n in env.get(contract.KEY_FIELDS, "").split(",") if n.strip()),
        )


@dataclass
class StreamCounters:
    messages: int = 0  # broker messages handled (acked)
    records: int = 0  # records written (new or already stored)
    rejected: int = 0  # records and messages quarantined
    skipped: int = 0  # records the transform filtered out
    bytes: int = 0


class StreamContext:
    """One instance's consume → transform → write → ack loop, step by step."""

    def __init__(self, config: StreamConfig, broker: Broker, store: DocumentStore) -> None:
        self.config = config
        self.broker = broker
        self.store = store
        self.counters = StreamCounters()
        self._rejects: IO[bytes] | None = None
        self._period = StreamCounters()  # since the last report
        self._period_started = time.time()
        self._latencies_ms: list[float] = []  # publish -> committed, one per broker message
        self._sent_at: list[float] = []  # of the batch in hand

    def reject(self, what: str, raw: Any, reason: str) -> None:
        """Quarantine one record or message: ``{"id", "raw", "reason", "stream"}``."""
        self.counters.rejected += 1
        if self._rejects is None:
            self._rejects = open(self.config.rejects, "ab")  # noqa: SIM115 - closed in close()
        text = raw if isinstance(raw, str) else orjson.dumps(raw).decode()
        item = {"id": what, "stream": self.config.stream, "raw": text[:RAW_LIMIT], "reason": reason}
        self._rejects.write(orjson.dumps(item) + b"\n")
        self._rejects.flush()

    def close(self) -> None:
        if self._rejects is not None:
            self._rejects.close()
            self._rejects = None

    def documents(self, messages: list[Message], transform: Transform) -> list[tuple[Envelope, dict[str, Any]]]:
        """Decode and transform; quarantine what cannot be."""
        out: list[tuple[Envelope, dict[str, Any]]] = []
        for message in messages:
            self.counters.bytes += len(message.body)
            try:
                batch = decode_batch(message.body, message.msg_id or f"{self.config.stream}-{id(message)}")
                if batch.sent_at is not None:
                    self._sent_at.append(batch.sent_at)
            except MessageInvalid as exc:
                self.reject(message.msg_id or "?", message.body.decode("utf-8", "replace"), f"message {exc}")
                continue
            for envelope in batch.envelopes:
                try:
                    doc = transform(envelope.data)
                except Reject as exc:
                    self.reject(envelope.id, envelope.data, exc.reason)
                    continue
                except Exception as exc:
                    self.reject(envelope.id, envelope.data, f"transform raised {type(exc).__name__}: {exc}")
                    continue
                if doc is None:
                    self.counters.skipped += 1
                elif not isinstance(doc, dict):
                    self.reject(envelope.id, envelope.data, f"transform returned {type(doc).__name__}, not a dict")
                else:
                    out.append((envelope, doc))
        return out

    def write(self, pairs: list[tuple[Envelope, dict[str, Any]]]) -> None:
        """Store the documents (one transaction); a refused one is found by halving and quarantined."""
        rows: list[tuple[str, bytes]] = []
        origins: list[Envelope] = []
        for envelope, doc in pairs:
            try:
                key = record_keys([doc], self.config.key_fields, "", [0])[0] if self.config.key_fields else envelope.id
                rows.append((key, orjson.dumps(doc)))
                origins.append(envelope)
            except (KeyFieldMissing, TypeError) as exc:
                self.reject(envelope.id, envelope.data, f"document cannot be stored: {exc}")
        if rows:
            source = f"stream:{self.config.stream}"
            _, stored = write_finding_bad(self.store, self.config.dataset, source, rows, origins, self._refused)
            self.counters.records += stored

    def _refused(self, envelope: Envelope, reason: str) -> None:
        self.reject(envelope.id, envelope.data, reason)

    async def step(self, transform: Transform) -> int:
        """One batch: pull, transform, write, ack. Returns the number of messages handled."""
        cfg = self.config
        messages = await self.broker.pull(
            cfg.tenant, cfg.stream, cfg.group, max_messages=cfg.batch_size, timeout_s=PULL_TIMEOUT_S
        )
        if not messages:
            return 0
        worn = [m for m in messages if m.deliveries > cfg.max_deliveries]
        for message in worn:
            self.reject(message.msg_id or "?", message.body.decode("utf-8", "replace"), "delivered too often")
        fresh = [m for m in messages if m.deliveries <= cfg.max_deliveries]
        try:
            pairs = self.documents(fresh, transform)
            await asyncio.to_thread(self.write, pairs)
        except StoreUnavailable:
            await self.broker.nak(messages)
            raise
        await self.broker.ack(messages)
        committed = time.time()
        self._latencies_ms.extend((committed - sent) * 1000 for sent in self._sent_at)
        self._sent_at.clear()
        self.counters.messages += len(messages)
        return len(messages)

    async def report(self) -> Report:
        """This period's report, published to the monitor (``REPORTS_STREAM``); a broker
        hiccup loses one report, never data."""
        cfg, now, total = self.config, time.time(), self.counters
        done = StreamCounters(
            total.messages - self._period.messages,
            total.records - self._period.records,
            total.rejected - self._period.rejected,
            total.skipped - self._period.skipped,
            total.bytes - self._period.bytes,
        )
        latencies = sorted(self._latencies_ms)
        backlog = await self.broker.backlog(cfg.tenant, cfg.stream, cfg.group)
        report = Report(
            at=now,
            tenant=cfg.tenant,
            stream=cfg.stream,
            app=cfg.group,
            instance=cfg.instance,
            period_s=now - self._period_started,
            messages=done.messages,
            records=done.records,
            bytes=done.bytes,
            errors=done.rejected,
            latency_avg_ms=sum(latencies) / len(latencies) if latencies else 0.0,
            latency_p95_ms=latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0.0,
            backlog=backlog,
        )
        self._period = replace(total)
        self._period_started, self._latencies_ms = now, []
        body = orjson.dumps(report.to_json())
        await self.broker.publish(cfg.tenant, REPORTS_STREAM, [body], [f"{cfg.instance}-{now:.3f}"])
        return report


async def run_loop(config: StreamConfig, transform: Transform, stop: asyncio.Event) -> StreamCounters:
    """Consume until ``stop`` is set; transient outages are waited out."""
    broker = open_broker(config.broker_url, ack_wait_s=config.ack_wait_s)
    store: DocumentStore | None = None
    ctx: StreamContext | None = None
    next_report = 0.0
    try:
        while not stop.is_set():
            try:
                if store is None:
                    store = await asyncio.to_thread(open_store, config.coredms_url)
                if ctx is None:
                    await broker.connect()
                    ctx = StreamContext(config, broker, store)
                    next_report = time.monotonic() + config.report_period_s
                await ctx.step(transform)
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + config.report_period_s
                    await ctx.report()
            except (StoreUnavailable, BrokerUnavailable) as exc:
                sys.stderr.write(f"mysimbdp stream: {config.tenant}/{config.stream}: {exc}; retrying\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_S)
        return ctx.counters if ctx is not None else StreamCounters()
    finally:
        if ctx is not None:
            ctx.close()
        await broker.close()
        if store is not None:
            store.close()


def run_stream(transform: Transform) -> NoReturn:
    """Run a complete clientstreamingestapp around ``transform`` until SIGTERM / SIGINT."""
    keep_freed_memory()
    try:
        config = StreamConfig.from_env(os.environ)
    except AppContractError as exc:
        sys.stderr.write(f"mysimbdp stream: {exc}\n")
        sys.exit(65)

    async def main() -> StreamCounters:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_loop(config, transform, stop)

    started = time.monotonic()
    counters = asyncio.run(main())
    sys.stderr.write(
        f"mysimbdp stream: {config.tenant}/{config.stream} instance {config.instance}: {counters.messages} messages, "
        f"{counters.records} records written, {counters.rejected} quarantined, {counters.skipped} skipped "
        f"in {time.monotonic() - started:.1f} s\n"
    )
    sys.exit(0)
