"""Stream apps built on the SDK, run as real subprocesses under the contract: embedded NATS
JetStream and RabbitMQ, to SQLite and PostgreSQL. Each record lands once, bad ones are quarantined, a
killed instance loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from mysimbdp import contract
from mysimbdp.adapters.broker import Broker, open_broker
from mysimbdp.adapters.broker.nats import EmbeddedNats
from mysimbdp.adapters.coredms import open_admin, open_store
from mysimbdp.domain.envelope import Envelope, batch_id, encode_batch
from mysimbdp.errors import BrokerUnavailable
from tests.conftest import broker_url_for

APP = """
import time

from mysimbdp import sdk

def transform(data):
    if data.get("slow"):
        time.sleep(0.002)
    if data.get("bad"):
        raise sdk.Reject("bad is set")
    if data.get("skip"):
        return None
    return {**data, "seen": True}

if __name__ == "__main__":
    sdk.run_stream(transform)
"""


@pytest.fixture(params=["nats-embedded", "rabbitmq"])
def nats_url(request: pytest.FixtureRequest) -> str:
    """The broker's URL (embedded NATS JetStream, or the machine's RabbitMQ)."""
    return broker_url_for(request.param, request)


@pytest.fixture
def broker_url(nats_url: str) -> str:
    return nats_url


@pytest.fixture
def store_url(coredms_url: str, pg_prefix: str) -> Iterator[str]:
    admin = open_admin(coredms_url, pg_prefix=pg_prefix)
    try:
        yield admin.provision("acme")
    finally:
        admin.close()


def _start(
    tmp_path: Path,
    nats_url: str,
    store_url: str,
    stream: str,
    name: str = "app",
    batch: int = 20,
    tenant: str = "acme",
) -> subprocess.Popen[str]:
    app = tmp_path / "stream_app.py"
    app.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    env.update(
        {
            contract.TENANT: tenant,
            contract.STREAM: stream,
            contract.DATASET: stream,
            contract.BROKER_URL: nats_url,
            contract.COREDMS_URL: store_url,
            contract.REJECTS: str(tmp_path / f"rejects-{name}.jsonl"),
            contract.GROUP: "app",
            contract.INSTANCE: name,
            contract.BATCH_SIZE: str(batch),
            contract.ACK_WAIT_S: "2",
        }
    )
    return subprocess.Popen([sys.executable, str(app)], env=env, stderr=subprocess.PIPE, text=True)


async def _publish(broker: Broker, stream: str, ids: range, **extra: object) -> None:
    envelopes = [Envelope(f"e{n}", {"n": n, **extra}) for n in ids]
    await broker.publish("acme", stream, [encode_batch("acme", stream, envelopes)], [batch_id(envelopes)])


async def _wait_count(store_url: str, dataset: str, want: int, timeout_s: float = 30.0) -> int:
    store = open_store(store_url)
    try:
        deadline = time.monotonic() + timeout_s
        while (count := store.count(dataset)) < want and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return count
    finally:
        store.close()


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


async def test_records_land_once_and_bad_ones_are_quarantined(
    broker: Broker, nats_url: str, store_url: str, tmp_path: Path
) -> None:
    stream = f"s{os.getpid()}{int(time.time() * 1000) % 100000}"
    await broker.declare("acme", stream)
    await _publish(broker, stream, range(0, 50))
    await _publish(broker, stream, range(50, 52), bad=True)
    await _publish(broker, stream, range(52, 53), skip=True)
    await broker.publish("acme", stream, [b"{not json"], ["raw-1"])
    proc = _start(tmp_path, nats_url, store_url, stream)
    try:
        assert await _wait_count(store_url, stream, 50) == 50
        await _publish(broker, stream, range(0, 50))  # the same ids again (a new batch id: 2nd copy)
        await asyncio.sleep(2.0)
    finally:
        err = _stop(proc)
    assert "instance app:" in err and "3 quarantined" in err  # the exit summary
    store = open_store(store_url)
    try:
        assert store.count(stream) == 50
        docs = store.documents(stream, limit=100)
    finally:
        store.close()
    assert {d["n"] for d in docs} == set(range(50)) and all(d["seen"] for d in docs)
    rejects = [orjson.loads(line) for line in (tmp_path / "rejects-app.jsonl").read_bytes().splitlines()]
    reasons = sorted(r["reason"] for r in rejects)
    assert reasons[:2] == ["bad is set", "bad is set"]
    assert any(r["reason"].startswith("message not valid JSON") and r["raw"] == "{not json" for r in rejects)
    assert await broker.backlog("acme", stream, "app") == 0


async def test_a_killed_instance_loses_nothing(broker: Broker, nats_url: str, store_url: str, tmp_path: Path) -> None:
    stream = f"k{os.getpid()}{int(time.time() * 1000) % 100000}"
    await broker.declare("acme", stream)
    for start in range(0, 2000, 100):
        await _publish(broker, stream, range(start, start + 100), slow=True)
    first = _start(tmp_path, nats_url, store_url, stream, "first", batch=1)  # 100 records a step
    assert 200 <= await _wait_count(store_url, stream, 200) < 2000
    first.kill()  # SIGKILL mid-stream: its un-acked messages come back after ack_wait
    first.communicate(timeout=10)
    second = _start(tmp_path, nats_url, store_url, stream, "second")
    try:
        assert await _wait_count(store_url, stream, 2000, timeout_s=60) == 2000
    finally:
        _stop(second)
    store = open_store(store_url)
    try:
        assert len({d["n"] for d in store.documents(stream, limit=5000)}) == 2000
    finally:
        store.close()


async def test_a_broker_restart_loses_nothing(tmp_path: Path, coredms_url: str, pg_prefix: str) -> None:
    """The embedded broker stops and comes back (same port, same store) while a producer and
    an instance run: the instance reconnects, every confirmed record is stored once."""
    admin = open_admin(coredms_url, pg_prefix=pg_prefix)
    store_url = admin.provision("acme")
    server = EmbeddedNats(tmp_path / "broker")
    url = server.start()
    stream = f"r{os.getpid()}"
    producer = open_broker(url)
    await producer.connect()
    app = _start(tmp_path, url, store_url, stream, batch=1)
    try:
        await producer.declare("acme", stream)
        for start in range(0, 1000, 100):
            await _publish(producer, stream, range(start, start + 100), slow=True)
        await _wait_count(store_url, stream, 100)
        server.stop()  # mid-stream: the instance holds un-acked messages
        await asyncio.sleep(1.0)
        server.start()
        confirmed = 1000
        for attempt in range(50):  # the producer retries until the broker confirms again
            try:
                await _publish(producer, stream, range(1000, 1100))
                confirmed = 1100
                break
            except BrokerUnavailable:
                await asyncio.sleep(0.2 * (attempt + 1))
        assert confirmed == 1100
        assert await _wait_count(store_url, stream, 1100, timeout_s=60) == 1100
    finally:
        _stop(app)
        await producer.close()
        server.stop()
        admin.close()
    store = open_store(store_url)
    try:
        assert len({d["n"] for d in store.documents(stream, limit=5000)}) == 1100
    finally:
        store.close()
