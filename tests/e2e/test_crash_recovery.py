"""Kills and outages: a killed manager or an unreachable store loses nothing and duplicates nothing."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import threading
import time
from pathlib import Path

import orjson
import psycopg
import pytest

from tests.conftest import POSTGRES_URL, require_service
from tests.e2e.conftest import Cli
from tests.helpers import until

ROWS = 200_000


def _big_csv(path: Path, rows: int = ROWS) -> Path:
    with open(path, "w") as fh:
        fh.write("id,sensor,value,note\n")
        for n in range(rows):
            fh.write(f"{n},s{n % 97},{n * 0.5},row number {n}\n")
    return path


def _count(cli: Cli, tenant: str, dataset: str) -> int:
    out = cli.run("query", "--tenant", tenant, "--dataset", dataset, "--count").stdout.strip()
    return int(out) if out.isdigit() else -1


def _running_progress(home: Path) -> int:
    rows = 0
    for progress in home.glob("runs/*/progress.json"):
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            rows = max(rows, int(orjson.loads(progress.read_bytes()).get("rows", 0)))
    return rows


@pytest.mark.slow
def test_sigkill_of_the_platform_mid_file_then_restart_stores_every_row_once(cli: Cli, tmp_path: Path) -> None:
    """SIGKILL `up` while the app is half-way through a 200k-row file; after a restart the
    file is re-run (its lease expired) and the store holds every row exactly once."""
    cli.run("tenant", "add", "acme", check=True)
    _big_csv(cli.home / "inbox" / "acme" / ".big.csv.part")
    up = cli.popen("up")
    (cli.home / "inbox" / "acme" / ".big.csv.part").rename(cli.home / "inbox" / "acme" / "big.csv")
    until(lambda: _running_progress(cli.home) >= 20_000, what="app half-way")
    up.send_signal(signal.SIGKILL)
    up.wait(timeout=30)
    partial = _count(cli, "acme", "big")
    assert 0 <= partial < ROWS, "the kill happened mid-file"
    files = orjson.loads(cli.run("files", "--tenant", "acme", "--json").stdout)
    assert [f["status"] for f in files] == ["running"], "the killed run left its lease behind"
    up = cli.popen("up")
    try:
        until(
            lambda: orjson.loads(cli.run("files", "--tenant", "acme", "--json").stdout)[0]["status"] == "ingested",
            what="re-run finished",
        )
    finally:
        up.terminate()
        up.wait(timeout=60)
    assert _count(cli, "acme", "big") == ROWS
    docs = [
        orjson.loads(x)
        for x in cli.run("query", "--tenant", "acme", "--dataset", "big", "--limit", str(ROWS)).stdout.splitlines()
    ]
    ids = [d["id"] for d in docs]
    assert len(ids) == len(set(ids)) == ROWS


def _postgres_outage(role: str) -> None:
    """Drop the app's connections and refuse its logins for 2 s."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'ALTER ROLE "{role}" NOLOGIN')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        time.sleep(2.0)
        conn.execute(f'ALTER ROLE "{role}" LOGIN')


def _sqlite_outage(db: Path) -> None:
    """Hold the tenant's database file locked for 3 s, longer than the app's 1 s store timeout."""
    conn = sqlite3.connect(db, timeout=30.0, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(3.0)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@pytest.mark.slow
def test_store_outage_mid_run_is_retried_and_marks_no_data_bad(
    cli: Cli, tmp_path: Path, backend: str, pg_prefix: str
) -> None:
    """The store goes away mid-run (PostgreSQL: connections killed and logins refused for 2 s;
    SQLite: the file locked past the app's store timeout): the run ends transient (exit 75),
    is retried with backoff, and the file ends ingested with every row once, none quarantined."""
    cli.env.update(MYSIMBDP_MAX_ATTEMPTS="12", MYSIMBDP_STORE_TIMEOUT_S="1")
    cli.run("tenant", "add", "acme", check=True)
    data = _big_csv(tmp_path / "big.csv")
    outage_done = threading.Event()

    def outage() -> None:
        until(lambda: _running_progress(cli.home) >= 10_000, what="app half-way")
        if backend == "postgres":
            require_service("PostgreSQL", "127.0.0.1", 5432)
            _postgres_outage(f"{pg_prefix}_acme")
        else:
            _sqlite_outage(Path(cli.env["MYSIMBDP_COREDMS_URL"].removeprefix("sqlite:///")) / "acme" / "acme.db")
        outage_done.set()

    thread = threading.Thread(target=outage, daemon=True)
    thread.start()
    summary = cli.json("ingest", str(data), "--tenant", "acme", "--json")
    thread.join(timeout=60)
    assert outage_done.is_set()
    assert summary["status"] == "ingested", summary
    assert summary["attempts"] >= 2, "the outage made at least one transient failure"
    assert summary["rows_rejected"] == 0 and summary["rows_written"] == ROWS
    assert _count(cli, "acme", "big") == ROWS
    report = cli.json("report", "--tenant", "acme", "--json")["tenants"][0]
    assert report["quarantined_rows"] == 0
    assert report["runs_failed"] >= 1, "the transient run is on record"
