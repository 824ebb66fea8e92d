"""One stream app instance's consume → transform → write → ack steps (:class:`StreamContext`),
and its reports to the monitor; the loop around them is :mod:`mysimbdp.sdk.stream_loop`, the
whole contract :mod:`mysimbdp.sdk.stream`."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, Any, cast

import orjson

from mysimbdp.adapters.broker import REPORTS_STREAM, Broker, Message
from mysimbdp.adapters.coredms import DocumentStore
from mysimbdp.domain import exactjson
from mysimbdp.domain.envelope import MessageInvalid, decode_batch
from mysimbdp.domain.keys import record_keys
from mysimbdp.domain.quality import RowChecker, compile_rules
from mysimbdp.domain.qualitycounts import RuleTally
from mysimbdp.domain.scaling import LATENCY_BOUNDS_MS, Report
from mysimbdp.domain.sources import stream_source
from mysimbdp.errors import KeyFieldMissing, MysimbdpError, StoreUnavailable
from mysimbdp.sdk._writer import write_finding_bad
from mysimbdp.sdk.batch import Reject
from mysimbdp.sdk.stream_config import StreamConfig

__all__ = [
    "PULL_TIMEOUT_S",
    "RAW_LIMIT",
    "RECORDS_PER_WRITE",
    "Documents",
    "StreamContext",
    "StreamCounters",
    "Transform",
    "Written",
]

Transform = Callable[[dict[str, Any]], dict[str, Any] | None]

PULL_TIMEOUT_S = 1.0
RAW_LIMIT = 10 * 1024
RECORDS_PER_WRITE = 5_000  # a transaction; bounded, so each reuses the memory of the one before


@dataclass
class StreamCounters:
    messages: int = 0  # broker messages handled (acked)
    records: int = 0  # records written (new or already stored)
    rejected: int = 0  # records and messages quarantined
    skipped: int = 0  # records the transform filtered out
    bytes: int = 0


@dataclass
class Documents:
    """The batch in hand, column-wise: ``docs[i]`` is what the transform made of ``data[i]``,
    the record whose envelope id is ``ids[i]``."""

    ids: list[str]
    data: list[dict[str, Any]]
    docs: list[dict[str, Any]]
    sent_at: list[float] = field(default_factory=list)  # per broker message: when it was published


@dataclass
class Written:
    """What a write did: rows now stored, and the refused ones (``(index in the batch,
    reason)``), quarantined by the event loop's thread once the write is back."""

    stored: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Write:
    """A transaction being written: its messages, their documents, the write's future."""

    messages: list[Message]
    batch: Documents
    future: asyncio.Future[Written]


_REJECTED = object()  # marks a record already quarantined


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
        self._source = stream_source(config.stream)
        self._checker = compile_rules(config.quality_rules) if config.quality_rules else None
        self.quality = RuleTally()  # this period's records checked and failed per rule
        self._prefetch: asyncio.Future[list[Message]] | None = None  # the next pull, under way

    def reject(self, what: str, raw: Any, reason: str) -> None:
        """Quarantine one record or message: ``{"id", "raw", "reason", "stream"}``."""
        self.counters.rejected += 1
        if self._rejects is None:
            self._rejects = open(self.config.rejects, "ab")  # noqa: SIM115 - closed in close()
        text = raw if isinstance(raw, str) else exactjson.dumps(raw).decode()
        item = {"id": what, "stream": self.config.stream, "raw": text[:RAW_LIMIT], "reason": reason}
        self._rejects.write(orjson.dumps(item) + b"\n")
        self._rejects.flush()

    def close(self) -> None:
        if self._rejects is not None:
            self._rejects.close()
            self._rejects = None

    def documents(self, messages: list[Message], transform: Transform, out: Documents) -> None:
        """Decode, check and transform into ``out``, column by column; quarantine what cannot be."""
        checker = self._checker
        for message in messages:
            self.counters.bytes += len(message.body)
            try:
                batch = decode_batch(message.body, message.msg_id or f"{self.config.stream}-{id(message)}")
                sent = batch.sent_at if batch.sent_at is not None else message.published_at
                if sent is not None:  # the batch's own time, else the broker's
                    out.sent_at.append(sent)
            except MessageInvalid as exc:
                self.reject(message.msg_id or "?", message.body.decode("utf-8", "replace"), f"message {exc}")
                continue
            ids, data = batch.ids, batch.data
            if checker is not None:
                ids, data = self._passing(checker, ids, data)
            try:
                docs = list(map(transform, data))  # the usual case: no per-record bookkeeping
            except Exception:  # the record-by-record pass below quarantines it, with its reason
                self._transform_each(ids, data, transform, out)
                continue
            if set(map(type, docs)) == {dict}:
                out.ids += ids
                out.data += data
                out.docs += cast(list[dict[str, Any]], docs)
            else:  # some were filtered out (None) or are no dict
                self._keep_documents(ids, data, docs, out)

    def _passing(
        self, checker: RowChecker, ids: list[str], data: list[dict[str, Any]]
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """The records passing the profile's quality rules, checked as one column; the others
        are quarantined naming each rule they fail and its value, and counted per rule."""
        results = list(map(checker.check, data))
        if not any(results):  # the usual case: every record passes
            self.quality.add(len(data), ())
            return ids, data
        failing = [failures for failures in results if failures]
        self.quality.add(len(data), failing)
        kept_ids: list[str] = []
        kept_data: list[dict[str, Any]] = []
        for key, record, failures in zip(ids, data, results, strict=True):
            if failures:
                self.reject(key, record, "; ".join(f"rule {f.rule}: {f.message}" for f in failures))
            else:
                kept_ids.append(key)
                kept_data.append(record)
        return kept_ids, kept_data

    def _transform_each(self, ids: list[str], data: list[dict[str, Any]], transform: Transform, out: Documents) -> None:
        docs: list[Any] = []
        for key, record in zip(ids, data, strict=True):
            try:
                docs.append(transform(record))
            except Reject as exc:
                self.reject(key, record, exc.reason)
                docs.append(_REJECTED)
            except Exception as exc:
                self.reject(key, record, f"transform raised {type(exc).__name__}: {exc}")
                docs.append(_REJECTED)
        self._keep_documents(ids, data, docs, out)

    def _keep_documents(self, ids: list[str], data: list[dict[str, Any]], docs: list[Any], out: Documents) -> None:
        for key, record, doc in zip(ids, data, docs, strict=True):
            if doc is _REJECTED:
                continue
            if doc is None:
                self.counters.skipped += 1
            elif not isinstance(doc, dict):
                self.reject(key, record, f"transform returned {type(doc).__name__}, not a dict")
            else:
                out.ids.append(key)
                out.data.append(record)
                out.docs.append(doc)

    def _store_rows(self, rows: list[tuple[str, bytes]], origins: Sequence[int]) -> Written:
        """The write itself, on a worker thread: touches nothing but the store."""
        written = Written()
        if rows:
            _, written.stored = write_finding_bad(
                self.store,
                self.config.dataset,
                self._source,
                rows,
                origins,
                lambda i, why: written.refused.append((i, why)),
                self.config.write,
            )
        return written

    def _written(self, batch: Documents, written: Written) -> None:
        for i, reason in written.refused:
            self.reject(batch.ids[i], batch.data[i], reason)
        self.counters.records += written.stored

    def _rows(self, batch: Documents) -> tuple[list[tuple[str, bytes]], Sequence[int]]:
        """``(key, JSON)`` per document and where each came from in ``batch``; a document
        without its key fields, without the ``order_by`` field of a merge, or that is no
        JSON is quarantined."""
        spec = self.config.write
        lacking = {i for i, doc in enumerate(batch.docs) if spec.lacks_order_by(doc)} if spec.order_by else set()
        for i in sorted(lacking):
            self.reject(
                batch.ids[i], batch.data[i], spec.order_by_missing_reason(self.config.tenant, self.config.dataset)
            )
        try:  # the usual case, whole columns at once
            if lacking:
                raise TypeError  # one by one below, leaving those out
            keys = record_keys(batch.docs, self.config.key_fields, "", ()) if self.config.key_fields else batch.ids
            try:
                data = list(map(orjson.dumps, batch.docs))
            except TypeError:  # a Decimal or an integer beyond 64 bits: written digit for digit
                data = list(map(exactjson.dumps, batch.docs))
            return list(zip(keys, data, strict=True)), range(len(keys))
        except (KeyFieldMissing, TypeError):
            pass  # one by one below, to find which
        rows: list[tuple[str, bytes]] = []
        origins: list[int] = []
        for i, doc in enumerate(batch.docs):
            if i in lacking:
                continue
            try:
                key = record_keys([doc], self.config.key_fields, "", [0])[0] if self.config.key_fields else batch.ids[i]
                rows.append((key, exactjson.dumps(doc)))
                origins.append(i)
            except (KeyFieldMissing, TypeError) as exc:
                self.reject(batch.ids[i], batch.data[i], f"document cannot be stored: {exc}")
        return rows, origins

    async def step(self, transform: Transform) -> int:
        """One pull: transform, write and ack its messages, about ``RECORDS_PER_WRITE``
        records a transaction, each acked once committed. Returns the number of messages
        handled.

        The work overlaps: while one transaction is written (on a worker thread; SQLite and
        PostgreSQL run it without the GIL), the next is decoded and transformed, and the one
        before is acked; while the pull's last transaction is written, the next pull is
        already under way."""
        messages = await self._next_pull()
        if not messages:
            return 0
        loop = asyncio.get_running_loop()
        acked = prepared = 0
        writing: _Write | None = None
        try:
            while prepared < len(messages):
                group, batch = self._group(messages, prepared, transform)
                rows, origins = self._rows(batch)
                prepared += len(group)
                before, writing = writing, None
                if before is not None:  # the transaction before, written meanwhile
                    self._written(before.batch, await before.future)
                if prepared == len(messages):
                    self._prefetch = asyncio.ensure_future(self._pull())
                writing = _Write(group, batch, loop.run_in_executor(None, self._store_rows, rows, origins))
                if before is not None:
                    acked += await self._ack(before)
            last, writing = writing, None
            if last is not None:
                self._written(last.batch, await last.future)
                acked += await self._ack(last)
        except StoreUnavailable:
            await self.broker.nak(messages[acked:])
            raise
        finally:
            if writing is not None:  # an error elsewhere: let the write in flight end first
                with contextlib.suppress(Exception):
                    await writing.future
        return len(messages)

    async def _ack(self, write: _Write) -> int:
        """Ack a committed transaction's messages; returns how many."""
        await self.broker.ack(write.messages)
        self._committed(len(write.messages), write.batch)
        return len(write.messages)

    async def _pull(self) -> list[Message]:
        cfg = self.config
        return await self.broker.pull(
            cfg.tenant, cfg.stream, cfg.group, max_messages=cfg.batch_size, timeout_s=PULL_TIMEOUT_S
        )

    async def _next_pull(self) -> list[Message]:
        if self._prefetch is None:
            return await self._pull()
        prefetch, self._prefetch = self._prefetch, None
        return await prefetch

    async def give_back(self) -> None:
        """At stop: messages pulled ahead and not handled go back to the broker (nak), for
        another instance to take at once; a pull ahead still waiting is called off (what
        the broker sends it anyway is given back when the broker connection closes)."""
        if self._prefetch is not None:
            prefetch, self._prefetch = self._prefetch, None
            if not prefetch.done():
                prefetch.cancel()
            with contextlib.suppress(MysimbdpError, asyncio.CancelledError):
                await self.broker.nak(await prefetch)

    def _group(self, messages: list[Message], first: int, transform: Transform) -> tuple[list[Message], Documents]:
        """The messages from ``first`` on whose documents make one write (at least one
        message), quarantining what cannot be stored."""
        batch = Documents([], [], [])
        end = first
        while end < len(messages) and len(batch.ids) < RECORDS_PER_WRITE:
            message = messages[end]
            end += 1
            if message.deliveries > self.config.max_deliveries:
                self.reject(message.msg_id or "?", message.body.decode("utf-8", "replace"), "delivered too often")
            else:
                self.documents([message], transform, batch)
        return messages[first:end], batch

    def _committed(self, messages: int, batch: Documents) -> None:
        committed = time.time()
        self._latencies_ms.extend((committed - sent) * 1000 for sent in batch.sent_at)
        self.counters.messages += messages

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
        checked, failed, by_rule = self.quality.take()
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
            latency_p50_ms=latencies[(len(latencies) - 1) // 2] if latencies else 0.0,
            latency_n=len(latencies),
            latency_sum_ms=sum(latencies),
            latency_counts=tuple(bisect.bisect_right(latencies, bound) for bound in LATENCY_BOUNDS_MS),
            rows_checked=checked,
            rows_failed=failed,
            failed_by_rule=by_rule,
        )
        self._period = replace(total)
        self._period_started, self._latencies_ms = now, []
        body = orjson.dumps(report.to_json())
        await self.broker.publish(cfg.tenant, REPORTS_STREAM, [body], [f"{cfg.instance}-{now:.3f}"])
        return report
