"""The RabbitMQ backend on a 3-node cluster of the test's own (:mod:`tests.clusters.rabbitmq`):
``replicas`` 1 keeps the queues the platform has always declared (quorum, RabbitMQ's default
group size, no argument of ours), ``replicas`` 3 declares them with a group of 3 members; a
queue declared before with other arguments is refused with an error that names it, what
differs and the setting; a client at ``replicas`` 1 (a stream app) uses a queue of 3 members
as it is; a broker URL listing several nodes connects to the first that answers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from mysimbdp.adapters.broker import open_broker
from mysimbdp.adapters.broker.rabbitmq import dead_letter_queue
from mysimbdp.errors import BrokerError
from tests.clusters.rabbitmq import GROUP, RabbitCluster

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(GROUP)]  # on the shared 3-node RabbitMQ cluster


@pytest.fixture
def cluster(rabbit_cluster: RabbitCluster) -> RabbitCluster:
    return rabbit_cluster


@pytest.fixture
async def vhost(cluster: RabbitCluster) -> AsyncIterator[str]:
    name = f"quorum-{uuid.uuid4().hex[:8]}"
    cluster.add_vhost(name)
    yield name
    cluster.api("DELETE", f"/api/vhosts/{name}", missing_ok=True)


async def test_replicas_1_keeps_todays_queues(cluster: RabbitCluster, vhost: str) -> None:
    broker = open_broker(cluster.url(vhost), replicas=1)
    await broker.connect()
    try:
        await broker.declare("acme", "orders")
    finally:
        await broker.close()
    queue = cluster.queue(vhost, "mysimbdp.acme.orders")
    assert queue["type"] == "quorum"
    assert queue["arguments"] == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "mysimbdp.acme",
        "x-dead-letter-routing-key": "mysimbdp.acme._dead",
        "x-delivery-limit": 20,
    }
    assert cluster.queue(vhost, dead_letter_queue("acme"))["arguments"] == {"x-queue-type": "quorum"}


async def test_replicas_3_declares_quorum_queues_of_3_members(cluster: RabbitCluster, vhost: str) -> None:
    broker = open_broker(cluster.url(vhost), replicas=3)
    await broker.connect()
    try:
        await broker.declare("acme", "orders")
        await broker.declare("acme", "orders")  # declared again with the same arguments: accepted
    finally:
        await broker.close()
    nodes = {node.name for node in cluster.nodes}
    for name in ("mysimbdp.acme.orders", dead_letter_queue("acme")):
        queue = cluster.queue(vhost, name)
        assert queue["type"] == "quorum"
        assert queue["arguments"]["x-quorum-initial-group-size"] == 3
        assert set(queue["members"]) == nodes and queue["leader"] in nodes


async def test_a_queue_of_other_arguments_is_refused_by_name(cluster: RabbitCluster, vhost: str) -> None:
    """Queues made before at replicas 1 (no group size), and one made classic by hand."""
    old = open_broker(cluster.url(vhost), replicas=1)
    await old.connect()
    try:
        await old.declare("acme", "orders")  # and acme's dead-letter queue, declared first
    finally:
        await old.close()
    connection = await aio_pika.connect(cluster.nodes[0].url + f"/{vhost}")
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue("mysimbdp.beta.clicks", durable=True)  # classic
    broker = open_broker(cluster.url(vhost), replicas=3)
    await broker.connect()
    try:
        with pytest.raises(BrokerError) as refused:
            await broker.declare("acme", "orders")
        message = str(refused.value)
        assert "tenant 'acme', stream 'orders'" in message and "queue 'mysimbdp.acme._dead'" in message
        assert "inequivalent arg 'x-quorum-initial-group-size'" in message and "current is none" in message
        assert "MYSIMBDP_BROKER_REPLICAS=3" in message and "guest:guest" not in message
        with pytest.raises(BrokerError) as classic:
            await broker.declare("beta", "clicks")
        message = str(classic.value)
        assert "queue 'mysimbdp.beta.clicks'" in message and "MYSIMBDP_BROKER_REPLICAS=3" in message
        assert "a quorum queue of x-quorum-initial-group-size 3" in message  # what it must be
        assert "inequivalent arg 'x-dead-letter-exchange'" in message  # RabbitMQ names the first that differs
        await broker.declare("gamma", "views")  # the broker object is usable after a refusal
    finally:
        await broker.close()
    assert cluster.queue(vhost, "mysimbdp.gamma.views")["arguments"]["x-quorum-initial-group-size"] == 3


async def test_a_replicas_1_client_uses_a_queue_of_3_members_as_it_is(cluster: RabbitCluster, vhost: str) -> None:
    """What a stream app does: it does not know the platform's setting."""
    platform = open_broker(cluster.url(vhost), replicas=3)
    app = open_broker(cluster.url(vhost))
    await platform.connect()
    await app.connect()
    try:
        await platform.publish("acme", "orders", [b"one", b"two"], ["m1", "m2"])
        got = await app.pull("acme", "orders", "g", max_messages=10, timeout_s=10)
        got += await app.pull("acme", "orders", "g", max_messages=10, timeout_s=10) if len(got) < 2 else []
        assert sorted(m.body for m in got) == [b"one", b"two"]
        await app.ack(got)
        assert await app.backlog("acme", "orders", "g") == 0
    finally:
        await app.close()
        await platform.close()


async def test_a_url_of_several_nodes_connects_to_the_first_that_answers(cluster: RabbitCluster, vhost: str) -> None:
    url = f"amqp://guest:guest@127.0.0.1:1/{vhost}," + cluster.url(vhost)  # nothing listens on port 1
    broker = open_broker(url, replicas=3)
    await broker.connect()
    try:
        await broker.publish("acme", "orders", [b"x"], ["m1"])
        got = await broker.pull("acme", "orders", "g", max_messages=10, timeout_s=10)
        assert [(m.body, m.msg_id) for m in got] == [(b"x", "m1")]
        await broker.ack(got)
    finally:
        await broker.close()


def test_the_harness_started_3_clustered_nodes(cluster: RabbitCluster) -> None:
    running = {node["name"] for node in cluster.api("GET", "/api/nodes") if node["running"]}
    assert running == {node.name for node in cluster.nodes}
    print(f"3 RabbitMQ nodes started in {cluster.boot_s:.1f} s, clustered in {cluster.start_s:.1f} s")
