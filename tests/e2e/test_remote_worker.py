"""Chunk workers without a shared disk, on separate hosts (network namespaces, tests/netns.py).

Host A runs `mysimbdp up` bound to its own address with no chunk worker of its own
(MYSIMBDP_WORKERS=0); host B runs `mysimbdp worker --api http://A:port` with a worker token
and an empty home of its own. coredms is the machine's PostgreSQL, reached by both hosts
through a TCP forwarder on the bridge's address (the hosts see nothing of the root
namespace's loopback); the meta store is SQLite in A's home, which B never sees.

A chunked file of a few MB ends ingested with every row once, every chunk run by B; B's
home holds the cached bundle and nothing of the file. Then B is killed mid-chunk (its
worker and app with it): a fresh worker on B takes the chunk once its lease expired and the
file still ends with every row once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from mysimbdp.adapters.broker.nats import free_port
from mysimbdp.adapters.metastore import MetaStore
from mysimbdp.adapters.metastore.chunks import ChunkStatus
from mysimbdp.domain.states import RunStatus
from tests import netns
from tests.conftest import POSTGRES_URL, require_service
from tests.e2e.conftest import Cli, healthy
from tests.forward import Forwarder
from tests.helpers import until

PROFILE = """
formats: [csv]
dataset: readings
limits: {{max_file_size_bytes: 50000000}}
big_files: {{threshold_bytes: 10000, chunk_bytes: {chunk_bytes}}}
batch_apps:
  - name: app
    command: {command}
"""
GENERIC = '["{python}", "-m", "mysimbdp.apps.generic"]'
SLOW_APP = (
    "import time\nfrom mysimbdp import sdk\n\n\n"
    "def transform(row):\n    time.sleep(0.01)\n    return row\n\n\n"
    "sdk.run_batch(transform)\n"
)
BIG_ROWS = 60_000  # ~2.3 MB, 6 chunks of 400 KB
SLOW_ROWS = 1_200  # ~30 KB, 5 chunks of 6 KB, ~1.5 s of app each


@pytest.fixture
def net() -> Iterator[netns.Network]:
    netns.require()
    with netns.Network() as network:
        yield network


@pytest.fixture
def coredms_via_bridge(net: netns.Network) -> Iterator[str]:
    """The machine's PostgreSQL as the hosts reach it: through the bridge's address."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    parts = urlsplit(POSTGRES_URL)
    forwarder = Forwarder(net.gateway, (parts.hostname or "127.0.0.1", parts.port or 5432))
    user = parts.netloc.rpartition("@")[0]
    yield urlunsplit(parts._replace(netloc=f"{user}@{net.gateway}:{forwarder.port}"))
    forwarder.close()


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    env.update(MYSIMBDP_LOG_FORMAT="json", **values)
    return env


def _csv(path: Path, rows: int) -> Path:
    with open(path, "w", newline="") as fh:
        fh.write("id,sensor,value,note\n")
        for n in range(rows):
            fh.write(f'{n},s{n % 13},{n * 0.25},"note, {n}"\n')
    return path


def _write_bundle(root: Path, name: str, command: str, chunk_bytes: int, files: dict[str, str]) -> Path:
    bundle = root / "bundles" / name
    bundle.mkdir(parents=True)
    (bundle / "profile.yaml").write_text(PROFILE.format(chunk_bytes=chunk_bytes, command=command))
    for file_name, text in files.items():
        (bundle / file_name).write_text(text)
    return bundle / "profile.yaml"


def _count(cli: Cli, tenant: str) -> int:
    out = cli.run("query", "--tenant", tenant, "--dataset", "readings", "--count", check=True)
    return int(out.stdout.strip())


def _statuses(meta: MetaStore, file_id: str) -> list[str]:
    """The file's status history (its events' statuses, oldest first)."""
    return [status for _, status, _ in meta.file_events(file_id)]


def _assert_ledger_consistent(meta: MetaStore, file_id: str, rows: int) -> None:
    """The file and its chunk ledger agree: every chunk done, its rows adding up to the file's;
    each chunk claimed as many times as it was attempted, done by exactly one claim, the one of
    its last run, which succeeded; no other run succeeded or failed for good; the file went
    through one run (chunked) to ``ingested``, with no retry of its own."""
    record, chunks = meta.get_file(file_id), meta.chunks.of_file(file_id)
    claims, runs = meta.worker_claims.of_file(file_id), meta.history.file_runs(file_id)
    assert record is not None and record.status == "ingested" and record.attempts == 1, record
    assert chunks and all(c.status is ChunkStatus.DONE for c in chunks), chunks
    assert sum(c.rows_written for c in chunks) == record.rows_written == rows
    assert Counter(c.index for c in claims) == {c.index: c.attempts for c in chunks}, claims
    assert sorted((c.index, c.run_id) for c in claims if c.outcome == "done") == [(c.index, c.run_id) for c in chunks]
    succeeded = sorted(r.id for r in runs if r.status is RunStatus.SUCCEEDED)
    assert succeeded == sorted(c.run_id for c in chunks), runs
    assert len(runs) == len(claims) and not any(r.status is RunStatus.FAILED for r in runs), runs
    assert all(r.status is not None and r.ended_at for r in runs), runs  # no run left open, none claimed
    assert all(c.outcome for c in claims), claims
    assert _statuses(meta, file_id) == ["received", "staged", "running", "running", "ingested"]


def _worker(host: netns.Host, api: str, home: Path, token: str, log: Path) -> subprocess.Popen[Any]:
    env = _env(MYSIMBDP_HOME=str(home), MYSIMBDP_API_URL=api, MYSIMBDP_WORKER_TOKEN=token)
    with log.open("ab") as err:
        return host.popen([sys.executable, "-m", "mysimbdp", "worker", "--slots", "2"], env=env, stderr=err)


def _stop(*procs: subprocess.Popen[Any] | None) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.terminate()
    for proc in procs:
        if proc is not None:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.slow
def test_a_worker_on_another_host_without_the_platform_home_runs_every_chunk_and_a_killed_one_loses_nothing(
    net: netns.Network, coredms_via_bridge: str, pg_prefix: str, tmp_path: Path
) -> None:
    """Host A: `up --host A` with no chunk worker; host B: `worker --api http://A:port` with an
    empty home. A 2.3 MB file in 6 chunks ends ingested with every row once, every chunk run by
    B's worker (the ledger's claims name it), B's home holding only the cached bundle. Then B is
    killed mid-chunk; a fresh worker on B runs that chunk again once its lease expired: the
    second file too ends with every row once, the killed chunk done at its second attempt. Each
    file's chunk ledger ends consistent: every chunk done once, by the claim of its last run."""
    a, b = net.host("a"), net.host("b")
    a_home, b_home = tmp_path / "a-home", tmp_path / "b-home"
    b_home.mkdir()
    port = free_port()
    env = _env(
        MYSIMBDP_HOME=str(a_home),
        MYSIMBDP_COREDMS_URL=coredms_via_bridge,
        MYSIMBDP_PG_PREFIX=pg_prefix,
        MYSIMBDP_WORKERS="0",  # only the remote worker runs chunks
        MYSIMBDP_LEASE_TTL_S="3",
        MYSIMBDP_RETRY_BASE_S="0.2",
        MYSIMBDP_POLL_INTERVAL_S="0.2",
        MYSIMBDP_SETTLE_S="0.3",
    )
    cli = Cli(a_home, env)
    big = _write_bundle(tmp_path, "acme", GENERIC, 400_000, {})
    slow = _write_bundle(tmp_path, "slow", '["{python}", "{bundle}/app.py"]', 6_000, {"app.py": SLOW_APP})
    cli.run("tenant", "add", "acme", "--profile", str(big), check=True)
    cli.run("tenant", "add", "slow", "--profile", str(slow), check=True)
    token = cli.json("worker", "token", "create", "--name", "host-b", "--json")
    api = f"http://{a.address}:{port}"
    up_log, b_log = tmp_path / "up.log", tmp_path / "b.log"
    with up_log.open("ab") as err:
        up = a.popen(
            [sys.executable, "-m", "mysimbdp", "up", "--host", a.address, "--port", str(port)], env=env, stderr=err
        )
    first = second = None
    meta = MetaStore(f"sqlite:///{a_home / 'meta.db'}")
    try:
        with httpx.Client(base_url=api, timeout=2.0) as http:
            until(lambda: healthy(http), 60, f"the API on host A ({api})")
        first = _worker(b, api, b_home, token["token"], b_log)
        meta.start()
        summary = cli.json("ingest", str(_csv(tmp_path / "readings.csv", BIG_ROWS)), "--tenant", "acme", "--json")
        assert summary["status"] == "ingested", (summary, up_log.read_text()[-3000:], b_log.read_text()[-3000:])
        assert summary["rows_written"] == BIG_ROWS and _count(cli, "acme") == BIG_ROWS
        chunks = meta.chunks.of_file(summary["file_id"])
        assert len(chunks) >= 5 and all(c.status is ChunkStatus.DONE and c.attempts == 1 for c in chunks)
        claims = meta.worker_claims.of_file(summary["file_id"])
        assert sorted((c.index, c.outcome) for c in claims) == [(c.index, "done") for c in chunks]
        assert {c.worker.rsplit(":", 2)[0] for c in claims} == {f"api:{token['id']}:{socket.gethostname()}"}
        assert {c.worker.split(":")[3] for c in claims} == {str(first.pid)}  # B's worker process
        _assert_ledger_consistent(meta, summary["file_id"], BIG_ROWS)
        kept = [p.relative_to(b_home) for p in b_home.rglob("*") if p.is_file()]
        assert kept and all(p.parts[:2] == ("worker", "bundles") for p in kept), kept  # no staged bytes, no runs

        cli.run("ingest", str(_csv(tmp_path / "slow.csv", SLOW_ROWS)), "--tenant", "slow", check=True)
        (slow_file,) = until(lambda: meta.list_files(tenant="slow"), 30, "the slow file's record")

        def half_way() -> list[Any]:
            running = [c for c in meta.chunks.of_file(slow_file.id) if c.status is ChunkStatus.RUNNING]
            return [c for c in running if time.time() - c.started_at > 0.7]

        killed = until(half_way, 60, "a chunk half-way on B")[0]
        b.kill_all()  # the worker and its app, mid-chunk
        first.wait(timeout=10)
        second = _worker(b, api, b_home, token["token"], b_log)
        until(lambda: meta.get_file(slow_file.id).status == "ingested", 90, "the slow file ingested")  # type: ignore[union-attr]
        again = meta.chunks.get(slow_file.id, killed.index)
        assert again is not None and again.status is ChunkStatus.DONE and again.attempts == 2
        record = meta.get_file(slow_file.id)
        assert record is not None and record.rows_written == SLOW_ROWS
        assert _count(cli, "slow") == SLOW_ROWS
        of_killed = [c for c in meta.worker_claims.of_file(slow_file.id) if c.index == killed.index]
        assert [(c.outcome, c.worker.split(":")[3]) for c in of_killed] == [
            ("lease_expired", str(first.pid)),  # ended when its chunk was queued again
            ("done", str(second.pid)),
        ]
        _assert_ledger_consistent(meta, slow_file.id, SLOW_ROWS)
        runs = {r.id: r for r in meta.history.file_runs(slow_file.id)}  # the killed chunk's: lost, then done
        assert [runs[c.run_id].status for c in of_killed] == [RunStatus.TRANSIENT, RunStatus.SUCCEEDED]
        assert "expired" in runs[of_killed[0].run_id].error and runs[of_killed[0].run_id].ended_at
        assert not meta.worker_claims.open_of_tenant(token["id"], "slow")  # no chunk still held by a claim
    finally:
        meta.close()
        _stop(second, up)
