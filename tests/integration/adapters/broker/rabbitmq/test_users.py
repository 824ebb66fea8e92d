"""Per-tenant users on RabbitMQ (the machine's, in this run's vhost): a tenant's credentials
work on its own exchange and queues and are refused on another tenant's, shown with a plain
aio-pika client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aio_pika.exceptions
import pytest

from mysimbdp.adapters.broker import Broker, open_broker
from mysimbdp.adapters.broker.rabbitmq import RabbitUsers, dead_letter_queue, exchange_name, rabbit_user
from mysimbdp.errors import BrokerError
from tests.conftest import RABBITMQ_ADMIN_URL


@pytest.fixture
def tenants() -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    return f"a{run}", f"b{run}"


@pytest.fixture
async def users(rabbitmq_url: str, tmp_path: Path, tenants: tuple[str, str]) -> AsyncIterator[RabbitUsers]:
    users = RabbitUsers(rabbitmq_url, tmp_path, RABBITMQ_ADMIN_URL)
    for tenant in tenants:
        users.add_tenant(tenant)
    try:
        yield users
    finally:
        for tenant in tenants:
            users.remove_tenant(tenant)


@pytest.fixture
async def platform_broker(rabbitmq_url: str, tenants: tuple[str, str]) -> AsyncIterator[Broker]:
    broker = open_broker(rabbitmq_url)
    await broker.connect()
    try:
        for tenant in tenants:
            await broker.declare(tenant, "orders")
        yield broker
    finally:
        for tenant in tenants:
            await broker.delete(tenant, "orders")
        await broker.close()


async def test_a_tenant_publishes_and_consumes_its_own_stream(
    users: RabbitUsers, platform_broker: Broker, tenants: tuple[str, str]
) -> None:
    own, other = tenants
    url = users.tenant_url(own)
    assert url is not None and f"{rabbit_user(own)}:" in url and url.endswith(users.vhost.replace("/", "%2F"))
    tenant = open_broker(url, ack_wait_s=2.0)
    await tenant.connect()
    try:
        await tenant.publish(own, "orders", [b'{"id": "1", "data": {}}'], ["own-1"])
        got = await tenant.pull(own, "orders", "app", max_messages=10, timeout_s=2.0)
        assert [m.body for m in got] == [b'{"id": "1", "data": {}}']
        await tenant.ack(got)
        with pytest.raises(BrokerError, match="ACCESS_REFUSED"):  # its SDK connection cannot touch another's
            await tenant.pull(other, "orders", "app", max_messages=1, timeout_s=1.0)
    finally:
        await tenant.close()


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    return None


async def _refused(url: str, action: str, name: str) -> str:
    """What RabbitMQ answers a plain client of ``url`` doing ``action`` on ``name``."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        with pytest.raises(aio_pika.exceptions.ChannelClosed) as refused:
            if action == "publish":
                exchange = await channel.get_exchange(name, ensure=False)
                await exchange.publish(aio_pika.Message(b"{}"), routing_key=f"{name}.orders")
            elif action == "publish-default":
                await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=name)
            elif action == "consume":
                queue = await channel.get_queue(name, ensure=False)
                await queue.consume(_ignore)
            else:
                await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        return str(refused.value)
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("action", "target"),
    [
        ("publish", "exchange"),  # to the other tenant's exchange
        ("publish-default", "queue"),  # straight to its queue through the default exchange
        ("consume", "queue"),  # reading its messages
        ("consume", "dead"),  # reading its dead letters
        ("declare", "queue"),  # re-declaring (configure) its queue
    ],
)
async def test_another_tenants_resources_are_refused_to_a_real_client(
    users: RabbitUsers, platform_broker: Broker, tenants: tuple[str, str], action: str, target: str
) -> None:
    own, other = tenants
    url = users.tenant_url(own)
    assert url is not None
    name = {
        "exchange": exchange_name(other),
        "queue": f"{exchange_name(other)}.orders",
        "dead": dead_letter_queue(other),
    }[target]
    answer = await _refused(url, action, name)
    assert "ACCESS_REFUSED" in answer and rabbit_user(own) in answer
    assert await platform_broker.backlog(other, "orders", "app") == 0  # nothing got in


async def test_a_removed_tenant_cannot_log_in(rabbitmq_url: str, tmp_path: Path) -> None:
    users = RabbitUsers(rabbitmq_url, tmp_path, RABBITMQ_ADMIN_URL)
    tenant = f"g{uuid.uuid4().hex[:8]}"
    url = users.add_tenant(tenant)
    await (await aio_pika.connect(url)).close()  # logs in
    users.remove_tenant(tenant)
    assert users.tenant_url(tenant) is None
    with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(url)


def test_an_unreachable_management_api_is_named_with_the_remedy(rabbitmq_url: str, tmp_path: Path) -> None:
    users = RabbitUsers(rabbitmq_url, tmp_path, "http://guest:guest@127.0.0.1:1")
    with pytest.raises(BrokerError, match=r"tenant 'acme': RabbitMQ management API .*rabbitmq_management"):
        users.add_tenant("acme")
    assert users.tenant_url("acme") is None  # nothing half-made is handed out
