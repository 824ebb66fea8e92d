"""A tenant with two stream apps inside ``mysimbdp up``: the example tenant "sensors" posts
to its streams ``readings`` and ``status`` and each stream's first message starts instances
of its own app (its own program, started by the stream manager), whose documents land in
that app's dataset; a stream no app serves starts nothing. Over SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import sys
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import httpx

from mysimbdp.domain.envelope import parse_post
from mysimbdp.sdk import Reject
from tests.e2e.conftest import Cli, healthy
from tests.helpers import ROOT, until

SENSORS = ROOT / "examples" / "tenants" / "sensors"
LINES = 60  # of each stream sample: enough for every kind of outcome, quick to consume
NDJSON = {"Content-Type": "application/x-ndjson"}
# stream -> (the app profile.yaml names for it, its program in the bundle, its dataset)
APPS = {
    "readings": ("readings", "stream_app.py", "readings"),
    "status": ("status", "status_app.py", "device_status"),
}


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _body(stream: str) -> bytes:
    return b"\n".join((SENSORS / "data" / "stream" / f"{stream}.ndjson").read_bytes().splitlines()[:LINES])


def _expected_documents(stream: str) -> int:
    """How many documents the stream's app must store from the posted lines: its transform
    run here on them (the app imports ``batch_app``, bound to the tenant's for the load)."""
    batch = _load(SENSORS / "batch_app.py", "e2e_sensors_batch_app")
    with mock.patch.dict(sys.modules, {"batch_app": batch}):
        transform = _load(SENSORS / APPS[stream][1], f"e2e_sensors_{stream}_app").transform
    stored = 0
    for envelope in parse_post(_body(stream), ndjson=True):
        with contextlib.suppress(Reject):  # quarantined
            stored += transform(envelope.data) is not None
    return stored


def _count(cli: Cli, dataset: str) -> int:
    proc = cli.run("query", "--tenant", "sensors", "--dataset", dataset, "--count")
    return int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0


def _holds(cli: Cli, dataset: str, documents: int) -> bool:
    return _count(cli, dataset) == documents


def _running_by_stream(cli: Cli) -> dict[str, list[dict[str, Any]]]:
    rows = cli.json("stream", "status", "--tenant", "sensors", "--json")
    return {
        row["stream"]: [i | {"target_app": row["app"]} for i in row["instance_list"] if i["state"] == "running"]
        for row in rows
    }


def _program(pid: int) -> str | None:
    """The script an instance process runs (its argv after the interpreter); None once the
    process is gone (the monitor may scale an instance down between two looks)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return None
    return Path(argv[1].decode()).name if len(argv) > 1 else None


def _running_with_programs(cli: Cli) -> dict[str, list[dict[str, Any]]] | None:
    """Each stream's running instances, each with the program its live process runs; None
    while a stream has none, or while an instance listed as running has no process."""
    found = _running_by_stream(cli)
    if not all(found.get(s) for s in APPS):
        return None
    for instances in found.values():
        for instance in instances:
            if (program := _program(instance["pid"])) is None:
                return None
            instance["program"] = program
    return found


def test_each_stream_is_consumed_by_instances_of_its_own_app(cli: Cli) -> None:
    expected = {stream: _expected_documents(stream) for stream in APPS}
    assert all(count > 0 for count in expected.values())
    key = cli.json("tenant", "add", "sensors", "--profile", str(SENSORS / "profile.yaml"), "--json")["api_key"]
    api = f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
    up = cli.popen("up")
    try:
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
            until(lambda: healthy(http), what="the API")
            for stream, (_, _, dataset) in APPS.items():
                posted = http.post(f"/v1/streams/{stream}/messages", content=_body(stream), headers=NDJSON)
                assert posted.status_code == 202, posted.text
                assert posted.json()["dataset"] == dataset
            other = http.post("/v1/streams/alerts/messages", content=b'{"id": "a1", "data": {"n": 1}}', headers=NDJSON)
            assert other.status_code == 202  # accepted and kept in the broker; no app serves it

        running = until(partial(_running_with_programs, cli), what="a live instance of each stream's app")
        assert set(running) == set(APPS)  # stream alerts: no target, no instance
        for stream, (app, program, _) in APPS.items():
            for instance in running[stream]:
                assert (instance["stream"], instance["app"], instance["target_app"]) == (stream, app, app)
                assert instance["program"] == program
        for stream, (_, _, dataset) in APPS.items():
            until(partial(_holds, cli, dataset, expected[stream]), what=f"{expected[stream]} documents in {dataset}")
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
    assert {dataset: _count(cli, dataset) for _, _, dataset in APPS.values()} == {
        "readings": expected["readings"],
        "device_status": expected["status"],
    }
