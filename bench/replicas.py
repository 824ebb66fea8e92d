"""Stream throughput at ``replicas: 3`` against ``replicas: 1``, on the same 3-node NATS
JetStream cluster, in the same run (issue 16).

A 3-node cluster (``tests/clusters/nats.py``: each ``nats-server`` on its own test host in a
network namespace) carries one ``mysimbdp up`` (SQLite coredms, the generic stream app, one
instance per stream). Two tenants: ``rthree``'s JetStream stream is made with 3 replicas,
``rone``'s with 1 (the platform runs at ``MYSIMBDP_BROKER_REPLICAS=1``, so it leaves the
3-replica stream as it is). Each round measures, for both tenants in turn (the order swapped
every round, so that drift of the shared machine hits both alike):

  - end to end: ``--records`` records in 100-record messages published to the broker
    (confirmed, pipelined 10 messages at a time), until all are committed in coredms
    (records/s);
  - the broker alone: the same messages published (confirmed) to a stream no app consumes
    (records/s), then dropped.

Prints every round, the medians and the ratios replicas 3 / replicas 1, and writes them to
bench/out/replicas.json. Needs root (network namespaces) and iproute2.
Run: ``.venv/bin/python bench/replicas.py [--records 100000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.clusters.nats import NatsCluster  # noqa: E402
from tests.netns import Network, problem  # noqa: E402

from mysimbdp.adapters.broker import open_broker  # noqa: E402
from mysimbdp.adapters.broker.nats import durable_name, free_port, stream_name  # noqa: E402
from mysimbdp.adapters.broker.nats.users import PLATFORM_USER, authorization  # noqa: E402
from mysimbdp.adapters.coredms import sqlite_path  # noqa: E402
from mysimbdp.domain.envelope import Envelope, batch_id, encode_batch  # noqa: E402

TENANTS = {"rone": 1, "rthree": 3}  # tenant -> its stream's replicas
STREAM, RAW = "load", "raw"  # consumed by the tenant's app; consumed by nobody
PER_MESSAGE, PIPELINED = 100, 10


def _messages(tenant: str, stream: str, prefix: str, records: int) -> list[tuple[bytes, str]]:
    out = []
    for first in range(0, records, PER_MESSAGE):
        envelopes = [Envelope(f"{prefix}{n}", {"n": n}) for n in range(first, first + PER_MESSAGE)]
        out.append((encode_batch(tenant, stream, envelopes), batch_id(envelopes)))
    return out


async def _publish(url: str, tenant: str, stream: str, messages: list[tuple[bytes, str]]) -> float:
    """Seconds to publish ``messages`` confirmed, connected beforehand."""
    broker = open_broker(url)
    await broker.connect()
    try:
        await broker.declare(tenant, stream)
        started = time.perf_counter()
        for i in range(0, len(messages), PIPELINED):
            part = messages[i : i + PIPELINED]
            await broker.publish(tenant, stream, [body for body, _ in part], [mid for _, mid in part])
        return time.perf_counter() - started
    finally:
        await broker.close()


async def _declare(url: str, tenant: str, replicas: int) -> None:
    broker = open_broker(url, replicas=replicas)
    await broker.connect()
    try:
        await broker.declare(tenant, STREAM)
    finally:
        await broker.close()


async def _drop(url: str, tenant: str, stream: str) -> None:
    broker = open_broker(url)
    await broker.connect()
    try:
        await broker.delete(tenant, stream)
    finally:
        await broker.close()


async def _pulling(url: str, tenant: str) -> int:
    nc = await nats.connect(url.split(","))
    try:
        info = await nc.jetstream().consumer_info(stream_name(tenant), durable_name(STREAM, "generic"))
        return int(info.num_waiting or 0)
    except nats.js.errors.NotFoundError:  # not made yet
        return 0
    finally:
        await nc.close()


class Platform:
    def __init__(self, work: Path, url: str) -> None:
        self.home = work / "home"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
        self.env.update(
            MYSIMBDP_HOME=str(self.home),
            MYSIMBDP_API_PORT=str(free_port()),
            MYSIMBDP_LOG_LEVEL="warning",
            MYSIMBDP_POLL_INTERVAL_S="0.2",
            MYSIMBDP_BROKER_URL=url,
            MYSIMBDP_BROKER_REPLICAS="1",
        )
        for tenant in TENANTS:
            self.cli("tenant", "add", tenant)
        self.up = subprocess.Popen([sys.executable, "-m", "mysimbdp", "up"], env=self.env, stderr=subprocess.DEVNULL)

    def cli(self, *args: str) -> str:
        run = [sys.executable, "-m", "mysimbdp", *args]
        return subprocess.run(run, env=self.env, capture_output=True, text=True, check=True).stdout

    def count(self, tenant: str) -> int:
        db = sqlite_path(f"sqlite:///{self.home / 'coredms'}") + f"/{tenant}/{tenant}.db"  # the tenant's own dir
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
                return int(conn.execute(f'SELECT count(*) FROM "ds_{STREAM}"').fetchone()[0])
        except sqlite3.OperationalError:
            return 0

    def stop(self) -> None:
        self.up.terminate()
        self.up.wait(timeout=60)


def _end_to_end(plat: Platform, url: str, tenant: str, prefix: str, records: int) -> float:
    """Records/s from the first publish to the last record committed."""
    before = plat.count(tenant)
    messages = _messages(tenant, STREAM, prefix, records)
    started = time.perf_counter()
    asyncio.run(_publish(url, tenant, STREAM, messages))
    deadline = time.monotonic() + 600
    while plat.count(tenant) < before + records:
        if time.monotonic() > deadline:
            raise SystemExit(f"{tenant}: {records} records not stored in 600 s")
        time.sleep(0.01)
    return records / (time.perf_counter() - started)


def _broker_alone(url: str, tenant: str, prefix: str, records: int) -> float:
    seconds = asyncio.run(_publish(url, tenant, RAW, _messages(tenant, RAW, prefix, records)))
    asyncio.run(_drop(url, tenant, RAW))
    return records / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if (reason := problem()) is not None:
        raise SystemExit(f"bench/replicas.py: {reason}")
    password = secrets.token_urlsafe(24)
    rounds: list[dict[str, Any]] = []
    block = authorization(password, {})
    with (
        tempfile.TemporaryDirectory() as work,
        Network() as net,
        NatsCluster(net, Path(work) / "n", authorization=block, user=PLATFORM_USER, password=password) as cluster,
    ):
        url = cluster.url(PLATFORM_USER, password)
        for tenant, replicas in TENANTS.items():  # before `up`: it would not lower rthree's 3
            asyncio.run(_declare(url, tenant, replicas))
        plat = Platform(Path(work), url)
        try:
            for tenant in TENANTS:
                plat.cli("stream", "start", "--tenant", tenant, "--stream", STREAM, "--instances", "1")
            deadline = time.monotonic() + 60
            while not all(asyncio.run(_pulling(url, t)) for t in TENANTS):
                if time.monotonic() > deadline:
                    raise SystemExit("the stream apps did not start pulling in 60 s")
                time.sleep(0.2)
            for r in range(args.repeat):
                order = list(TENANTS) if r % 2 == 0 else list(reversed(TENANTS))
                row: dict[str, Any] = {"round": r + 1, "order": order}
                for tenant in order:
                    replicas = TENANTS[tenant]
                    row[f"broker_r{replicas}"] = _broker_alone(url, tenant, f"b{r}-", args.records)
                    row[f"end_to_end_r{replicas}"] = _end_to_end(plat, url, tenant, f"e{r}-", args.records)
                rounds.append(row)
                print(orjson.dumps(row).decode(), flush=True)
            for tenant, replicas in TENANTS.items():
                info = cluster.stream(stream_name(tenant))
                assert info["config"]["num_replicas"] == replicas, (tenant, info["config"])
        finally:
            plat.stop()
    figures = ("broker_r1", "broker_r3", "end_to_end_r1", "end_to_end_r3")
    medians = {f: statistics.median(row[f] for row in rounds) for f in figures}
    result = {
        "records_per_case": args.records,
        "records_per_message": PER_MESSAGE,
        "rounds": rounds,
        "median_records_per_s": medians,
        "ratio_r3_over_r1": {
            "broker": medians["broker_r3"] / medians["broker_r1"],
            "end_to_end": medians["end_to_end_r3"] / medians["end_to_end_r1"],
        },
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    out = ROOT / "bench" / "out" / "replicas.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_records_per_s", "ratio_r3_over_r1", "load_average")}, indent=2))


if __name__ == "__main__":
    main()
