"""``mysimbdp up`` on a 3-node NATS JetStream cluster (each node on its own test host) with
``MYSIMBDP_BROKER_REPLICAS=3``: under load, REST posts (every batch retried until answered
2xx) and direct publishes with the tenant's own NATS user (every batch retried until
acknowledged) while the tenant's stream app consumes, one node dies: the stream's leader, a
follower, or the leader cut off the network. Every acknowledged message is stored exactly once
(0 lost, 0 duplicated, counted by key), nothing else is, and the stream app carries on: what
is published after the loss is stored too; the lost node comes back and catches up. The
platform's own state stays consistent through it: the stream's target still asks for the one
instance its first message set, exactly one instance is recorded, running, its process alive,
and its durable consumer is still on the cluster, after the loss and after the recovery.

The store is SQLite, the embedded default: its side is not under test here (a replicated
PostgreSQL losing its primary is ``test_postgres_failover``'s), and a file of this test's own
keeps the machine's PostgreSQL out of a test that loads the CPU. An external NATS keeps its own
users: the cluster's config carries the platform's and the tenant's users, rendered as the
embedded server renders them (:func:`mysimbdp.adapters.broker.nats.users.authorization`); the
platform gets its own URL, the tenant's producer the tenant's.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from mysimbdp.adapters.broker import open_broker
from mysimbdp.adapters.broker.nats import durable_name, inbox_prefix, stream_name, tenant_user
from mysimbdp.adapters.broker.nats.users import PLATFORM_USER, authorization
from mysimbdp.domain.envelope import Envelope, batch_id, encode_batch
from mysimbdp.errors import BrokerError, BrokerUnavailable
from tests.clusters.nats import NatsCluster
from tests.e2e.conftest import Cli, healthy
from tests.helpers import on_backends, until
from tests.netns import Network

TENANT, STREAM, APP = "acme", "orders", "generic"  # APP: the default profile's stream app
JS_STREAM = stream_name(TENANT)
INSTANCES = 1  # what the stream's first message asks for (the app's min_instances)
NDJSON = {"Content-Type": "application/x-ndjson"}
PER_POST = PER_PUBLISH = 50  # records per broker message: one POST, one direct publish
BEFORE, AFTER = 1500, 1500  # records each producer has acknowledged before the loss, and after it
AHEAD = 200  # the direct producer (faster) stays at most this many records ahead of the REST one
GIVE_UP_S = 90.0  # a batch retried this long fails the test (a safety net, not an expectation)


class Load:
    """The producers' acknowledged records (by id), their failures, and the word to stop."""

    def __init__(self) -> None:
        self.acked: list[str] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def add(self, ids: list[str]) -> None:
        with self._lock:
            self.acked.extend(ids)

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for i in self.acked if i.startswith(prefix))

    def fail(self, why: str) -> None:
        self.failures.append(why)
        self.stop.set()


def _body(ids: list[str]) -> bytes:
    return b"\n".join(orjson.dumps({"id": i, "data": {"k": i}}) for i in ids)


def _post(http: httpx.Client, ids: list[str]) -> str | None:
    """POST ``ids`` until answered 202, as a careful producer does (the same body again after
    a 503 or a lost answer: the same ids, so the broker drops a second copy); why it gave up."""
    deadline = time.monotonic() + GIVE_UP_S
    while time.monotonic() < deadline:
        try:
            answer = http.post(f"/v1/streams/{STREAM}/messages", content=_body(ids), headers=NDJSON)
        except httpx.TransportError:
            answer = None
        if answer is not None and answer.status_code == 202:
            return None
        if answer is not None and answer.status_code not in (429, 503):
            return f"POST {ids[0]}..: {answer.status_code} {answer.text}"
        time.sleep(0.2)
    return f"POST {ids[0]}..: not accepted in {GIVE_UP_S} s"


def _poster(http: httpx.Client, load: Load) -> None:
    n = 0
    while not load.stop.is_set():
        ids = [f"r{n + i}" for i in range(PER_POST)]
        if (why := _post(http, ids)) is not None:
            return load.fail(why)
        load.add(ids)
        n += PER_POST


async def _publish(url: str, load: Load) -> None:
    """A tenant's own producer on the platform's client: every batch until acknowledged."""
    broker = open_broker(url)
    until_connected = time.monotonic() + GIVE_UP_S
    while True:
        try:
            await broker.connect()
            break
        except BrokerUnavailable:
            if time.monotonic() > until_connected:
                return load.fail("the tenant's producer could not connect")
            await asyncio.sleep(0.2)
    n = 0
    try:
        while not load.stop.is_set():
            if load.count("d") > load.count("r") + AHEAD:  # in step with the posts: a bounded load
                await asyncio.sleep(0.01)
                continue
            envelopes = [Envelope(f"d{n + i}", {"k": f"d{n + i}"}) for i in range(PER_PUBLISH)]
            deadline = time.monotonic() + GIVE_UP_S
            while True:
                try:
                    await broker.publish(
                        TENANT, STREAM, [encode_batch(TENANT, STREAM, envelopes)], [batch_id(envelopes)]
                    )
                    break
                except BrokerUnavailable as exc:
                    if time.monotonic() > deadline:
                        return load.fail(f"publish d{n}..: {exc}")
                    await asyncio.sleep(0.2)
                except BrokerError as exc:
                    return load.fail(f"publish d{n}..: {exc}")
            load.add([e.id for e in envelopes])
            n += PER_PUBLISH
    finally:
        await broker.close()


def _stored(cli: Cli) -> Counter[str]:
    """How many times each key is in the dataset."""
    proc = cli.run("query", "--tenant", TENANT, "--dataset", STREAM, "--fields", "k", check=True)
    return Counter(orjson.loads(line)["k"] for line in proc.stdout.splitlines() if line.strip())


def _count(cli: Cli) -> int:
    proc = cli.run("query", "--tenant", TENANT, "--dataset", STREAM, "--count")
    return int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0


def _assert_consistent(cli: Cli, nats: NatsCluster) -> None:
    """The stream's target, its instances and its consumer on the cluster as the test left them."""
    targets, instances = cli.stream_instances(TENANT)
    assert targets == [(STREAM, APP, INSTANCES)], targets  # nothing lost, nothing scaled
    assert instances == [("running", True)] * INSTANCES, instances  # none dead, none recorded running dead
    consumers = nats.consumers(JS_STREAM)  # the app's, and the monitor's of the reports stream
    assert durable_name(STREAM, APP) in consumers, consumers

    def consumer_leader() -> str:  # a node just back may call an election: a leader again in seconds
        app = nats.consumers(JS_STREAM).get(durable_name(STREAM, APP)) or {}
        leader = str((app.get("cluster") or {}).get("leader") or "")
        return leader if leader in {node.name for node in nats.live() if not node.cut} else ""

    until(consumer_leader, timeout_s=30, what=f"a live leader of {durable_name(STREAM, APP)}", every_s=0.2)


def _victim(nats: NatsCluster, which: str) -> str:
    leader = nats.stream_leader(JS_STREAM)
    return leader if which != "a follower" else next(name for name in sorted(nats.nodes) if name != leader)


@pytest.mark.slow  # process kills and failovers: ~15-35 s each on this VM
@on_backends("sqlite")
@pytest.mark.parametrize(
    "which", ["the stream leader", "a follower", "the stream leader's link"], ids=["leader", "follower", "link"]
)
def test_losing_one_node_of_three_loses_and_duplicates_nothing(cli: Cli, tmp_path: Path, which: str) -> None:
    started = time.monotonic()

    def phase(what: str) -> None:  # on stdout: pytest shows it with a failure
        print(f"{time.monotonic() - started:6.1f} s  {what}", flush=True)

    platform_password, tenant_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    config = authorization(platform_password, {TENANT: tenant_password})
    with (
        Network() as net,
        NatsCluster(  # the platform's user: the login of the cluster's readiness probe
            net, tmp_path / "nats", authorization=config, user=PLATFORM_USER, password=platform_password
        ) as nats,
    ):
        cli.env["MYSIMBDP_BROKER_URL"] = nats.url(PLATFORM_USER, platform_password)
        cli.env["MYSIMBDP_BROKER_REPLICAS"] = "3"
        key = cli.json("tenant", "add", TENANT, "--json")["api_key"]
        producer_url = nats.url(tenant_user(TENANT), tenant_password, inbox=inbox_prefix(TENANT))
        api = f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
        phase("cluster ready, tenant added")
        up = cli.popen("up")
        load = Load()
        threads: list[threading.Thread] = []
        try:
            with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=45) as http:
                until(lambda: healthy(http), what="the API")
                assert _post(http, ["first"]) is None  # declares the stream (3 replicas), starts the app
                until(lambda: nats.stream_current(JS_STREAM), what=f"{JS_STREAM} on 3 current nodes", every_s=0.2)
                assert nats.stream(JS_STREAM)["config"]["num_replicas"] == 3
                phase("up, stream declared on 3 nodes")

                jobs: list[Callable[[], None]] = [
                    lambda: _poster(http, load),
                    lambda: asyncio.run(_publish(producer_url, load)),
                ]
                threads = [threading.Thread(target=job, daemon=True) for job in jobs]
                for thread in threads:
                    thread.start()

                def acked(want: int) -> bool:
                    return bool(load.failures) or (load.count("r") >= want and load.count("d") >= want)

                until(lambda: acked(BEFORE), what=f"{BEFORE} records acknowledged by each producer")
                victim = _victim(nats, which)
                phase(f"{load.count('r')} + {load.count('d')} acknowledged; losing {victim} ({which})")
                if which.endswith("link"):
                    nats.cut(victim)
                else:
                    nats.kill(victim)
                until(lambda: acked(BEFORE + AFTER), what=f"{AFTER} more records acknowledged after losing {victim}")
                leader = until(lambda: nats.stream_leader(JS_STREAM), what="a stream leader")
                phase(f"{load.count('r')} + {load.count('d')} acknowledged; stream leader {leader}")
                load.stop.set()
                for thread in threads:
                    thread.join(timeout=GIVE_UP_S + 10)
                assert not load.failures, load.failures
                assert not any(thread.is_alive() for thread in threads)  # every batch begun was acknowledged
                assert leader != victim or not which.startswith("the stream leader")  # a new one was elected

                assert _post(http, ["after"]) is None  # published after the loss: stored too
            wanted = {"first", "after", *load.acked}
            assert len(wanted) == len(load.acked) + 2  # no id acknowledged twice by the producers
            until(lambda: _count(cli) >= len(wanted), what=f"{len(wanted)} records stored", every_s=0.5)
            stored = _stored(cli)
            phase(f"{len(wanted)} stored")
            assert set(stored) == wanted, (sorted(wanted - set(stored))[:10], sorted(set(stored) - wanted)[:10])
            assert max(stored.values()) == 1  # 0 lost, 0 duplicated
            _assert_consistent(cli, nats)  # after the loss, the node still lost

            if which.endswith("link"):  # the node comes back and catches up
                nats.mend(victim)
            else:
                nats.start(victim)
            until(lambda: nats.stream_current(JS_STREAM), what=f"{victim} current again", every_s=0.2)
            phase(f"{victim} current again")
            _assert_consistent(cli, nats)  # and after the recovery
        finally:
            load.stop.set()
            up.terminate()
            assert up.wait(timeout=60) == 0, cli.up_log()
    assert _count(cli) == len(wanted)
