"""The README's first command, ``mysimbdp demo``, on the example tenants and the embedded
default: both halves run, the summary shows what the example data must give, each of
tenant sensors' files went to the batch app its name and format choose, and the one sample
sent over HTTP (POST /v1/files) was ingested."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from mysimbdp.adapters.broker.nats import free_port
from tests import clifork
from tests.helpers import ROOT

EXAMPLES = ROOT / "examples" / "tenants"


def test_the_demo_ingests_both_ways_and_scales_the_stream_apps(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    env.update(MYSIMBDP_LOG_LEVEL="error", MYSIMBDP_API_PORT=str(free_port()), COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "mysimbdp", "--home", str(tmp_path / "home"), "demo", "--examples", str(EXAMPLES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    batch = {m[0]: m[1:] for m in re.findall(r"│ (\w+)\s+│ (\d+)\s+│ (\d+)\s+│ (\d+)\s+│ (\d+)\s+│", out)}
    # sensors: readings_001/002.jsonl (3,780 rows, 20 quarantined) and the device register
    # (40 rows, 3 quarantined) accepted; readings_legacy.csv rejected, no app takes a readings CSV
    assert batch["flights"] == ("4", "1", "3582", "4") and batch["sensors"] == ("3", "1", "3820", "23")
    assert "file 'readings_legacy.csv': rule app: no batch app takes this file (format csv)" in out
    stream = dict(re.findall(r"│ (\w+/\w+)\s+│ \d+ \(\d+\)\s+│ \d+\s+│ (\d+ \(\w+\)\s+│ \d+)", out))
    assert re.sub(r"\s+", " ", stream["flights/status"]) == "293 (flight_status) │ 9"
    assert re.sub(r"\s+", " ", stream["sensors/readings"]) == "4148 (readings) │ 12"  # 3,780 from files + 368
    assert re.sub(r"\s+", " ", stream["sensors/status"]) == "184 (device_status) │ 6"
    for name in ("flights/status", "sensors/readings", "sensors/status"):
        assert re.search(rf"{name}: 1 → 2 instances: .*scale up", out), out
        assert re.search(rf"{name}: 2 → 1 instances: idle .*scale down", out), out
    assert not re.search(r"sensors/status: 2 → 3", out)  # the status app's max_instances is 2

    files = clifork.run(["--home", str(tmp_path / "home"), "files", "--tenant", "sensors", "--json"], env=env)
    apps = {f["name"]: (f["status"], f["app"], f["dataset"]) for f in json.loads(files.stdout)}
    assert apps == {  # the app each file's name and format chose, and the dataset it wrote
        "readings_001.jsonl": ("ingested", "readings", "readings"),
        "readings_002.jsonl": ("ingested", "readings", "readings"),
        "devices_2024-03-01.csv": ("ingested", "devices", "devices"),
        "readings_legacy.csv": ("rejected", "", ""),
    }

    sent = re.search(
        r"demo: sent (\S+) over HTTP \(POST /v1/files, tenant (\w+)'s key\): 201 file (\w+) staged, then (\w+)", out
    )
    assert sent is not None, out
    name, tenant, file_id, final = sent.groups()
    assert (name, tenant, final) == ("flights_2013-01-01.csv", "flights", "ingested")
    flights = clifork.run(["--home", str(tmp_path / "home"), "files", "--tenant", "flights", "--json"], env=env)
    by_id = {f["file_id"]: f for f in json.loads(flights.stdout)}
    assert by_id[file_id]["name"] == name and by_id[file_id]["status"] == "ingested"
