"""A hostile tenant inside ``mysimbdp up``: its batch app (a whole-file run, chunk runs of a
file big enough to be split, and a quarantine replay run by the CLI) and its stream app (an
instance of the stream manager) probe
everything a tenant must not reach, and store what they reached as documents. With the sandbox
on nothing is reached, while a normal tenant's file is ingested beside it; with
``MYSIMBDP_SANDBOX=off`` every probe reaches its target (so the test can fail). Over SQLite
and PostgreSQL, embedded NATS and RabbitMQ."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import RABBITMQ_ADMIN_URL, broker_url_for
from tests.e2e.conftest import Cli, healthy
from tests.helpers import TESTS, until

HOSTILE_APP = TESTS / "hostile_app.py"
PROFILE = """
formats: [jsonl]
dataset: probes
key_fields: [probe, target]
big_files: {threshold_bytes: 8192, chunk_bytes: 2048}  # chunked.jsonl is split, probes.jsonl is not
batch_apps:
  - name: chunked
    command: ["{python}", "{bundle}/hostile_app.py", "batch"]
    file_pattern: "chunked*"
    dataset: chunk_probes
    timeout_s: 120
    memory_mb: 512
  - name: replayed
    command: ["{python}", "{bundle}/hostile_app.py", "batch"]
    file_pattern: "replay*"
    dataset: replay_probes
    timeout_s: 120
    memory_mb: 512
  - name: hostile
    command: ["{python}", "{bundle}/hostile_app.py", "batch"]
    timeout_s: 120
    memory_mb: 512
stream_apps:
  - name: hostile
    command: ["{python}", "{bundle}/hostile_app.py", "stream"]
    streams: [probes]
    dataset: stream_probes
    min_instances: 1
    max_instances: 1
    batch_size: 50
    report_period_s: 1
"""
NDJSON = {"Content-Type": "application/x-ndjson"}
CASES = [  # (store, broker, sandbox): every backend confined; the unconfined runs prove the probes
    ("sqlite", "nats-embedded", "on"),
    ("postgres", "nats-embedded", "on"),
    ("sqlite", "rabbitmq", "on"),
    ("postgres", "rabbitmq", "on"),
    ("sqlite", "nats-embedded", "off"),
    ("postgres", "rabbitmq", "off"),
]


def _documents(http: httpx.Client, dataset: str) -> list[dict[str, Any]]:
    answer = http.get(f"/v1/datasets/{dataset}/documents", params={"limit": 1000})
    return list(answer.json()) if answer.status_code == 200 else []


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[str]:
    """A named unix socket outside the home, standing for a local service's (PostgreSQL's)."""
    path = str(tmp_path / "service.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(16)
    try:
        yield path
    finally:
        sock.close()


def _held(cli: Cli) -> int:
    """How many of the replay file's rows the quarantine holds (its run imports them when done)."""
    summaries = cli.json("quarantine", "list", "--tenant", "evil", "--json")
    return sum(s["entries"] for s in summaries if s["name"] == "replay.jsonl")


def _probes(cli: Cli, up_pid: int, unix_path: str) -> list[tuple[str, str]]:
    home = cli.home
    other_db = next(iter((home / "coredms").glob("other/*.db")), None) if (home / "coredms").is_dir() else None
    probes = [
        ("read", str(home / "meta.db")) if (home / "meta.db").exists() else ("list", str(home / "archive")),
        ("read", str(next((home / "archive" / "other").iterdir()))),  # another tenant's ingested file
        ("read", str(home / "tenants" / "other" / "profile.yaml")),  # another tenant's bundle
        ("list", str(home)),
        ("write", str(home / "owned.txt")),
        ("environ", str(up_pid)),  # `up`'s environment
        ("signal", str(up_pid)),
        ("list", "/proc"),
        ("tcp", f"127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"),  # a platform port that is not its store
        ("unix", unix_path),
        ("udp", f"127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"),
    ]
    if other_db is not None:  # SQLite: another tenant's database file
        probes += [("read", str(other_db)), ("write", str(other_db))]
    if (home / "broker" / "nats.conf").exists():  # the embedded broker's users and passwords
        probes.append(("read", str(home / "broker" / "nats.conf")))
    if os.geteuid() == 0:
        probes.append(("setuid", "4242"))
    return probes


@pytest.mark.parametrize(("backend", "broker_kind", "sandbox"), CASES)
def test_a_hostile_tenant_reaches_nothing_of_the_platform_or_other_tenants(
    cli: Cli,
    tmp_path: Path,
    unix_listener: str,
    request: pytest.FixtureRequest,
    backend: str,
    broker_kind: str,
    sandbox: str,
) -> None:
    cli.env["MYSIMBDP_SANDBOX"] = sandbox
    if broker_kind == "rabbitmq":
        cli.env["MYSIMBDP_BROKER_URL"] = broker_url_for("rabbitmq", request)
        cli.env["MYSIMBDP_BROKER_ADMIN_URL"] = RABBITMQ_ADMIN_URL
    bundle = tmp_path / "evil"
    bundle.mkdir()
    (bundle / "profile.yaml").write_text(PROFILE)
    shutil.copy(HOSTILE_APP, bundle / "hostile_app.py")
    cli.run("tenant", "add", "other", check=True)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    cli.run("ingest", str(tmp_path / "other.csv"), "--tenant", "other", check=True)  # a normal tenant's data
    key = cli.json("tenant", "add", "evil", "--profile", str(bundle / "profile.yaml"), "--json")["api_key"]

    up = cli.popen("up")
    try:
        api = f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
            until(lambda: healthy(http), what="the API")
            probes = _probes(cli, up.pid, unix_listener)
            rows = b"\n".join(orjson.dumps({"probe": kind, "target": target}) for kind, target in probes)
            (tmp_path / "probes.jsonl").write_bytes(rows + b"\n")
            cli.run("ingest", str(tmp_path / "probes.jsonl"), "--tenant", "evil", check=True)
            padded = b"\n".join(
                orjson.dumps({"probe": kind, "target": target, "pad": "x" * 700}) for kind, target in probes
            )
            (tmp_path / "chunked.jsonl").write_bytes(padded + b"\n")
            assert len(padded) > 8192
            cli.run("ingest", str(tmp_path / "chunked.jsonl"), "--tenant", "evil", check=True)
            messages = b"\n".join(
                orjson.dumps({"id": f"p{n}", "data": {"probe": kind, "target": target}})
                for n, (kind, target) in enumerate(probes)
            )
            held = b"\n".join(
                orjson.dumps({"probe": kind, "target": target, "quarantine_first": True}) for kind, target in probes
            )
            (tmp_path / "replay.jsonl").write_bytes(held + b"\n")
            cli.run("ingest", str(tmp_path / "replay.jsonl"), "--tenant", "evil", check=True)  # all quarantined
            until(lambda: _held(cli) == len(probes), what="the replay file's rows in the quarantine")
            replayed = cli.json("quarantine", "replay", "--tenant", "evil", "--json")  # the CLI runs the app
            assert [(o["kind"], o["replayed"]) for o in replayed] == [("batch", len(probes))], replayed
            posted = http.post("/v1/streams/probes/messages", content=messages, headers=NDJSON)
            assert posted.status_code == 202, posted.text
            batch = until(lambda: len(d := _documents(http, "probes")) == len(probes) and d, what="batch probes")
            chunked = until(
                lambda: len(d := _documents(http, "chunk_probes")) == len(probes) and d, what="chunk probes"
            )
            replay = until(
                lambda: len(d := _documents(http, "replay_probes")) == len(probes) and d, what="replay probes"
            )
            stream = until(
                lambda: len(d := _documents(http, "stream_probes")) == len(probes) and d, what="stream probes"
            )
            assert healthy(http)  # the platform took every probe and still serves
        evil_files = {f["name"]: f for f in cli.json("files", "--tenant", "evil", "--json")}
        assert evil_files["chunked.jsonl"]["chunks"], "the big file was not split"
        # meanwhile the other tenant's file went through as usual
        other = cli.json("files", "--tenant", "other", "--json")
        assert [f["status"] for f in other] == ["ingested"]
    finally:
        up.terminate()
        assert up.wait(timeout=60) == 0
    for app, results in (("batch", batch), ("chunk", chunked), ("replay", replay), ("stream", stream)):
        reached = {(r["probe"], r["target"]): r["reached"] for r in results}
        if sandbox == "on":
            assert not any(reached.values()), f"{app} app reached {[k for k, v in reached.items() if v]}"
        else:
            assert all(reached.values()), f"{app} app failed {[k for k, v in reached.items() if not v]} unconfined"
    assert (cli.home / "owned.txt").exists() == (sandbox == "off")
