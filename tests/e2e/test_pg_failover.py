"""Killing the PostgreSQL primary mid-ingestion loses and duplicates nothing: the platform's
meta store and coredms run on a primary + synchronous standby (``tests/clusters/postgres.py``,
each node on its own test host) reached through one multi-host URL with
``target_session_attrs=read-write``; the test kills the primary's host (every PostgreSQL
process SIGKILLed) once rows are stored, promotes the standby as the operator would, and checks
that every row of a batch file, and every acknowledged message of a stream, is stored exactly
once, the file ``ingested`` after a transient run, never marked bad.

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
import orjson
import psycopg
import pytest

from mysimbdp.adapters.broker import open_broker
from mysimbdp.adapters.broker.nats import free_port
from mysimbdp.adapters.coredms.base import namespace, table_name
from mysimbdp.adapters.metastore import MetaStore
from mysimbdp.adapters.secretbox import SecretBox, default_key_file
from mysimbdp.domain.envelope import Envelope, batch_id, encode_batch
from mysimbdp.domain.states import RunStatus
from tests.clusters.postgres import PostgresCluster
from tests.e2e.conftest import Cli, wait_until_up
from tests.helpers import until
from tests.netns import Network

ROWS = 50_000
PREFIX = "mysimbdp"


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with Network() as net, PostgresCluster(net) as pg:
        assert pg.primary is not None
        pg.primary.sql("CREATE DATABASE meta")
        pg.primary.sql("CREATE DATABASE coredms")
        yield pg


@pytest.fixture
def platform(cluster: PostgresCluster, tmp_path: Path) -> Cli:
    """The CLI of a platform whose meta store and coredms are the cluster, by its multi-host URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    env.update(
        MYSIMBDP_HOME=str(tmp_path / "home"),
        MYSIMBDP_META_URL=cluster.url("meta"),
        MYSIMBDP_COREDMS_URL=cluster.url("coredms"),
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


def _keys(cluster: PostgresCluster, dataset: str, field: str) -> tuple[int, int, list[str]]:
    """Rows, distinct keys and the values of ``field`` of the dataset, sorted."""
    assert cluster.primary is not None
    table = f'"{namespace("acme", PREFIX)}"."{table_name(dataset)}"'
    with psycopg.connect(cluster.primary.conninfo("coredms"), autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*), count(DISTINCT key) FROM {table}").fetchone()
        values = sorted(v for (v,) in conn.execute(f"SELECT doc ->> %s FROM {table}", (field,)).fetchall())
    assert row is not None
    return int(row[0]), int(row[1]), values


def _files(cli: Cli) -> list[dict[str, Any]]:
    proc = cli.run("files", "--tenant", "acme", "--json")
    with contextlib.suppress(orjson.JSONDecodeError):
        return list(orjson.loads(proc.stdout)) if proc.returncode == 0 else []
    return []


def _fail_over(cluster: PostgresCluster) -> float:
    """Kill the primary's host, promote the standby; the seconds from the kill to the
    promoted node's first accepted write."""
    killed = time.monotonic()
    cluster.kill_primary()
    cluster.promote()
    assert cluster.primary is not None
    cluster.primary.sql("CREATE TABLE IF NOT EXISTS failover_probe (at float8)")
    return time.monotonic() - killed


def _stop(up: Any) -> None:
    up.send_signal(signal.SIGTERM)
    try:
        up.wait(timeout=60)
    except Exception:
        up.kill()
        raise


def test_killing_the_primary_mid_file_retries_it_as_transient_and_stores_every_row_once(
    cluster: PostgresCluster, platform: Cli, tmp_path: Path
) -> None:
    """A 50k-row file is ingested by the generic app; once part of it is stored the primary
    dies and the standby is promoted: the run ends transient (exit 75), the file is retried
    and ends ingested, and the dataset holds each of its rows exactly once."""
    cli = platform
    cli.run("tenant", "add", "acme", check=True)
    part = cli.home / "inbox" / "acme" / ".big.csv.part"
    with open(part, "w") as fh:
        fh.write("id,sensor,value\n")
        fh.writelines(f"{n},s{n % 97},{n * 0.5}\n" for n in range(ROWS))
    up = cli.popen("up")
    try:
        wait_until_up(cli)
        part.rename(part.with_name("big.csv"))
        stored = until(lambda: _stored(cluster, "big") > 0, what="the first rows stored", every_s=0.02)
        seconds = _fail_over(cluster)
        print(f"failover: first write on the promoted node {seconds:.2f} s after the kill")
        files = until(
            lambda: [f for f in _files(cli) if f["status"] in ("ingested", "failed", "quarantined")],
            what="the file's end",
        )
    finally:
        _stop(up)
    assert stored and [f["status"] for f in files] == ["ingested"], (files, cli.up_log())
    rows, keys, ids = _keys(cluster, "big", "id")
    assert rows == keys == ROWS
    assert ids == sorted(str(n) for n in range(ROWS))
    assert files[0]["rows_rejected"] == 0
    meta = MetaStore(cli.env["MYSIMBDP_META_URL"])
    meta.start()
    try:
        runs = meta.history.file_runs(files[0]["file_id"])
    finally:
        meta.close()
    statuses = [run.status for run in runs]
    assert RunStatus.TRANSIENT in statuses, f"the kill landed mid-run: {statuses}"
    assert statuses[-1] is RunStatus.SUCCEEDED and RunStatus.FAILED not in statuses, statuses


class Publisher:
    """Sends batches of 100 messages to acme/clicks on a thread until stopped, by turns
    published to the broker and POSTed to the API, keeping the ids acknowledged (the
    broker's publish ack, the API's 202). A POST that fails is sent again, as a client
    would: the ids make the retry harmless."""

    def __init__(self, url: str, api: str, key: str) -> None:
        self.url, self.api, self.key = url, api, key
        self.acked: list[str] = []
        self.posts_retried = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._send())
        except BaseException as exc:  # reported by the test
            self.error = exc

    async def _send(self) -> None:
        broker = open_broker(self.url)
        await broker.connect()
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/x-ndjson"}
        try:
            async with httpx.AsyncClient(base_url=self.api, headers=headers, timeout=30) as http:
                first = 0
                while not self.stop.is_set():
                    numbers = range(first, first + 100)
                    if first % 200:
                        await self._post(http, numbers)
                    else:
                        envelopes = [Envelope(f"c{n}", {"n": n}) for n in numbers]
                        batch = encode_batch("acme", "clicks", envelopes)
                        await broker.publish("acme", "clicks", [batch], [batch_id(envelopes)])
                    self.acked.extend(f"c{n}" for n in numbers)
                    first += 100
                    await asyncio.sleep(0.05)
        finally:
            await broker.close()

    async def _post(self, http: httpx.AsyncClient, numbers: range) -> None:
        body = "\n".join(orjson.dumps({"id": f"c{n}", "data": {"n": n}}).decode() for n in numbers)
        for _ in range(100):
            with contextlib.suppress(httpx.TransportError):
                if (await http.post("/v1/streams/clicks/messages", content=body)).status_code == 202:
                    return
            self.posts_retried += 1
            await asyncio.sleep(0.1)
        raise AssertionError(f"POST of messages c{numbers[0]}..c{numbers[-1]} never accepted")


def test_killing_the_primary_under_a_stream_stores_every_acknowledged_message_once(
    cluster: PostgresCluster, platform: Cli
) -> None:
    """Messages published to the broker and POSTed to the API (and acknowledged) before,
    during and after the failover are all stored by the generic stream app, each exactly once."""
    cli = platform
    key = cli.json("tenant", "add", "acme", "--json")["api_key"]
    up = cli.popen("up")
    publisher: Publisher | None = None
    try:
        url_file = cli.home / "broker" / "url"
        box = SecretBox("", default_key_file(os.environ))
        url = until(lambda: url_file.exists() and box.open(url_file.read_text().strip(), "url"), what="the broker")
        cli.run("stream", "start", "--tenant", "acme", "--stream", "clicks", "--instances", "1", check=True)
        publisher = Publisher(str(url), f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}", key)
        publisher.thread.start()
        until(lambda: _stored(cluster, "clicks") >= 500, what="messages stored before the failover")
        before = len(publisher.acked)
        seconds = _fail_over(cluster)
        print(f"failover: first write on the promoted node {seconds:.2f} s after the kill")
        after_promote = len(publisher.acked)
        until(lambda: _stored(cluster, "clicks") > after_promote, what="messages stored after the failover")
        until(lambda: len(publisher.acked) >= after_promote + 1000, what="messages published after the failover")
        publisher.stop.set()
        publisher.thread.join(timeout=30)
        assert publisher.error is None, publisher.error
        total = len(publisher.acked)
        until(lambda: _stored(cluster, "clicks") >= total, what=f"all {total} acknowledged messages stored")
        cli.run("stream", "stop", "--tenant", "acme", check=True)
    finally:
        if publisher is not None:
            publisher.stop.set()
        _stop(up)
    assert before < after_promote < total, "messages were published during and after the failover"
    rows, keys, ids = _keys(cluster, "clicks", "n")
    assert rows == keys == total
    assert ids == sorted(str(n) for n in range(total))
    print(f"stream: {total} messages acknowledged and stored once, {publisher.posts_retried} POSTs sent again")
