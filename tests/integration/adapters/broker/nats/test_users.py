"""Per-tenant users on the embedded broker: a tenant's credentials work on its own streams
and are refused on another tenant's, shown with a plain nats-py client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import nats
import nats.errors
import pytest

from mysimbdp.adapters.broker import Broker, open_broker
from mysimbdp.adapters.broker.nats import BrokerUsers, EmbeddedNats
from mysimbdp.errors import BrokerError


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerUsers]:
    broker_dir = tmp_path_factory.mktemp("broker")
    users = BrokerUsers(broker_dir)
    users.add_tenant("acme")
    with EmbeddedNats(broker_dir, port=users.port, config=users.write_config()):
        yield users


@pytest.fixture
async def platform_broker(users: BrokerUsers) -> AsyncIterator[Broker]:
    broker = open_broker(users.platform_url())
    await broker.connect()
    try:
        for tenant in ("acme", "other"):
            await broker.declare(tenant, "orders")
        yield broker
    finally:
        await broker.close()


async def _client(url: str, errors: list[Exception]) -> nats.NATS:
    parts = urlsplit(url)

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    return await nats.connect(
        urlunsplit(parts._replace(query="")),
        inbox_prefix=dict(parse_qsl(parts.query))["inbox"],
        error_cb=on_error,
        max_reconnect_attempts=1,
    )


async def test_a_tenant_publishes_and_consumes_its_own_stream(users: BrokerUsers, platform_broker: Broker) -> None:
    url = users.tenant_url("acme")
    assert url is not None and "t_acme:" in url and "inbox=_INBOX_acme" in url
    tenant = open_broker(url, ack_wait_s=2.0)
    await tenant.connect()
    try:
        await tenant.publish("acme", "orders", [b'{"id": "1", "data": {}}'], ["own-1"])
        got = await tenant.pull("acme", "orders", "app", max_messages=10, timeout_s=2.0)
        assert [m.body for m in got] == [b'{"id": "1", "data": {}}']
        await tenant.ack(got)
        with pytest.raises(BrokerError):  # its SDK connection cannot touch another tenant's stream
            await tenant.pull("other", "orders", "app", max_messages=1, timeout_s=1.0)
    finally:
        await tenant.close()


async def test_another_tenants_subjects_are_refused_to_a_real_client(
    users: BrokerUsers, platform_broker: Broker
) -> None:
    url = users.tenant_url("acme")
    assert url is not None
    errors: list[Exception] = []
    client = await _client(url, errors)
    try:
        js = client.jetstream()
        await js.publish("mysimbdp.acme.orders", b"{}")  # its own: acknowledged by JetStream
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await js.publish("mysimbdp.other.orders", b"{}", timeout=1.0)  # no PubAck: dropped
        await client.subscribe("mysimbdp.other.>")  # reading another tenant's traffic
        await client.flush()
        await asyncio.sleep(0.3)
    finally:
        await client.close()
    text = " ".join(str(e) for e in errors)
    assert 'publish to "mysimbdp.other.orders"' in text.lower() or "publish" in text.lower()
    assert "subscription to" in text.lower() and "mysimbdp.other.>" in text
    assert await platform_broker.backlog("other", "orders", "app") == 0  # nothing got in


def test_a_removed_tenant_has_no_user(tmp_path: Path) -> None:
    users = BrokerUsers(tmp_path)
    users.add_tenant("gone")
    users.remove_tenant("gone")
    assert users.tenant_url("gone") is None
    assert "t_gone" not in (tmp_path / "nats.conf").read_text()
