"""``doctor`` on replicated nodes of its own test hosts (``tests/netns.py``, ``tests/clusters``):
a 3-node NATS JetStream cluster at replicas 3 is ok, and fails naming the node count and the
offline copy once a node is killed; the same on a 3-node RabbitMQ cluster with quorum queues;
a PostgreSQL primary with a synchronous standby is ok, and the same primary after its standby
was killed fails, saying that writes hang."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mysimbdp.adapters.broker import open_broker
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.doctor import Check, run_checks
from mysimbdp.settings import Settings
from tests import netns
from tests.clusters import postgres
from tests.clusters.nats import NatsCluster
from tests.clusters.postgres import STANDBY_NAME, PostgresCluster
from tests.clusters.rabbitmq import GROUP, RabbitCluster
from tests.helpers import until
from tests.netns import Network


async def _declare(url: str) -> None:
    """Tenant acme's stream ``readings``, made by the platform's broker at replicas 3."""
    broker = open_broker(url, replicas=3)
    await broker.connect()
    try:
        await broker.declare("acme", "readings")
    finally:
        await broker.close()


def _checks(home: Path, **settings: Any) -> dict[str, Check]:
    platform = Platform(Settings(home=home, **settings), {})
    try:
        return {c.name: c for c in run_checks(platform)}
    finally:
        platform.close()


def test_a_synchronous_standby_is_ok_and_its_loss_fails(home: Path) -> None:
    """Both hosts answer, the URL leads to the primary, the standby streams in sync: ok,
    each host's role named. The standby killed: the meta store warns naming the host that
    is down, and the replication check fails: synchronous_standby_names asks for a standby
    that is not there, so every commit waits."""
    postgres.require()
    with Network() as net, PostgresCluster(net) as pg:
        assert pg.primary is not None and pg.standby is not None
        primary, standby = f"{pg.primary.address}:5432", f"{pg.standby.address}:5432"
        url = pg.url()
        checks = _checks(home, meta_url=url, coredms_url=url)
        replication = checks["store replication"]
        assert replication.state == "ok", replication
        assert f"{primary} primary, {standby} standby" in replication.detail
        assert f"primary, synchronous standby {STANDBY_NAME!r} streaming sync" in replication.detail
        (server,) = replication.data["postgresql"]
        assert server["primary"] is True and server["synchronous_standby_names"] == f"FIRST 1 ({STANDBY_NAME})"
        assert [(s["application_name"], s["state"], s["sync_state"]) for s in server["standbys"]] == [
            (STANDBY_NAME, "streaming", "sync")
        ]
        assert checks["meta store"].state == "ok" and checks["coredms"].state == "ok"
        assert f"hosts: {primary} answers, {standby} answers" in checks["meta store"].detail

        pg.standby.kill()
        after = until(
            lambda: (
                (found := _checks(home, meta_url=url, coredms_url=url))["store replication"].state == "fail" and found
            ),
            timeout_s=60,
            what="doctor to see the standby gone",
        )
        for name in ("meta store", "coredms"):  # the schema is there: opening it writes nothing
            assert after[name].state == "warn", after[name]
            assert f"hosts: {primary} answers, {standby} does not answer" in after[name].detail
        failed = after["store replication"]
        assert f"{primary} primary, {standby} unreachable" in failed.detail, failed
        assert (
            f"synchronous_standby_names='FIRST 1 ({STANDBY_NAME})' but no standby connected: "
            "every commit waits (writes hang)"
        ) in failed.detail
        assert failed.data["postgresql"][0]["standbys"] == []


def test_a_3_node_nats_cluster_at_replicas_3_is_ok_and_a_lost_node_fails(home: Path, tmp_path: Path) -> None:
    """Three nodes up, the meta leader known, a tenant's stream with 3 current copies: ok.
    A follower of that stream killed: the broker check warns naming its host, and the
    replicas check fails naming the node count (2 < 3) and, once the stream's leader has
    missed it (seconds), the copy on that node as not current or offline."""
    netns.require()
    with Network() as net, NatsCluster(net, tmp_path / "nats") as nats:
        url = nats.url()
        asyncio.run(_declare(url))
        until(lambda: nats.stream_current("MYSIMBDP_acme"), timeout_s=60, what="3 current copies of the stream")
        checks = _checks(home, broker_url=url, broker_replicas=3)
        replicas = checks["broker replicas"]
        assert replicas.state == "ok", replicas
        assert "cluster 'mysimbdp' of 3 node(s) up, meta leader n" in replicas.detail
        assert "of 3 (:8222/jsz)" in replicas.detail and "1 platform stream(s): every copy current" in replicas.detail
        assert replicas.data["nodes"] == 3 and replicas.data["meta_cluster"]["cluster_size"] == 3
        (stream,) = replicas.data["streams"]
        assert stream["name"] == "MYSIMBDP_acme" and stream["replicas"] == 3 and len(stream["peers"]) == 2
        assert checks["broker"].state == "ok", checks["broker"]

        follower = next(name for name in nats.nodes if name != nats.stream_leader("MYSIMBDP_acme"))
        nats.kill(follower)
        lost = f"{nats.nodes[follower].address}:4222"
        after = until(
            lambda: (
                (found := _checks(home, broker_url=url, broker_replicas=3))["broker replicas"].state == "fail"
                and f"the copy on {follower} is " in found["broker replicas"].detail
                and found
            ),
            timeout_s=60,
            what=f"doctor to see {follower} gone",
        )
        failed = after["broker replicas"]
        assert any(
            f"the copy on {follower} is offline" in p or f"the copy on {follower} is not current" in p
            for p in failed.data["problems"]
        ), failed
        assert "2 node(s) < MYSIMBDP_BROKER_REPLICAS=3: streams cannot keep 3 copies" in failed.detail, failed
        assert f"{lost}: does not answer" in failed.detail
        assert after["broker"].state == "warn" and f"1 of 3 hosts do not answer: {lost}" in after["broker"].detail


@pytest.mark.slow  # on the shared 3-node RabbitMQ cluster
@pytest.mark.xdist_group(GROUP)
def test_a_3_node_rabbitmq_cluster_at_replicas_3_is_ok_and_a_lost_node_fails(
    home: Path, rabbit_cluster: RabbitCluster
) -> None:
    """Three running nodes and the tenant's quorum queues with 3 members online: ok. A node
    that is not the stream queue's leader killed: the check fails naming the node count
    (2 < 3), the node that is down and each queue's member on it as offline."""
    cluster = rabbit_cluster
    cluster.add_vhost("doctor")
    url = cluster.url("doctor")
    asyncio.run(_declare(url))
    checks = _checks(home, broker_url=url, broker_replicas=3)
    replicas = checks["broker replicas"]
    assert replicas.state == "ok", replicas
    assert "3 node(s) running" in replicas.detail and "platform queue(s) in 'doctor': every copy current" in (
        replicas.detail
    )
    queues = {q["name"]: q for q in replicas.data["queues"]}
    assert "mysimbdp.acme.readings" in queues, queues
    assert all(q["type"] == "quorum" and len(q["members"]) == 3 for q in queues.values()), queues
    assert "guest:guest" not in replicas.detail

    leader = cluster.queue("doctor", "mysimbdp.acme.readings")["leader"]
    lost = next(node for node in cluster.nodes if node.name != leader)
    lost.kill()
    failed = until(
        lambda: (
            (check := _checks(home, broker_url=url, broker_replicas=3)["broker replicas"]).state == "fail"
            and f"{lost.name}" in " ".join(check.data["stopped"])
            and check
        ),
        timeout_s=60,
        what=f"doctor to see {lost.name} gone",
    )
    assert "2 node(s) < MYSIMBDP_BROKER_REPLICAS=3" in failed.detail, failed
    assert f"1 down ({lost.name})" in failed.detail
    assert f"queue mysimbdp.acme.readings: its member {lost.name} is offline" in failed.data["problems"]
