"""The stream loop's write path (``StreamContext.step``) against real SQLite and PostgreSQL,
with an in-memory broker that records every ack and nak: records are written column-wise in
transactions of ``RECORDS_PER_WRITE``, each message acked only once its records are
committed, and a redelivered message changes nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from mysimbdp.adapters.broker import Message
from mysimbdp.adapters.coredms import DocumentStore, open_admin, open_store
from mysimbdp.domain.envelope import Envelope, encode_batch
from mysimbdp.errors import StoreUnavailable
from mysimbdp.sdk import stream_context as sdk_stream
from mysimbdp.sdk.batch import Reject
from mysimbdp.sdk.stream import StreamConfig, StreamContext


class FakeBroker:
    """Hands out the queued messages; on every ack, notes how many rows the store held."""

    url = "fake://"

    def __init__(self, store: DocumentStore, dataset: str) -> None:
        self.queue: list[Message] = []
        self.acked: list[tuple[Message, int]] = []  # (message, rows stored when it was acked)
        self.naked: list[Message] = []
        self._store, self._dataset = store, dataset

    async def pull(self, tenant: str, stream: str, group: str, *, max_messages: int, timeout_s: float) -> list[Message]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.queue and asyncio.get_running_loop().time() < deadline:  # as a broker's pull waits
            await asyncio.sleep(0.005)
        batch, self.queue = self.queue[:max_messages], self.queue[max_messages:]
        return batch

    async def ack(self, messages: Sequence[Message]) -> None:
        rows = self._store.count(self._dataset)
        self.acked.extend((m, rows) for m in messages)

    async def nak(self, messages: Sequence[Message]) -> None:
        self.naked.extend(messages)


def _message(first: int, count: int, deliveries: int = 1, **extra: Any) -> Message:
    envelopes = [Envelope(f"e{n}", {"n": n, **extra}) for n in range(first, first + count)]
    return Message(encode_batch("acme", "s", envelopes), deliveries, f"m{first}")


@pytest.fixture
def store(coredms_url: str, pg_prefix: str) -> Iterator[DocumentStore]:
    admin = open_admin(coredms_url, pg_prefix=pg_prefix)
    try:
        handle = open_store(admin.provision("acme"))
        try:
            yield handle
        finally:
            handle.close()
    finally:
        admin.close()


_OPEN: list[StreamContext] = []


@pytest.fixture(autouse=True)
async def _close_contexts() -> AsyncIterator[None]:
    yield
    while _OPEN:
        ctx = _OPEN.pop()
        await ctx.give_back()  # the pull ahead
        ctx.close()  # the rejects file


def _context(store: DocumentStore, tmp_path: Path) -> tuple[StreamContext, FakeBroker]:
    config = StreamConfig(
        tenant="acme",
        stream="s",
        dataset="s",
        broker_url="fake://",
        coredms_url="-",
        rejects=tmp_path / "rejects.jsonl",
        batch_size=500,
    )
    broker = FakeBroker(store, "s")
    _OPEN.append(StreamContext(config, broker, store))  # type: ignore[arg-type]
    return _OPEN[-1], broker


def _rejects(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "rejects.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


async def test_a_pull_is_written_in_bounded_transactions_each_acked_after_its_commit(
    store: DocumentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdk_stream, "RECORDS_PER_WRITE", 250)
    ctx, broker = _context(store, tmp_path)
    broker.queue = [_message(first, 100) for first in range(0, 1000, 100)]
    assert await ctx.step(lambda data: data) == 10
    assert store.count("s") == 1000 and ctx.counters.records == 1000 and ctx.counters.messages == 10
    # groups of 3 messages (300 records, the first to reach 250), then the last one alone;
    # each acked after its commit (the next group may be written meanwhile)
    acked = [(int(m.msg_id.removeprefix("m")), rows) for m, rows in broker.acked]
    assert [first for first, _ in acked] == list(range(0, 1000, 100))
    committed = [300] * 3 + [600] * 3 + [900] * 3 + [1000]  # rows through each message's group
    assert all(rows >= least for (_, rows), least in zip(acked, committed, strict=True))
    assert broker.naked == []


async def test_redelivered_messages_change_nothing(store: DocumentStore, tmp_path: Path) -> None:
    ctx, broker = _context(store, tmp_path)
    broker.queue = [_message(0, 100), _message(100, 100)]
    await ctx.step(lambda data: {**data, "seen": True})
    before = store.documents("s", limit=1000)
    broker.queue = [_message(0, 100, deliveries=2), _message(50, 100, deliveries=2)]  # again, and overlapping
    await ctx.step(lambda data: {**data, "seen": "twice"})
    assert store.count("s") == 200 and store.documents("s", limit=1000) == before
    assert len(broker.acked) == 4 and _rejects(tmp_path) == []


async def test_a_store_outage_naks_only_what_is_not_committed_and_a_retry_writes_it_once(
    store: DocumentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdk_stream, "RECORDS_PER_WRITE", 200)
    ctx, broker = _context(store, tmp_path)
    messages = [_message(first, 100) for first in range(0, 600, 100)]
    broker.queue = list(messages)
    real_write, calls = store.write, []

    def flaky(dataset: str, records: Sequence[tuple[str, bytes]], source: str, *mode: Any, **generation: Any) -> int:
        calls.append(len(records))
        if len(calls) == 2:
            raise StoreUnavailable("coredms: locked; retry later")
        return real_write(dataset, records, source, *mode, **generation)

    monkeypatch.setattr(store, "write", flaky)
    with pytest.raises(StoreUnavailable):
        await ctx.step(lambda data: data)
    assert [m for m, _ in broker.acked] == messages[:2] and broker.naked == messages[2:]
    assert store.count("s") == 200
    broker.queue = [Message(m.body, 2, m.msg_id) for m in messages[2:]]
    await ctx.step(lambda data: data)
    assert store.count("s") == 600 and sorted(int(d["n"]) for d in store.documents("s", limit=1000)) == list(range(600))


async def test_bad_records_are_quarantined_one_by_one_and_the_rest_stored(store: DocumentStore, tmp_path: Path) -> None:
    def transform(data: dict[str, Any]) -> Any:
        n = data["n"]
        if n == 1:
            raise Reject("one is rejected")
        if n == 2:
            raise ValueError("two is broken")
        if n == 3:
            return None
        if n == 4:
            return [n]
        if n == 5:
            return {"n": n, "set": {1, 2}}  # no JSON
        return data

    ctx, broker = _context(store, tmp_path)
    broker.queue = [_message(0, 10), Message(b"{not json", 1, "raw-1"), _message(10, 5, deliveries=9)]
    assert await ctx.step(transform) == 3
    assert sorted(int(d["n"]) for d in store.documents("s", limit=100)) == [0, 6, 7, 8, 9]
    reasons = {r["id"]: r["reason"] for r in _rejects(tmp_path)}
    assert reasons["e1"] == "one is rejected"
    assert reasons["e2"] == "transform raised ValueError: two is broken"
    assert reasons["e4"] == "transform returned list, not a dict"
    assert reasons["e5"].startswith("document cannot be stored")
    assert reasons["raw-1"].startswith("message not valid JSON") and reasons["m10"] == "delivered too often"
    assert "e3" not in reasons and ctx.counters.skipped == 1 and len(broker.acked) == 3


async def test_key_fields_key_the_documents_and_one_without_them_is_quarantined(
    store: DocumentStore, tmp_path: Path
) -> None:
    broker = FakeBroker(store, "s")
    config = StreamConfig(
        tenant="acme",
        stream="s",
        dataset="s",
        broker_url="fake://",
        coredms_url="-",
        rejects=tmp_path / "rejects.jsonl",
        key_fields=("k",),
    )
    ctx = StreamContext(config, broker, store)  # type: ignore[arg-type]
    _OPEN.append(ctx)
    broker.queue = [_message(0, 3, k="same"), _message(3, 1)]  # the last one has no "k"
    await ctx.step(lambda data: data)
    assert store.count("s") == 1
    assert [r["id"] for r in _rejects(tmp_path)] == ["e3"]


async def test_the_next_transaction_is_prepared_while_one_is_written(
    store: DocumentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the first transaction is being written (on a worker thread), the transform
    works on the second: each waits to see the other under way, and both are stored."""
    monkeypatch.setattr(sdk_stream, "RECORDS_PER_WRITE", 100)
    ctx, broker = _context(store, tmp_path)
    broker.queue = [_message(0, 100), _message(100, 100)]
    writing, second_seen = threading.Event(), threading.Event()
    real_write, seen_by_write, seen_by_transform = store.write, [], []

    def slow_first(
        dataset: str, records: Sequence[tuple[str, bytes]], source: str, *mode: Any, **generation: Any
    ) -> int:
        if not seen_by_write:
            writing.set()
            seen_by_write.append(second_seen.wait(10))
        return real_write(dataset, records, source, *mode, **generation)

    def transform(data: dict[str, Any]) -> dict[str, Any]:
        if data["n"] == 100:
            seen_by_transform.append(writing.wait(10))
            second_seen.set()
        return data

    monkeypatch.setattr(store, "write", slow_first)
    assert await ctx.step(transform) == 2
    assert seen_by_transform == [True] and seen_by_write == [True]
    assert store.count("s") == 200 and len(broker.acked) == 2


async def test_a_full_pull_starts_the_next_one_and_a_stop_gives_it_back(store: DocumentStore, tmp_path: Path) -> None:
    """After a pull, the next one is under way before the pull's last ack;
    the next step handles what it brought; at stop, what was pulled ahead and not handled
    goes back to the broker (nak), nothing of it written or acked."""
    ctx, broker = _context(store, tmp_path)
    ctx.config = replace(ctx.config, batch_size=2)
    events: list[str] = []
    real_pull, real_ack = broker.pull, broker.ack

    async def pull(*args: Any, **kwargs: Any) -> list[Message]:
        got = await real_pull(*args, **kwargs)
        events.append(f"pull {[m.msg_id for m in got]}")
        return got

    async def ack(messages: Sequence[Message]) -> None:
        events.append(f"ack {[m.msg_id for m in messages]}")
        await real_ack(messages)

    broker.pull, broker.ack = pull, ack  # type: ignore[method-assign]
    broker.queue = [_message(first, 10) for first in range(0, 60, 10)]
    assert await ctx.step(lambda data: data) == 2
    assert events == ["pull ['m0', 'm10']", "pull ['m20', 'm30']", "ack ['m0', 'm10']"]
    assert await ctx.step(lambda data: data) == 2  # the messages pulled ahead, and a pull ahead again
    assert events[3:] == ["pull ['m40', 'm50']", "ack ['m20', 'm30']"]
    await ctx.give_back()
    assert [m.msg_id for m in broker.naked] == ["m40", "m50"]
    assert store.count("s") == 40 and len(broker.acked) == 4
