"""Near-realtime ingestion inside ``mysimbdp up``: the REST API, the embedded broker that
``up`` starts itself, and the stream ingest manager (instances started and stopped on the
operator's word or on a stream's first message, a killed instance restarted, every record
stored once). Over SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from mysimbdp.adapters.broker import open_broker
from mysimbdp.adapters.secretbox import SecretBox, default_key_file
from mysimbdp.domain.envelope import Envelope, batch_id, encode_batch
from tests.e2e.conftest import Cli, healthy
from tests.helpers import on_backends, until


async def _publish(url: str, start: int, count: int, per_message: int = 100) -> None:
    broker = open_broker(url)
    await broker.connect()
    try:
        for first in range(start, start + count, per_message):
            envelopes = [Envelope(f"c{n}", {"n": n}) for n in range(first, first + per_message)]
            await broker.publish("acme", "clicks", [encode_batch("acme", "clicks", envelopes)], [batch_id(envelopes)])
    finally:
        await broker.close()


def _count(cli: Cli) -> int:
    proc = cli.run("query", "--tenant", "acme", "--dataset", "clicks", "--count")
    return int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0


def _running(cli: Cli, want: int) -> list[dict[str, Any]]:
    rows = cli.json("stream", "status", "--tenant", "acme", "--json")
    live = [i for row in rows for i in row["instance_list"] if i["state"] == "running" and i["pid"]]
    return live if len(live) == want else []


@on_backends("postgres")
def test_instances_follow_the_operator_and_a_killed_one_comes_back(cli: Cli, home: Path) -> None:
    cli.run("tenant", "add", "acme", check=True)
    up = cli.popen("up")
    try:
        url_file = home / "broker" / "url"
        box = SecretBox("", default_key_file(os.environ))  # the platform's key, as `up` found it
        url = until(lambda: url_file.exists() and box.open(url_file.read_text().strip(), "url"), what="the broker")
        assert url.startswith("nats://")  # opened: the file holds it sealed
        cli.run("stream", "start", "--tenant", "acme", "--stream", "clicks", "--instances", "2", check=True)
        first, _second = until(lambda: _running(cli, 2), what="2 running instances")
        asyncio.run(_publish(url, 0, 1000))
        assert until(lambda: _count(cli) == 1000, what="1000 records") is True

        os.kill(first["pid"], signal.SIGKILL)  # a crash: the manager restarts it
        again = until(lambda: [i for i in _running(cli, 2) if i["restarts"] == 1], what="a restarted instance")
        assert again[0]["id"] == first["id"] and again[0]["pid"] != first["pid"]
        asyncio.run(_publish(url, 1000, 500))
        assert until(lambda: _count(cli) == 1500, what="1500 records") is True

        cli.run("stream", "stop", "--tenant", "acme", check=True)
        until(lambda: cli.json("stream", "status", "--tenant", "acme", "--json")[0]["running"] == 0, what="stopped")
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
    assert not (home / "broker" / "url").exists()
    assert _count(cli) == 1500


def test_posted_messages_land_in_the_dataset_named_after_the_stream(cli: Cli, home: Path) -> None:
    """The whole near-realtime path with the default profile: POST → broker → the generic
    stream app (started on the stream's first message) → coredms, read back by the API."""
    key = cli.json("tenant", "add", "acme", "--json")["api_key"]
    api = f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
    up = cli.popen("up")
    try:
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
            until(lambda: healthy(http), what="the API")
            body = "\n".join(orjson.dumps({"id": f"o{n}", "data": {"n": n}}).decode() for n in range(300))
            posted = http.post("/v1/streams/orders/messages", content=body, headers=NDJSON)
            assert posted.status_code == 202, posted.text
            assert posted.json()["dataset"] == "orders" and len(posted.json()["ids"]) == 300
            again = http.post("/v1/streams/orders/messages", content=body, headers=NDJSON)  # a retry
            assert again.status_code == 202
            docs = until(lambda: _documents(http, 300), what="300 documents")
            assert sorted(d["n"] for d in docs) == list(range(300))
            assert http.post("/v1/streams/orders/messages", content=b"{oops", headers=JSON).status_code == 422
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
    assert cli.run("query", "--tenant", "acme", "--dataset", "orders", "--count").stdout.strip() == "300"


NDJSON = {"Content-Type": "application/x-ndjson"}
JSON = {"Content-Type": "application/json"}


def _documents(http: httpx.Client, want: int) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = http.get("/v1/datasets/orders/documents", params={"limit": 1000}).json()
    return docs if len(docs) == want else []


SLOW_APP = """
import time

from mysimbdp import sdk


def transform(data):
    time.sleep(0.01)  # a slow app: one instance cannot keep up with the load below
    return data


if __name__ == "__main__":
    sdk.run_stream(transform)
"""
SCALING_PROFILE = """
stream_apps:
  - name: slow
    command: ["{python}", "{bundle}/app.py"]
    streams: [work]
    min_instances: 1
    max_instances: 3
    batch_size: 1
    report_period_s: 0.5
    scaling: {window_s: 3, backlog_high: 5, latency_p95_high_ms: 600000, high_fraction: 0.5,
              idle_s: 3, cooldown_s: 1, step: 1}
"""


@on_backends("sqlite")
def test_the_monitor_scales_up_under_load_and_back_down_when_idle(
    cli: Cli, home: Path, write_tenant: Callable[..., Path]
) -> None:
    profile = write_tenant("acme", SCALING_PROFILE, {"app.py": SLOW_APP})
    key = cli.json("tenant", "add", "acme", "--profile", str(profile), "--json")["api_key"]
    api = f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
    up = cli.popen("up")

    def steps() -> list[tuple[int, int]]:  # the monitor's decisions as recorded in the meta store
        return [(d["from_instances"], d["to_instances"]) for d in cli.json("stream", "decisions", "--json")]

    try:
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
            until(lambda: healthy(http), what="the API")
            for batch in range(40):  # 40 broker messages of 50 records: ~20 s of work for one instance
                body = orjson.dumps([{"id": f"w{batch}-{n}", "data": {"n": n}} for n in range(50)])
                assert http.post("/v1/streams/work/messages", content=body, headers=JSON).status_code == 202
        until(lambda: (1, 2) in steps(), what="instances added under load")
        until(lambda: _count_of(cli, "work") == 2000, timeout_s=90, what="the backlog drained")
        until(lambda: (made := steps()) and made[-1][1] == 1, timeout_s=60, what="back down to min_instances 1")
        rows = cli.json("stream", "status", "--tenant", "acme", "--json")
        assert rows[0]["instances"] == 1
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
    made = steps()  # up under load one step at a time, never past max_instances 3, back to min 1
    assert made[0] == (1, 2) and made[-1][1] == 1
    assert all(abs(a - b) == 1 and 1 <= b <= 3 for a, b in made)
    decisions = cli.json("stream", "decisions", "--tenant", "acme", "--json")
    assert decisions[0]["reason"].endswith("scale up") and decisions[0]["inputs"]["max_backlog"] > 5
    assert decisions[-1]["reason"].endswith("scale down")
    log = (home.parent / "up.log").read_text()
    assert '"event": "scaling_decision"' in log and "scale up" in log and "scale down" in log


def _count_of(cli: Cli, dataset: str) -> int:
    proc = cli.run("query", "--tenant", "acme", "--dataset", dataset, "--count")
    return int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0
