"""Losing the PostgreSQL primary mid-ingestion loses and duplicates nothing: the platform's
meta store and coredms run on a primary + synchronous standby (``tests/clusters/postgres.py``,
each node on its own test host) reached through one multi-host URL with
``target_session_attrs=read-write``; once rows are stored the test kills the primary's host
(every PostgreSQL process SIGKILLed) or cuts its link, promotes the standby as the operator
would, and checks that every row of a batch file, and every acknowledged message of a stream,
is stored exactly once, the file ``ingested`` after a transient run, never marked bad.
``doctor`` reports the replication before (a synchronous standby) and after (the promoted
node alone).

The broker is ``up``'s embedded NATS: it is not what fails here, and on the platform's own host
it keeps every published message while the store is away (JetStream acks a publish once it is
stored), so what the stream app has not committed is redelivered after the failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import psycopg
import pytest

from mysimbdp.adapters.broker import open_broker
from mysimbdp.adapters.broker.nats import durable_name, free_port, stream_name
from mysimbdp.adapters.coredms.base import namespace, table_name
from mysimbdp.adapters.metastore import MetaStore
from mysimbdp.adapters.secretbox import SecretBox, default_key_file
from mysimbdp.domain.envelope import Envelope, batch_id, encode_batch
from mysimbdp.domain.states import FINAL_FILE_STATES, RunStatus
from tests.clusters.postgres import PostgresCluster
from tests.e2e.conftest import Cli, wait_until_up
from tests.helpers import until
from tests.netns import Network

ROWS = 50_000
PREFIX = "mysimbdp"
# What an operator puts in the URL for a primary that may vanish without refusing (a cut
# link): each host's connection attempt gives up after 2 s, and a connection whose server
# went silent is found dead within ~3 s (keepalives; tcp_user_timeout for unacked data).
LIBPQ = {
    "connect_timeout": "2",
    "keepalives_idle": "1",
    "keepalives_interval": "1",
    "keepalives_count": "2",
    "tcp_user_timeout": "3000",
}


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with Network() as net, PostgresCluster(net, databases=("meta", "coredms")) as pg:
        assert pg.primary is not None
        yield pg


@pytest.fixture
def platform(cluster: PostgresCluster, tmp_path: Path) -> Cli:
    """The CLI of a platform whose meta store and coredms are the cluster, by its multi-host URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    env.update(
        MYSIMBDP_HOME=str(tmp_path / "home"),
        MYSIMBDP_META_URL=cluster.url("meta", **LIBPQ),
        MYSIMBDP_COREDMS_URL=cluster.url("coredms", **LIBPQ),
        MYSIMBDP_PG_PREFIX=PREFIX,
        MYSIMBDP_LOG_FORMAT="json",
        MYSIMBDP_RETRY_BASE_S="0.2",
        MYSIMBDP_MAX_ATTEMPTS="12",
        MYSIMBDP_STORE_TIMEOUT_S="2",
        MYSIMBDP_LEASE_TTL_S="10",
        MYSIMBDP_POLL_INTERVAL_S="0.2",
        MYSIMBDP_SETTLE_S="0.3",
        MYSIMBDP_API_PORT=str(free_port()),
    )
    return Cli(tmp_path / "home", env)


def _stored(cluster: PostgresCluster, dataset: str, column: str = "count(*)") -> int:
    """``column`` over the dataset's table, asked of the current primary (-1 while none answers)."""
    assert cluster.primary is not None
    table = f'"{namespace("acme", PREFIX)}"."{table_name(dataset)}"'
    try:
        with psycopg.connect(cluster.primary.conninfo("coredms"), autocommit=True) as conn:
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                return 0
            row = conn.execute(f"SELECT {column} FROM {table}").fetchone()
    except psycopg.OperationalError:
        return -1
    return int(row[0]) if row else 0


def _keys(cluster: PostgresCluster, dataset: str, expression: str) -> tuple[int, int, list[str]]:
    """Rows, distinct keys and the values of ``expression`` over the dataset, sorted."""
    assert cluster.primary is not None
    table = f'"{namespace("acme", PREFIX)}"."{table_name(dataset)}"'
    with psycopg.connect(cluster.primary.conninfo("coredms"), autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*), count(DISTINCT key) FROM {table}").fetchone()
        values = sorted(str(v) for (v,) in conn.execute(f"SELECT {expression} FROM {table}").fetchall())
    assert row is not None
    return int(row[0]), int(row[1]), values


def _files(cli: Cli) -> list[dict[str, Any]]:
    proc = cli.run("files", "--tenant", "acme", "--json")
    with contextlib.suppress(orjson.JSONDecodeError):
        return list(orjson.loads(proc.stdout)) if proc.returncode == 0 else []
    return []


async def _consumers(url: str, stream: str) -> list[str]:
    """The names of JetStream stream ``stream``'s consumers (nats-py straight)."""
    nc = await nats.connect(url)
    try:
        return sorted(str(info.name) for info in await nc.jetstream().consumers_info(stream))
    finally:
        await nc.close()


def _replication(cli: Cli) -> dict[str, Any]:
    """``doctor --json``'s store replication check."""
    out = cli.json("doctor", "--json")
    checks = out["checks"] if isinstance(out, dict) else out
    return next(c for c in checks if c["name"] == "store replication")


def _promote(cluster: PostgresCluster) -> float:
    """Promote the standby (the primary is dead); the seconds until it took its first write."""
    started = time.monotonic()
    cluster.promote()
    assert cluster.primary is not None
    cluster.primary.sql("CREATE TABLE IF NOT EXISTS failover_probe (at float8)")
    return time.monotonic() - started


def _stop(up: Any) -> None:
    up.send_signal(signal.SIGTERM)
    try:
        up.wait(timeout=60)
    except Exception:
        up.kill()
        raise


@pytest.mark.parametrize("fault", ["kill", "cut"])
def test_losing_the_primary_mid_file_retries_it_as_transient_and_stores_every_row_once(
    cluster: PostgresCluster, platform: Cli, fault: str
) -> None:
    """A 50k-row file is ingested by the generic app; once part of it is stored the primary
    is lost (kill: its processes SIGKILLed; cut: its link down, it lives on unreachable) and
    the standby is promoted: the run ends transient (exit 75), the file is retried and ends
    ingested, and the dataset holds each of its rows exactly once."""
    cli = platform
    cli.run("tenant", "add", "acme", check=True)
    first, second = (f"{node.address}:5432" for node in cluster.nodes)
    replicated = _replication(cli)
    assert replicated["state"] == "ok", replicated
    assert replicated["data"]["postgresql"][0]["hosts"] == {first: "primary", second: "standby"}
    part = cli.home / "inbox" / "acme" / ".big.csv.part"
    with open(part, "w") as fh:
        fh.write("id,sensor,value\n")
        fh.writelines(f"{n},s{n % 97},{n * 0.5}\n" for n in range(ROWS))
    up = cli.popen("up")
    meta = MetaStore(cli.env["MYSIMBDP_META_URL"])  # one connection: after a cut, each new one
    meta.start()  # spends connect_timeout on the lost host first
    try:
        wait_until_up(cli)
        part.rename(part.with_name("big.csv"))
        stored = until(lambda: _stored(cluster, "big") > 0, what="the first rows stored", every_s=0.02)
        lost = time.monotonic()
        if fault == "kill":
            cluster.kill_primary()
        else:
            cluster.cut_primary()
        _promote(cluster)
        print(f"failover ({fault}): first write on the promoted node {time.monotonic() - lost:.2f} s after the loss")
        ended = until(
            lambda: [f for f in meta.list_files(tenant="acme") if f.status in FINAL_FILE_STATES], what="the file's end"
        )
        runs = meta.history.file_runs(ended[0].id)
        events = [status for _, status, _ in meta.file_events(ended[0].id)]
        ledger = meta.chunks.of_file(ended[0].id), meta.worker_claims.of_file(ended[0].id)
    finally:
        meta.close()
        _stop(up)
    files = _files(cli)
    assert stored and [f["status"] for f in files] == ["ingested"], (files, cli.up_log())
    assert files[0]["rows_rejected"] == 0
    rows, keys, ids = _keys(cluster, "big", "doc ->> 'id'")
    assert rows == keys == ROWS
    assert ids == sorted(str(n) for n in range(ROWS))
    statuses = [run.status for run in runs]
    assert RunStatus.TRANSIENT in statuses, f"the loss landed mid-run: {statuses}"
    assert statuses[-1] is RunStatus.SUCCEEDED and RunStatus.FAILED not in statuses, statuses
    # the platform's own record of it: transient runs, then one success, each run counted once,
    # the file's status history saying the same, and nothing in the chunk ledger (not chunked)
    transient = statuses.count(RunStatus.TRANSIENT)
    assert statuses == [RunStatus.TRANSIENT] * transient + [RunStatus.SUCCEEDED], statuses
    assert ended[0].attempts == len(runs) and files[0]["rows_written"] == ROWS, (ended[0], files)
    assert events == ["received", "staged"] + ["running", "retry"] * transient + ["running", "ingested"], events
    assert ledger == ([], []), ledger  # no chunk, no worker claim left running
    if fault == "cut":
        return  # the doctor waits out the cut host's connect timeouts (~12 s); the kill shows the same
    alone = _replication(cli)  # the doctor sees the promoted node, now without a standby
    assert alone["state"] == "warn" and "no standby" in alone["detail"], alone
    hosts = alone["data"]["postgresql"][0]["hosts"]
    assert hosts[second] == "primary" and hosts[first].startswith("unreachable"), hosts


class Sender:
    """Sends batches of 100 messages to acme/clicks on a thread until stopped, either
    published to the broker or POSTed to the API, keeping the ids acknowledged (the
    broker's publish ack, the API's 202). A POST that fails is sent again, as a client
    would: the ids make the retry harmless."""

    def __init__(self, prefix: str, *, broker_url: str = "", api: str = "", key: str = "") -> None:
        self.prefix, self.broker_url, self.api, self.key = prefix, broker_url, api, key
        self.acked: list[str] = []
        self.refused: list[str] = []  # why a POST was sent again: its status, or the transport error
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._publish() if self.broker_url else self._post())
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _ids(self, first: int) -> list[str]:
        return [f"{self.prefix}{n}" for n in range(first, first + 100)]

    async def _publish(self) -> None:
        broker = open_broker(self.broker_url)
        await broker.connect()
        try:
            first = 0
            while not self.stop.is_set():
                envelopes = [Envelope(i, {"n": i}) for i in self._ids(first)]
                batch = encode_batch("acme", "clicks", envelopes)
                await broker.publish("acme", "clicks", [batch], [batch_id(envelopes)])
                self.acked.extend(e.id for e in envelopes)
                first += 100
                await asyncio.sleep(0.05)
        finally:
            await broker.close()

    async def _post(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/x-ndjson"}
        async with httpx.AsyncClient(base_url=self.api, headers=headers, timeout=60) as http:
            first = 0
            while not self.stop.is_set():
                ids = self._ids(first)
                body = "\n".join(orjson.dumps({"id": i, "data": {"n": i}}).decode() for i in ids)
                while True:
                    try:
                        answer = await http.post("/v1/streams/clicks/messages", content=body)
                    except httpx.TransportError as exc:
                        self.refused.append(type(exc).__name__)
                    else:
                        if answer.status_code == 202:
                            break
                        self.refused.append(str(answer.status_code))
                    await asyncio.sleep(0.1)
                self.acked.extend(ids)
                first += 100
                await asyncio.sleep(0.05)


def test_killing_the_primary_under_a_stream_stores_every_acknowledged_message_once(
    cluster: PostgresCluster, platform: Cli
) -> None:
    """Messages published to the broker and POSTed to the API (and acknowledged) before,
    during and after the failover are all stored by the generic stream app, each exactly once;
    afterwards the meta store still asks for the one instance `stream start` asked for, records
    exactly one, running, its process alive, and the app's consumer is still on the broker."""
    cli = platform
    key = cli.json("tenant", "add", "acme", "--json")["api_key"]
    up = cli.popen("up")
    senders: list[Sender] = []
    try:
        url_file = cli.home / "broker" / "url"
        box = SecretBox("", default_key_file(os.environ))
        url = until(lambda: url_file.exists() and box.open(url_file.read_text().strip(), "url"), what="the broker")
        cli.run("stream", "start", "--tenant", "acme", "--stream", "clicks", "--instances", "1", check=True)
        api = f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
        publisher, poster = Sender("b", broker_url=str(url)), Sender("p", api=api, key=key)
        senders = [publisher, poster]
        for sender in senders:
            sender.thread.start()
        until(lambda: _stored(cluster, "clicks") >= 500, what="messages stored before the failover")
        before = len(publisher.acked)
        killed = time.monotonic()
        cluster.kill_primary()
        until(lambda: len(publisher.acked) > before, what="messages published while no primary is up")
        during = len(publisher.acked)
        seconds = _promote(cluster)
        print(f"failover: the primary dead {time.monotonic() - killed:.2f} s, the promotion {seconds:.2f} s")
        after = len(publisher.acked) + len(poster.acked)
        until(lambda: _stored(cluster, "clicks") > after, what="messages stored after the failover")
        until(lambda: len(publisher.acked) + len(poster.acked) >= after + 1000, what="messages sent after it")
        for sender in senders:
            sender.stop.set()
            sender.thread.join(timeout=60)
            assert sender.error is None, sender.error
        acked = sorted(publisher.acked + poster.acked)
        until(lambda: _stored(cluster, "clicks") >= len(acked), what=f"all {len(acked)} acknowledged messages stored")
        targets, instances = cli.stream_instances("acme")  # the meta store's record, read on the promoted node
        consumers = asyncio.run(_consumers(str(url), stream_name("acme")))
        cli.run("stream", "stop", "--tenant", "acme", check=True)
    finally:
        for sender in senders:
            sender.stop.set()
        _stop(up)
    assert before < during, "messages were published while the store had no primary"
    rows, distinct, keys = _keys(cluster, "clicks", "key")
    assert rows == distinct == len(acked)
    assert keys == acked
    assert targets == [("clicks", "generic", 1)], targets  # what `stream start` asked for, kept
    assert instances == [("running", True)], instances  # none dead, none recorded running dead
    assert durable_name("clicks", "generic") in consumers, consumers  # the app's consumer, still there
    print(f"stream: {len(acked)} messages acknowledged and stored once, POSTs sent again after {poster.refused}")
