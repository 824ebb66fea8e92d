"""``doctor``'s checks of a multi-machine node against the machine's single NATS, RabbitMQ and
PostgreSQL: one copy is a warning saying what a node loss costs, more replicas than the
broker has nodes is a failure naming the count, a store without a standby is a warning, and
each host of a multi-host URL is named with whether it answers (a free port stands for a
host that is down). The replicated side (a 3-node NATS cluster, a primary with a synchronous
standby) is tests/integration/services/test_doctor_clusters.py."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from mysimbdp.adapters.broker import open_broker
from mysimbdp.adapters.broker.nats import free_port
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.doctor import CONNECT_TIMEOUT_S, Check, run_checks
from mysimbdp.settings import Settings
from tests.conftest import RABBITMQ_ADMIN_URL, broker_url_for


def _checks(home: Path, api_url: str = "", **settings: Any) -> dict[str, Check]:
    platform = Platform(Settings(home=home, **settings), {})
    try:
        return {c.name: c for c in run_checks(platform, api_url)}
    finally:
        platform.close()


@pytest.fixture(params=["nats", "rabbitmq"])
def machine_broker(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    """(kind, URL, tenant) of the machine's broker with one platform stream declared on it
    (the tenant's, removed after the test)."""
    url = broker_url_for(str(request.param), request)
    tenant = f"d{uuid.uuid4().hex[:8]}"

    async def declare(remove: bool) -> None:
        broker = open_broker(url)
        await broker.connect()
        try:
            await (broker.delete(tenant, "readings") if remove else broker.declare(tenant, "readings"))
        finally:
            await broker.close()

    asyncio.run(declare(remove=False))
    try:
        yield str(request.param), url, tenant
    finally:
        asyncio.run(declare(remove=True))


def test_one_copy_warns_and_more_replicas_than_nodes_fails(home: Path, machine_broker: tuple[str, str, str]) -> None:
    """Replicas 1 on a broker of its own: a warning saying a node loss loses messages; 3 on
    the single node: a failure naming the node count and the stream that keeps one copy."""
    kind, url, tenant = machine_broker
    admin = {"broker_admin_url": RABBITMQ_ADMIN_URL} if kind == "rabbitmq" else {}
    one = _checks(home, broker_url=url, **admin)["broker replicas"]
    assert one.state == "warn", one
    assert "MYSIMBDP_BROKER_REPLICAS=1: one copy of each stream" in one.detail
    assert "losing the node that holds it loses its unconsumed messages" in one.detail
    assert one.data["nodes"] == 1 and one.data["problems"] == []
    three = _checks(home, broker_url=url, broker_replicas=3, **admin)["broker replicas"]
    assert three.state == "fail", three
    assert "1 node(s) < MYSIMBDP_BROKER_REPLICAS=3" in three.detail
    if kind == "nats":
        assert "1 node, not clustered" in three.detail
        ours = [s for s in three.data["streams"] if s["name"] == f"MYSIMBDP_{tenant}"]
        assert ours == [{"name": f"MYSIMBDP_{tenant}", "replicas": 1, "leader": ours[0]["leader"], "peers": []}]
        assert f"stream MYSIMBDP_{tenant} keeps 1 copy, MYSIMBDP_BROKER_REPLICAS=3" in " ".join(three.data["problems"])
    else:
        queue = f"mysimbdp.{tenant}.readings"
        ours = [q for q in three.data["queues"] if q["name"] == queue]
        assert len(ours) == 1 and ours[0]["type"] == "quorum" and len(ours[0]["members"]) == 1, three.data
        assert f"queue {queue} has 1 member(s), MYSIMBDP_BROKER_REPLICAS=3" in three.data["problems"]
    assert "guest:guest" not in three.detail and "guest:guest" not in one.detail


def test_the_embedded_broker_is_one_machine_said_plainly(home: Path) -> None:
    """No broker URL: one copy is the embedded default (ok); replicas 3 cannot be had from it."""
    plain = _checks(home)["broker replicas"]
    assert plain.state == "ok" and plain.detail.startswith("embedded NATS: single machine, one copy"), plain
    more = _checks(home, broker_replicas=3)["broker replicas"]
    assert more.state == "fail" and "the embedded NATS is one node on this machine" in more.detail, more
    assert "MYSIMBDP_BROKER_URL" in more.detail


def test_postgresql_without_a_standby_warns(home: Path, postgres_admin_url: str) -> None:
    """The machine's PostgreSQL is a primary with no standby: a warning saying a primary
    loss loses committed data; SQLite beside it is one machine, no replication, ok."""
    check = _checks(home, meta_url=postgres_admin_url, coredms_url=postgres_admin_url)["store replication"]
    assert check.state == "warn", check
    assert "meta store and coredms (PostgreSQL" in check.detail
    assert "primary, no standby: a primary loss loses committed data / needs restore" in check.detail
    (server,) = check.data["postgresql"]
    assert server["primary"] is True and server["standbys"] == [] and server["synchronous_standby_names"] == ""
    mixed = _checks(home, coredms_url=postgres_admin_url)["store replication"]
    assert mixed.state == "warn" and "meta store on SQLite: single machine, no replication" in mixed.detail, mixed
    assert mixed.data["sqlite"] == ["meta store"] and len(mixed.data["postgresql"]) == 1
    sqlite = _checks(home)["store replication"]
    assert sqlite.state == "ok" and sqlite.detail.startswith("meta store and coredms on SQLite: single machine")


@pytest.mark.parametrize("kind", ["nats"])  # the machine's NATS: its test group (tests/conftest.py)
def test_a_multi_host_url_names_the_host_that_is_down(
    home: Path, postgres_admin_url: str, kind: str, request: pytest.FixtureRequest
) -> None:
    """PostgreSQL and NATS URLs of two hosts, one a free port: each check still works through
    the host that answers, warns, and names which host does not answer; the store check
    gives each host's role."""
    down = f"127.0.0.1:{free_port()}"
    parts = urlsplit(postgres_admin_url)
    up = f"{parts.hostname}:{parts.port or 5432}"
    user = f"{parts.netloc.rpartition('@')[0]}@" if "@" in parts.netloc else ""
    two_hosts = urlunsplit(parts._replace(netloc=f"{user}{up},{down}", query="target_session_attrs=read-write"))
    checks = _checks(home, meta_url=two_hosts, coredms_url=two_hosts)
    for name in ("meta store", "coredms"):
        assert checks[name].state == "warn", checks[name]
        assert f"hosts: {up} answers, {down} does not answer" in checks[name].detail
        assert checks[name].data["hosts"] == {up: True, down: False}
    replication = checks["store replication"]
    assert f"{up} primary" in replication.detail and f"{down} unreachable" in replication.detail, replication
    assert replication.data["postgresql"][0]["hosts"][up] == "primary"
    nats = broker_url_for(kind, request)
    broker = _checks(home, broker_url=f"{nats},nats://{down}")
    assert broker["broker"].state == "warn", broker["broker"]
    assert f"hosts: 127.0.0.1:4222 answers, {down} does not answer" in broker["broker"].detail
    assert f"{down}: does not answer" in broker["broker replicas"].detail
    assert broker["broker replicas"].state == "warn", broker["broker replicas"]  # the host that answers: 1 copy


def test_a_worker_node_checks_the_platform_api(home: Path) -> None:
    """MYSIMBDP_API_URL naming a port nobody serves, or a program that never answers: the
    ``platform api`` check fails within its timeout naming the variable; without it the
    check is not there."""
    assert "platform api" not in _checks(home)
    closed = f"http://127.0.0.1:{free_port()}"
    refused = _checks(home, api_url=closed)["platform api"]
    assert refused.state == "fail" and "no HTTP answer (ConnectError)" in refused.detail, refused
    assert "MYSIMBDP_API_URL" in refused.detail and refused.data == {"url": closed}
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        mute = _checks(home, api_url=f"http://127.0.0.1:{silent.getsockname()[1]}/")["platform api"]
        assert time.monotonic() - started < CONNECT_TIMEOUT_S + 20  # it gives up: a bound, not a speed
    assert mute.state == "fail" and "no HTTP answer (ReadTimeout)" in mute.detail, mute
