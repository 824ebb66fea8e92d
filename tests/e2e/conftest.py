"""End-to-end helpers: run the real ``mysimbdp`` CLI as a subprocess against a home."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from mysimbdp.adapters.broker.nats import free_port
from tests import clifork
from tests.helpers import process_alive


@dataclass
class Cli:
    home: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = False, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``python -m mysimbdp ARGS``, forked from a warm server (tests/clifork.py): its own
        process, environment, output and exit code, without paying the imports again."""
        proc = clifork.run(args, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"mysimbdp {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        proc = self.run(*args)
        try:
            return orjson.loads(proc.stdout)
        except orjson.JSONDecodeError as exc:
            raise AssertionError(f"not JSON ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from exc

    def stream_instances(self, tenant: str) -> tuple[list[tuple[str, str, int]], list[tuple[str, bool]]]:
        """The meta store's stream targets of ``tenant`` (stream, app, instances) and every
        instance it does not record stopped (its state, whether its pid is alive), as
        ``stream status`` shows them."""
        rows = self.json("stream", "status", "--tenant", tenant, "--json")
        targets = [(row["stream"], row["app"], row["instances"]) for row in rows]
        return targets, [(i["state"], process_alive(i["pid"])) for row in rows for i in row["instance_list"]]

    def up_log(self, tail_chars: int = 4000) -> str:
        """The end of what the processes of :meth:`popen` wrote to stderr (for a failure's message)."""
        path = self.home.parent / "up.log"
        return path.read_text(errors="replace")[-tail_chars:] if path.exists() else "(no up.log)"

    def popen(self, *args: str) -> clifork.Forked | subprocess.Popen[bytes]:
        """Start ``python -m mysimbdp ARGS`` (``up``, ``worker``), stderr appended to ``up.log``."""
        return clifork.popen(args, env=self.env, stderr=self.home.parent / "up.log")


@pytest.fixture
def cli(home: Path, meta_url: str, coredms_url: str, pg_prefix: str) -> Cli:
    """The CLI on a fresh home, over the parametrized backend (SQLite or PostgreSQL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    env.update(
        MYSIMBDP_HOME=str(home),
        MYSIMBDP_META_URL=meta_url,
        MYSIMBDP_COREDMS_URL=coredms_url,
        MYSIMBDP_PG_PREFIX=pg_prefix,
        MYSIMBDP_LOG_FORMAT="json",
        MYSIMBDP_RETRY_BASE_S="0.2",
        MYSIMBDP_LEASE_TTL_S="3",
        MYSIMBDP_POLL_INTERVAL_S="0.2",
        MYSIMBDP_SETTLE_S="0.3",
        MYSIMBDP_API_PORT=str(free_port()),  # `up` serves the API; tests must not share a port
    )
    return Cli(home, env)


@pytest.fixture
def write_tenant(tmp_path: Path) -> Callable[..., Path]:
    """Write a tenant bundle (profile.yaml + app files) and return the profile path."""

    def write(name: str, profile: str, files: dict[str, str] | None = None) -> Path:
        bundle = tmp_path / "bundles" / name
        bundle.mkdir(parents=True)
        (bundle / "profile.yaml").write_text(profile)
        for file_name, text in (files or {}).items():
            (bundle / file_name).write_text(text)
        return bundle / "profile.yaml"

    return write


def healthy(http: Any) -> bool:
    """``/healthz`` of the API behind ``http`` (an ``httpx.Client``) answers 200."""
    import httpx

    try:
        return bool(http.get("/healthz").status_code == 200)
    except httpx.TransportError:
        return False


def wait_until_up(cli: Cli, timeout_s: float = 60.0) -> None:
    """Until the `up` started by ``cli`` has its fetchdata and batch manager beating. Before
    that, `mysimbdp ingest` sees no running platform and runs the file itself, which a test
    of what `up` does with the file must not let happen."""
    from mysimbdp.adapters.metastore import MetaStore
    from mysimbdp.domain.components import BATCH_MANAGER, FETCHDATA
    from tests.helpers import until

    meta = MetaStore(cli.env["MYSIMBDP_META_URL"])
    meta.start()
    try:
        until(lambda: meta.alive(FETCHDATA, 5) and meta.alive(BATCH_MANAGER, 5), timeout_s, "the platform's heartbeats")
    finally:
        meta.close()
