"""Tenant apps that misbehave: each gets a clear failed record; nothing else is lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import Cli
from tests.helpers import on_backends

PROFILE = """
formats: [csv]
dataset: things
batch_apps:
  - name: app
    command: ["{{python}}", "{{bundle}}/app.py"]
    timeout_s: {timeout_s}
    memory_mb: 256
"""

APPS = {
    "crash": "raise RuntimeError('boom: cannot parse the thing')\n",
    "exit3": "import sys\nprint('giving up', file=sys.stderr)\nsys.exit(3)\n",
    "hang": "import time\ntime.sleep(600)\n",
    "memory": "blob = bytearray(2 * 1024 ** 3)\n",
    "flood": (
        "import sys\nfrom mysimbdp import sdk\n"
        "chunk = 'x' * 65536 + '\\n'\n"
        "for _ in range(3000):\n    sys.stdout.write(chunk)\n"
        "sdk.run_batch(lambda row: row)\n"
    ),
}


def _setup(cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path, app: str, timeout_s: float = 60) -> Path:
    profile = write_tenant(app, PROFILE.format(timeout_s=timeout_s), {"app.py": APPS[app]})
    cli.run("tenant", "add", app, "--profile", str(profile), check=True)
    data = tmp_path / "things.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    return data


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("crash", "boom: cannot parse the thing"),
        ("exit3", "exit 3"),
        ("hang", "timed out after 2.0 s"),
        ("memory", "MemoryError"),
    ],
)
@on_backends("sqlite")
def test_failing_app_fails_the_file_with_the_reason(
    cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path, app: str, expected: str
) -> None:
    """A crash, a non-zero exit, a hang past the timeout and a memory blow-up each end as a
    failed file (exit 4) whose reason or stderr tail says what happened; the file is kept."""
    data = _setup(cli, write_tenant, tmp_path, app, timeout_s=2 if app == "hang" else 60)
    proc = cli.run("ingest", str(data), "--tenant", app, "--json")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    summary = orjson.loads(proc.stdout)
    assert summary["status"] == "failed" and summary["attempts"] == 1, "permanent failures are not retried"
    runs = orjson.loads(cli.run("report", "--tenant", app, "--json").stdout)["tenants"][0]
    assert runs["runs_failed"] == 1
    failed = list((cli.home / "failed" / app).iterdir())
    assert len(failed) == 1 and failed[0].read_text() == "a,b\n1,2\n3,4\n"
    history = orjson.loads(cli.run("files", "--tenant", app, "--json").stdout)
    assert history[0]["reasons"], history
    reasons = " ".join(history[0]["reasons"])
    stderr_tail = _stderr_tail(cli, app)
    assert expected in reasons or expected in stderr_tail, (reasons, stderr_tail)


def _stderr_tail(cli: Cli, tenant: str) -> str:
    from mysimbdp.adapters.metastore import MetaStore

    meta = MetaStore(cli.env["MYSIMBDP_META_URL"])
    meta.start()
    try:
        return " ".join(run.stderr_tail for run in meta.list_runs(tenant))
    finally:
        meta.close()


@on_backends("sqlite")
def test_app_flooding_stdout_still_ingests(cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path) -> None:
    """~200 MB written to stdout is drained and bounded; the rows still land."""
    data = _setup(cli, write_tenant, tmp_path, "flood")
    summary = cli.json("ingest", str(data), "--tenant", "flood", "--json")
    assert summary["status"] == "ingested" and summary["rows_written"] == 2
