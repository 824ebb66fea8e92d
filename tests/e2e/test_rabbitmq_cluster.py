"""``mysimbdp up`` on a 3-node RabbitMQ cluster of the test's own (quorum queues of 3 members,
``MYSIMBDP_BROKER_REPLICAS=3``) while the tenant's stream app consumes and two producers load
it: REST posts (each batch posted until the API answers 202) and direct publishes with the
tenant's own user (each batch published until RabbitMQ confirms it, the same ids every time).
A follower of the stream's queue is killed (SIGKILL, its host's processes all), the loading
goes on, the follower comes back; then the leader is killed, and the loading goes on. Every
record acknowledged (a 202, a confirm) is stored once: the stored set equals the acknowledged
set, key by key, and the records acknowledged after the leader died are among them (the
stream app carried on). The platform's own state stays consistent: the stream's target still
asks for the one instance its first message set, exactly one instance is recorded, running, its
process alive, and it is the queue's one active consumer on the cluster."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from typing import Any

import aio_pika
import httpx
import orjson
import pytest

from mysimbdp.adapters.broker import split_urls
from mysimbdp.domain.envelope import Envelope, batch_id, encode_batch
from mysimbdp.errors import BrokerError
from tests.clusters.rabbitmq import GROUP, RabbitCluster
from tests.e2e.conftest import Cli, healthy
from tests.helpers import on_backends, until

pytestmark = pytest.mark.slow  # 3 RabbitMQ nodes, two kills and a restart

BATCH = 100
PAUSE_S = 0.1  # between two batches of a producer: at most ~1000 records/s each, ~20-60k in all
QUEUE = "mysimbdp.acme.orders"
APP, INSTANCES = "generic", 1  # the default profile's stream app; what the stream's first message asks for
NDJSON = {"Content-Type": "application/x-ndjson"}


class Producer:
    """A loop in a thread: batch after batch until stopped, each one until acknowledged."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.acked: list[str] = []  # the ids of every acknowledged record, in order
        self.acked_at: list[float] = []  # when each batch was acknowledged (time.monotonic)
        self.batches = 0
        self.failures = 0  # attempts that were not acknowledged (retried)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        self.error: BaseException | None = None

    def ids(self, batch: int) -> list[str]:
        return [f"{self.name}{batch}-{n}" for n in range(BATCH)]

    def run(self) -> None:
        try:
            self.loop()
        except BaseException as exc:  # the test fails on it, in its own thread
            self.error = exc

    def loop(self) -> None:
        raise NotImplementedError

    def done(self, ids: list[str]) -> None:
        self.acked.extend(ids)
        self.acked_at.append(time.monotonic())
        self.batches += 1

    def longest_wait_after(self, moment: float) -> float:
        """The longest time between two batches acknowledged, from the last one before ``moment`` on."""
        times = [t for t in self.acked_at if t <= moment][-1:] + [t for t in self.acked_at if t > moment]
        return max(b - a for a, b in itertools.pairwise(times))

    def wait_batches(self, more: int, what: str) -> None:
        """Until ``more`` batches more than now are acknowledged."""
        target = self.batches + more
        until(lambda: self.error is not None or self.batches >= target, timeout_s=120, what=f"{self.name}: {what}")
        assert self.error is None, self.error


class RestProducer(Producer):
    def __init__(self, api: str, key: str) -> None:
        super().__init__("h")
        self.http = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def loop(self) -> None:
        batch = 0
        while not self.stop.is_set():
            ids = self.ids(batch)
            body = "\n".join(orjson.dumps({"id": i, "data": {"k": i}}).decode() for i in ids)
            for _ in range(600):
                try:
                    answer = self.http.post("/v1/streams/orders/messages", content=body, headers=NDJSON)
                except httpx.TransportError:
                    answer = None
                if answer is not None and answer.status_code == 202:
                    break
                assert answer is None or answer.status_code == 503, answer.text
                self.failures += 1
                time.sleep(0.2)
            else:
                raise AssertionError(f"REST batch {batch} never accepted")
            self.done(ids)
            batch += 1
            time.sleep(PAUSE_S)
        self.http.close()


class DirectProducer(Producer):
    """A tenant's own producer: plain aio-pika, publisher confirms, the next node when one fails."""

    def __init__(self, access: dict[str, str]) -> None:
        super().__init__("p")
        self.urls = split_urls(access["url"])
        self.exchange = access["exchange"]
        self.routing_key = access["routing_key"].replace("<stream>", "orders")

    def loop(self) -> None:
        asyncio.run(self.publish_all())

    async def publish_all(self) -> None:
        node, batch = 0, 0
        connection: aio_pika.abc.AbstractConnection | None = None
        exchange: aio_pika.abc.AbstractExchange | None = None
        while not self.stop.is_set():
            ids = self.ids(batch)
            envelopes = [Envelope(i, {"k": i}) for i in ids]
            body = encode_batch("acme", "orders", envelopes)
            message = aio_pika.Message(
                body, message_id=batch_id(envelopes), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            for _ in range(600):
                try:
                    if exchange is None:
                        connection = await aio_pika.connect(self.urls[node % len(self.urls)], timeout=5)
                        # a publish routed nowhere (before the platform bound the stream's queue) is
                        # returned: raised, not confirmed as if it had been taken (the tenant guide says so)
                        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                        exchange = await channel.get_exchange(self.exchange, ensure=False)
                    await exchange.publish(message, routing_key=self.routing_key, mandatory=True, timeout=10)
                    break
                except (
                    OSError,
                    TimeoutError,
                    aio_pika.exceptions.AMQPError,
                    aio_pika.exceptions.DeliveryError,
                    aio_pika.exceptions.ChannelInvalidStateError,
                ):
                    self.failures += 1
                    node, exchange = node + 1, None
                    if connection is not None:
                        await asyncio.gather(connection.close(), return_exceptions=True)
                        connection = None
                    await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"direct batch {batch} never confirmed")
            self.done(ids)
            batch += 1
            await asyncio.sleep(PAUSE_S)
        if connection is not None:
            await connection.close()


def _stored(cli: Cli) -> Counter[str]:
    proc = cli.run("query", "--tenant", "acme", "--dataset", "orders", "--fields", "k", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return Counter(str(orjson.loads(line)["k"]) for line in proc.stdout.splitlines() if line.strip())


def _count(cli: Cli) -> int:
    proc = cli.run("query", "--tenant", "acme", "--dataset", "orders", "--count")
    return int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0


def _queue(cluster: RabbitCluster, vhost: str, online: int) -> dict[str, Any] | None:
    """The stream's queue once ``online`` of its 3 members are up and it has a leader."""
    try:
        queue = cluster.queue(vhost, QUEUE)
    except BrokerError:  # not declared yet, or the management API of a node going down
        return None
    if len(queue.get("members", [])) == 3 and len(queue.get("online", [])) == online and queue.get("leader"):
        return queue
    return None


@on_backends("sqlite")
@pytest.mark.xdist_group(GROUP)
def test_killing_a_follower_then_the_leader_loses_nothing_acknowledged(cli: Cli, rabbit_cluster: RabbitCluster) -> None:
    """On the shared 3-node cluster (vhost of its own): a follower, then the leader, killed."""
    started = time.monotonic()
    cluster = rabbit_cluster
    vhost = "mysimbdp"
    cluster.add_vhost(vhost)
    cli.env["MYSIMBDP_BROKER_URL"] = cluster.url(vhost)
    cli.env["MYSIMBDP_BROKER_REPLICAS"] = "3"
    added: dict[str, Any] = cli.json("tenant", "add", "acme", "--json")
    api = f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
    rest, direct = RestProducer(api, added["api_key"]), DirectProducer(added["broker"])
    up = cli.popen("up")
    try:
        with httpx.Client(base_url=api, timeout=10) as http:
            until(lambda: healthy(http), what="the API")
        rest.thread.start()  # its first post declares the stream and starts the app
        queue: dict[str, Any] = until(lambda: _queue(cluster, vhost, online=3) or {}, what=f"{QUEUE} on 3 nodes")
        assert queue["arguments"]["x-quorum-initial-group-size"] == 3
        direct.thread.start()
        until(lambda: _count(cli) > 0, what="the stream app's first records")
        for producer in (rest, direct):
            producer.wait_batches(3, "before the kills")

        follower = cluster.node(next(m for m in queue["members"] if m != queue["leader"]))
        follower.kill()
        for producer in (rest, direct):
            producer.wait_batches(5, f"with the follower {follower.name} dead")
        follower.start()
        queue = until(lambda: _queue(cluster, vhost, online=3) or {}, what=f"{follower.name} back")

        leader = cluster.node(queue["leader"])
        leader.kill()
        killed_at = time.monotonic()
        for producer in (rest, direct):
            producer.wait_batches(5, f"with the leader {leader.name} dead")
        after_leader = len(rest.acked), len(direct.acked)
        for producer in (rest, direct):
            producer.wait_batches(2, "after the leader's death")
            producer.stop.set()
        for producer in (rest, direct):
            producer.thread.join(timeout=120)
            assert producer.error is None, producer.error
        acked = Counter(rest.acked + direct.acked)
        assert len(acked) == len(rest.acked) + len(direct.acked)  # every id acknowledged once
        until(lambda: _count(cli) >= len(acked), timeout_s=120, what=f"{len(acked)} records stored")
        stored = _stored(cli)
        targets, instances = cli.stream_instances("acme")  # the leader still dead
        consumers = cluster.consumers(vhost, QUEUE)
    finally:
        rest.stop.set()
        direct.stop.set()
        up.terminate()
        assert up.wait(timeout=60) == 0
    lost, extra = set(acked) - set(stored), set(stored) - set(acked)
    duplicated = {k: n for k, n in stored.items() if n > 1}
    assert (len(lost), len(extra), len(duplicated)) == (0, 0, 0), (sorted(lost)[:5], sorted(extra)[:5], duplicated)
    assert stored == acked
    assert rest.acked[after_leader[0] :] and direct.acked[after_leader[1] :]  # stored: the app carried on
    assert targets == [("orders", APP, INSTANCES)], targets  # nothing lost, nothing scaled
    assert instances == [("running", True)] * INSTANCES, instances  # none dead, none recorded running dead
    # each instance consumes the queue once; a consumer whose channel was on the killed leader's
    # node stays listed, inactive ("suspected down": RabbitMQ cannot tell a dead node from a cut
    # one), until that node is back
    active = [c for c in consumers if c["active"]]
    assert len(active) == INSTANCES and len(consumers) - len(active) <= 1, consumers
    print(
        f"{len(rest.acked)} posted and {len(direct.acked)} published records, all stored once; "
        f"{rest.failures} posts and {direct.failures} publishes retried; follower {follower.name}, "
        f"leader {leader.name} killed: after it, the longest wait between two acknowledged batches "
        f"{rest.longest_wait_after(killed_at):.2f} s (posts), "
        f"{direct.longest_wait_after(killed_at):.2f} s (publishes); "
        f"shared cluster up in {cluster.start_s:.1f} s, test {time.monotonic() - started:.1f} s"
    )
