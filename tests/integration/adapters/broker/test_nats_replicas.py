"""The NATS backend's streams get ``num_replicas`` from ``Settings.broker_replicas``: 3 on a
3-node JetStream cluster (its consumers inherit it), a stream made with fewer scaled up; the
default 1 on the embedded single server, where a higher count is refused with the setting
named (a new stream) or left with a warning (a stream that exists)."""

from __future__ import annotations

import uuid
from pathlib import Path

import nats
import pytest
from structlog.testing import capture_logs

from mysimbdp.adapters.broker import open_broker
from mysimbdp.adapters.broker.nats import EmbeddedNats, stream_name
from mysimbdp.errors import BrokerError
from tests.clusters.nats import NatsCluster
from tests.netns import Network


async def _replicas(url: str, stream: str) -> tuple[int, int, int]:
    """The stream's configured replicas, its peers besides the leader, and its consumer's
    peers besides the leader (nats-py straight, not the adapter under test)."""
    nc = await nats.connect(url.split(","))
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        consumer = (await js.consumers_info(stream))[0]
        peers = len(info.cluster.replicas or []) if info.cluster else 0
        consumer_peers = len(consumer.cluster.replicas or []) if consumer.cluster else 0
        return info.config.num_replicas or 1, peers, consumer_peers
    finally:
        await nc.close()


async def test_streams_on_a_cluster_have_the_settings_replicas(tmp_path: Path) -> None:
    tenant, later = f"t{uuid.uuid4().hex[:8]}", f"u{uuid.uuid4().hex[:8]}"
    with Network() as net, NatsCluster(net, tmp_path) as cluster:
        url = cluster.url()
        broker = open_broker(url, replicas=3)
        await broker.connect()
        try:
            await broker.publish(tenant, "orders", [b"{}"], ["1"])  # declares the stream
            assert await broker.pull(tenant, "orders", "app", max_messages=1, timeout_s=5.0)
            assert await _replicas(url, stream_name(tenant)) == (3, 2, 2)  # the consumer follows the stream

            single = open_broker(url)  # replicas=1: what an older platform made
            await single.connect()
            try:
                await single.declare(later, "orders")
                await single.pull(later, "orders", "app", max_messages=1, timeout_s=0.1)
            finally:  # closed also on a failure: a connection left open fails a later test (a warning)
                await single.close()
            assert await _replicas(url, stream_name(later)) == (1, 0, 0)
            with capture_logs() as logs:
                await broker.declare(later, "orders")  # scaled up in place
            assert next(e for e in logs if e["event"] == "stream_replicas_raised")["wanted"] == 3
            # its new peers join in the background (~10 s here): the configured count is the setting's
            assert (await _replicas(url, stream_name(later)))[0] == 3

            too_many = open_broker(url, replicas=5)
            await too_many.connect()
            with pytest.raises(BrokerError, match=r"num_replicas 5 \(MYSIMBDP_BROKER_REPLICAS\)"):
                await too_many.declare(f"v{uuid.uuid4().hex[:8]}", "orders")
            await too_many.close()
        finally:
            await broker.close()


async def test_the_embedded_server_keeps_one_replica(tmp_path: Path) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    with EmbeddedNats(tmp_path / "broker") as server:
        broker = open_broker(server.url)  # the default, as Settings.broker_replicas 1
        await broker.connect()
        try:
            await broker.publish(tenant, "orders", [b"{}"], ["1"])
            assert await broker.pull(tenant, "orders", "app", max_messages=1, timeout_s=5.0)
            assert (await _replicas(server.url, stream_name(tenant)))[0] == 1

            three = open_broker(server.url, replicas=3)  # more copies than one server can keep
            await three.connect()
            with capture_logs() as logs:
                await three.declare(tenant, "orders")  # exists: left as it is, with a warning
            warned = [e for e in logs if e["event"] == "stream_replicas_below_setting"]
            assert warned and (warned[0]["stream"], warned[0]["replicas"], warned[0]["wanted"]) == (
                stream_name(tenant),
                1,
                3,
            )
            with pytest.raises(BrokerError, match=r"num_replicas 3 \(MYSIMBDP_BROKER_REPLICAS\)"):
                await three.declare(f"v{uuid.uuid4().hex[:8]}", "orders")  # new: refused, the setting named
            await three.close()
        finally:
            await broker.close()
