"""Stream ingestion benchmark: the platform end to end vs its raw building blocks, in one run.

On the embedded default (NATS JetStream started by `mysimbdp up`, SQLite coredms), measures:

  (a) end to end through the platform: records published to the broker -> the generic
      stream app -> committed in coredms; records/s and the publish -> committed latency
      (p50/p99, from each stored row's `ingested_at`), with 1 and 2 app instances, for
      single-record messages and for 100-record messages; and the latency again at half
      the measured rate (paced). As in the raw broker baseline, the messages are encoded
      and the publisher connected before the clock starts (each burst's send time is filled
      in as it goes out), and every app instance has a pull waiting at the broker;
  (b) raw baselines with the same client library and settings: the broker's own publish
      (confirmed) + pull + ack rate for the same messages, and the sink's raw bulk insert
      rate (`DocumentStore.write` in batches of 500) of the documents the platform stores
      (same keys, shape and count, a fresh dataset);
  (c) HTTP: requests/s and p50/p99 of `POST /v1/streams/{stream}/messages` (one 10-record
      NDJSON body per request) against a bare FastAPI endpoint that reads the body and
      answers 202, under the same uvicorn settings, driven by the same asyncio load
      generator (httpx, fixed concurrency, fixed duration, loopback).

Prints every figure and the ratios and writes them to bench/out/stream.json.
Each case runs `--repeat` rounds (default 3), each round measuring (b) and (a) once, in turn, so
that drift of the shared machine hits all alike; the medians are reported, with every round.
Run: `.venv/bin/python bench/stream.py [--records N] [--repeat R] [--seconds S] [--sizes 1 100] [--no-http]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.js.errors
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mysimbdp.adapters.broker import Broker, open_broker  # noqa: E402
from mysimbdp.adapters.broker.nats import durable_name, free_port, stream_name  # noqa: E402
from mysimbdp.adapters.coredms import open_admin, open_store, sqlite_path  # noqa: E402
from mysimbdp.domain.envelope import Envelope, batch_id, encode_batch  # noqa: E402
from mysimbdp.runtime.platform import Platform as MysimbdpPlatform  # noqa: E402
from mysimbdp.settings import Settings  # noqa: E402

BARE_APP = """
from fastapi import FastAPI, Request

app = FastAPI()

@app.post("/bare", status_code=202)
async def bare(request: Request) -> dict:
    body = await request.body()
    return {"ids": [str(n) for n in range(body.count(b"\\n") + 1)]}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Platform:
    """`mysimbdp up` on a fresh home, with one tenant."""

    def __init__(self, work: Path) -> None:
        self.home = work / "home"
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
        self.env.update(
            MYSIMBDP_HOME=str(self.home),
            MYSIMBDP_API_PORT=str(self.port),
            MYSIMBDP_LOG_LEVEL="warning",
            MYSIMBDP_POLL_INTERVAL_S="0.2",
        )
        self.key = self.cli("tenant", "add", "bench", "--json", json_out=True)["api_key"]
        self.up = subprocess.Popen([sys.executable, "-m", "mysimbdp", "up"], env=self.env, stderr=subprocess.DEVNULL)
        url_file = self.home / "broker" / "url"
        deadline = time.monotonic() + 30
        while not (url_file.exists() and url_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        with MysimbdpPlatform(Settings.from_env(self.env), {}) as platform:  # the URL is sealed at rest
            self.broker_url = platform.running_broker_url()
        self.db = sqlite_path(f"sqlite:///{self.home / 'coredms'}") + "/bench/bench.db"  # coredms/<tenant>/<tenant>.db

    def cli(self, *args: str, json_out: bool = False) -> Any:
        out = subprocess.run(
            [sys.executable, "-m", "mysimbdp", *args], env=self.env, capture_output=True, text=True, check=True
        ).stdout
        return orjson.loads(out) if json_out else out

    def start_stream(self, stream: str, instances: int) -> None:
        """Start ``instances`` of the stream's app and wait until each has a pull request
        waiting at the broker (connected and consuming): the clock measures ingestion, not
        the apps' start."""
        self.cli("stream", "start", "--tenant", "bench", "--stream", stream, "--instances", str(instances))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = self.cli("stream", "status", "--tenant", "bench", "--json", json_out=True)
            row = next((r for r in rows if r["stream"] == stream), None)
            if row and row["running"] == instances and asyncio.run(self._pulling(stream, row["app"])) >= instances:
                return
            time.sleep(0.2)
        raise SystemExit(f"{instances} instances of {stream} did not start")

    async def _pulling(self, stream: str, app: str) -> int:
        """Pull requests waiting on the stream's consumer (one per idle instance)."""
        nc = await nats.connect(self.broker_url)
        try:
            info = await nc.jetstream().consumer_info(stream_name("bench"), durable_name(stream, app))
            return int(info.num_waiting or 0)
        except nats.js.errors.NotFoundError:
            return 0
        finally:
            await nc.close()

    def has(self, dataset: str, key: str) -> bool:
        try:
            with sqlite3.connect(self.db, timeout=30) as conn:
                return conn.execute(f'SELECT 1 FROM "ds_{dataset}" WHERE key = ?', (key,)).fetchone() is not None
        except sqlite3.OperationalError:
            return False

    def wait_for(self, dataset: str, records: int, timeout_s: float = 300.0) -> None:
        """Until all ``records`` are stored: polls every 5 ms for the last one published (a
        primary-key lookup), then counts (a full scan) until the count is complete."""
        deadline = time.monotonic() + timeout_s
        while not self.has(dataset, f"r{records - 1}") and time.monotonic() < deadline:
            time.sleep(0.005)
        while self.count(dataset) < records and time.monotonic() < deadline:
            time.sleep(0.005)

    def count(self, dataset: str) -> int:
        try:
            with sqlite3.connect(self.db, timeout=30) as conn:
                return int(conn.execute(f'SELECT count(*) FROM "ds_{dataset}"').fetchone()[0])
        except sqlite3.OperationalError:
            return 0

    def latencies_ms(self, dataset: str) -> list[float]:
        with sqlite3.connect(self.db, timeout=30) as conn:
            rows = conn.execute(f"SELECT json_extract(doc, '$.sent'), ingested_at FROM \"ds_{dataset}\"").fetchall()
        return [(datetime.fromisoformat(at).timestamp() - sent) * 1000 for sent, at in rows]

    def stop(self) -> None:
        self.up.terminate()
        self.up.wait(timeout=60)


SENT = 1111111111.125  # stands for the send time in pre-encoded messages; exact in binary
SENT_TEXT = b"1111111111.125"


def _messages(stream: str, records: int, per_message: int, start: int = 0) -> list[tuple[bytes, str]]:
    """The case's broker messages, encoded once: ``(body, message id)``; every record's and
    the batch's send time is :data:`SENT`, which :func:`_publish` fills in."""
    out = []
    for first in range(start, start + records, per_message):
        envelopes = [Envelope(f"r{n}", {"n": n, "sent": SENT}) for n in range(first, first + per_message)]
        out.append((encode_batch("bench", stream, envelopes, sent_at=SENT), batch_id(envelopes)))
    assert SENT_TEXT in out[0][0]
    return out


async def _publish(
    broker: Broker, stream: str, messages: list[tuple[bytes, str]], per_message: int, rate: float | None = None
) -> None:
    """Publish the case's messages, encoded beforehand as the raw broker baseline's are, each
    burst stamped with its send time (`sent`) just before it goes out; paced at ``rate``
    records/s if given."""
    # Messages per publish call (confirms pipelined): as many as fit in 1,000 records when
    # flat out; paced, about 10 ms worth, so the pace is smooth and not a burst of 1,000
    # messages whose last one waits for the broker to store the others.
    chunk = max(1, 1000 // per_message)
    if rate is not None:
        chunk = max(1, min(chunk, int(rate * 0.01 / per_message)))
    started = time.time()
    for i in range(0, len(messages), chunk):
        now = time.time()
        if rate is not None and (ahead := i * per_message / rate - (now - started)) > 0:
            await asyncio.sleep(ahead)
        stamp = repr(time.time()).encode()
        part = messages[i : i + chunk]
        bodies = [body.replace(SENT_TEXT, stamp) for body, _ in part]
        await broker.publish("bench", stream, bodies, [m for _, m in part])


async def _ingest(
    plat: Platform, stream: str, messages: list[tuple[bytes, str]], per_message: int, rate: float | None = None
) -> float:
    """Seconds from the first publish until every record is in coredms. The publisher is
    connected and the stream declared before the clock starts, as in the raw baseline."""
    broker = open_broker(plat.broker_url)
    await broker.connect()
    try:
        await broker.declare("bench", stream)
        started = time.perf_counter()
        await _publish(broker, stream, messages, per_message, rate)
        plat.wait_for(stream, len(messages) * per_message, timeout_s=300 if rate is None else 120)
        return time.perf_counter() - started
    finally:
        await broker.close()


def platform_e2e(plat: Platform, stream: str, records: int, per_message: int, instances: int) -> dict[str, Any]:
    plat.start_stream(stream, instances)
    seconds = asyncio.run(_ingest(plat, stream, _messages(stream, records, per_message), per_message))
    lat = plat.latencies_ms(stream)
    plat.cli("stream", "stop", "--tenant", "bench", "--stream", stream)
    rate = records / seconds
    return {"records_per_s": rate, "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99)}


def platform_paced(plat: Platform, stream: str, rate: float, seconds: float, per_message: int) -> dict[str, Any]:
    plat.start_stream(stream, 1)
    records = max(per_message, int(rate * seconds) // per_message * per_message)
    asyncio.run(_ingest(plat, stream, _messages(stream, records, per_message), per_message, rate))
    lat = plat.latencies_ms(stream)
    return {"rate": rate, "records": records, "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99)}


async def raw_broker(url: str, records: int, per_message: int) -> float:
    broker = open_broker(url)
    await broker.connect()
    stream = f"raw{per_message}"
    try:
        await broker.declare("rawbench", stream)
        messages = _messages(stream, records, per_message)
        started = time.perf_counter()
        chunk = max(1, 1000 // per_message)
        for i in range(0, len(messages), chunk):
            part = messages[i : i + chunk]
            await broker.publish("rawbench", stream, [b for b, _ in part], [m for _, m in part])
        got = 0
        while got < len(messages):
            batch = await broker.pull("rawbench", stream, "raw", max_messages=500, timeout_s=2.0)
            await broker.ack(batch)
            got += len(batch)
        rate = records / (time.perf_counter() - started)
        await broker.delete("rawbench", stream)
        return rate
    finally:
        await broker.close()


def raw_sink(work: Path, records: int, dataset: str) -> float:
    """``DocumentStore.write`` of the documents the platform stores (same keys, same shape,
    a real send time), into a fresh dataset of the same SQLite store kind, 500 a transaction."""
    admin = open_admin(f"sqlite:///{work / 'rawsink'}")
    store = open_store(admin.provision("raw"))
    sent = time.time()
    rows = [(f"r{n}", orjson.dumps({"n": n, "sent": sent + n * 1e-6})) for n in range(records)]
    started = time.perf_counter()
    for i in range(0, records, 500):
        store.write(dataset, rows[i : i + 500], f"stream:{dataset}")
    rate = records / (time.perf_counter() - started)
    store.close()
    return rate


async def load(url: str, body: bytes, headers: dict[str, str], seconds: float, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "statuses": statuses,
    }


def http_bench(plat: Platform, work: Path, seconds: float, concurrency: int) -> dict[str, Any]:
    body = b"\n".join(orjson.dumps({"n": n}) for n in range(10))
    headers = {"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {plat.key}"}
    plat.cli("stream", "start", "--tenant", "bench", "--stream", "http", "--instances", "1")
    api = asyncio.run(
        load(f"http://127.0.0.1:{plat.port}/v1/streams/http/messages", body, headers, seconds, concurrency)
    )
    (work / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    bare = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=work,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.post(f"http://127.0.0.1:{port}/bare", content=b"x")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        raw = asyncio.run(load(f"http://127.0.0.1:{port}/bare", body, headers, seconds, concurrency))
    finally:
        bare.terminate()
        bare.wait()
    return {"post_endpoint": api, "bare_fastapi": raw, "ratio": api["requests_per_s"] / raw["requests_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--records", type=int, default=100_000, help="records of the 100-record case (1/4 for 1-record)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100], help="records per message, one case each")
    parser.add_argument("--no-http", action="store_true", help="skip (c), the HTTP figures")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each HTTP load and paced run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of (a) and (b) per case; medians are reported")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "stream.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mysimbdp-stream-bench-"))
    results: dict[str, Any] = {"records": args.records, "machine": {"cpus": os.cpu_count()}}
    plat = Platform(work)
    try:
        for per_message in args.sizes:
            records = args.records if per_message == 100 else args.records // 4
            print(f"\n== {per_message}-record messages ({records:,} records), {args.repeat} rounds ==")
            runs: dict[str, list[Any]] = {"raw_sink": [], "raw_broker": [], "1_instances": [], "2_instances": []}
            for n in range(args.repeat):  # each round measures everything once: drift hits all alike
                runs["raw_sink"].append(raw_sink(work, records, f"m{per_message}r{n}"))
                runs["raw_broker"].append(asyncio.run(raw_broker(plat.broker_url, records, per_message)))
                print(
                    f"round {n + 1}: (b) raw sink (SQLite, DocumentStore.write x500, the same documents) "
                    f"{runs['raw_sink'][-1]:,.0f} records/s; raw broker publish+consume (NATS JetStream, "
                    f"nats-py) {runs['raw_broker'][-1]:,.0f} records/s"
                )
                for instances in (1, 2):
                    e2e = platform_e2e(plat, f"m{per_message}i{instances}r{n}", records, per_message, instances)
                    runs[f"{instances}_instances"].append(e2e)
                    print(
                        f"round {n + 1}: (a) platform, {instances} instance(s): {e2e['records_per_s']:,.0f} "
                        f"records/s (p50 {e2e['p50_ms']:.0f} ms, p99 {e2e['p99_ms']:.0f} ms)"
                    )
            sink, raw = statistics.median(runs["raw_sink"]), statistics.median(runs["raw_broker"])
            baseline = min(raw, sink)
            case: dict[str, Any] = {
                "raw_sink_records_per_s": sink,
                "raw_broker_records_per_s": raw,
                "baseline": baseline,
                "rounds": runs,
            }
            print(f"medians: (b) raw sink {sink:,.0f} records/s, raw broker {raw:,.0f} records/s")
            for instances in (1, 2):
                rates = [r["records_per_s"] for r in runs[f"{instances}_instances"]]
                e2e = {
                    "records_per_s": statistics.median(rates),
                    "p50_ms": statistics.median(r["p50_ms"] for r in runs[f"{instances}_instances"]),
                    "p99_ms": statistics.median(r["p99_ms"] for r in runs[f"{instances}_instances"]),
                    "ratios_per_round": [
                        rate / min(a, b) for rate, a, b in zip(rates, runs["raw_sink"], runs["raw_broker"], strict=True)
                    ],
                }
                e2e["ratio_vs_slower_baseline"] = e2e["records_per_s"] / baseline
                case[f"{instances}_instances"] = e2e
                per_round = " / ".join(f"{r:.2f}" for r in e2e["ratios_per_round"])
                print(
                    f"(a) platform, {instances} instance(s): {e2e['records_per_s']:,.0f} records/s; "
                    f"{e2e['ratio_vs_slower_baseline']:.2f}x the slower baseline (rounds: {per_round})"
                )
            best = max(case["1_instances"]["records_per_s"], case["2_instances"]["records_per_s"])
            paced = platform_paced(plat, f"p{per_message}", best / 2, args.seconds, per_message)
            case["half_rate"] = paced
            tail = f"p50 {paced['p50_ms']:.0f} ms, p99 {paced['p99_ms']:.0f} ms"
            print(f"(a) at half that rate ({paced['rate']:,.0f}/s): {tail}")
            results[f"messages_of_{per_message}"] = case
        if not args.no_http:
            http = http_bench(plat, work, args.seconds, args.concurrency)
            results["http"] = http
            for name in ("post_endpoint", "bare_fastapi"):
                r = http[name]
                figures = f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, statuses {r['statuses']}"
                print(f"(c) {name}: {r['requests_per_s']:,.0f} req/s, {figures}")
            print(f"(c) ratio POST / bare: {http['ratio']:.2f}x")
    finally:
        plat.stop()
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
