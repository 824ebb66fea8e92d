"""Write modes merge and replace under a SIGKILL of the whole platform (`mysimbdp up` and
its process group) mid-file, then a restart (SQLite and PostgreSQL): the killed run's lease
expires, the file is run again from its start, and the dataset ends as one clean run would
have left it. Merge: every key holds its newest version (a correction older by ``order_by``
never wins, not in the killed run and not in the re-run), no row lost or doubled. Replace: a
reader sees the old content whole until the swap and the new content whole after it, also
in the dead window between the kill and the restart.

The app sleeps ``pause_ms`` per row (a column of the file, dropped from the document) and
writes batches of 50 rows, so the kill lands while part of the file is written; the tests
wait for that part in the store itself (the dataset, or the replace's generation table)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from mysimbdp.adapters.coredms.base import generation_table, namespace, table_name
from mysimbdp.adapters.metastore import MetaStore
from mysimbdp.adapters.metastore.chunks import ChunkStatus
from tests import clifork
from tests.conftest import POSTGRES_URL
from tests.e2e.conftest import Cli, wait_until_up
from tests.helpers import until

APP = (
    "import time\nfrom mysimbdp import sdk\n\n\n"
    "def transform(row):\n"
    "    pause = int(row.pop('pause_ms'))\n"
    "    if pause:\n"
    "        time.sleep(pause / 1000)\n"
    "    return {'k': row['k'], 'v': int(row['v']), 'tag': row['tag']}\n\n\n"
    "sdk.run_batch(transform, batch_size=50)\n"
)
PROFILE = """
formats: [csv]
dataset: {dataset}
key_fields: [k]
write: {write}
stream_apps: []
batch_apps:
  - name: app
    command: ["{{python}}", "{{bundle}}/app.py"]
{extra}"""
pytestmark = pytest.mark.slow  # process kills, as tests/e2e/test_crash_recovery.py

PAUSE_MS = 2  # per row of the file the kill lands in: 760 or 800 rows, ~2 s of app time


def _csv(path: Path, rows: list[tuple[str, int, str]], pause_ms: int) -> Path:
    path.write_text("k,v,tag,pause_ms\n" + "".join(f"{k},{v},{tag},{pause_ms}\n" for k, v, tag in rows))
    return path


class Store:
    """Raw reads of the tenant's tables, one statement each (one snapshot), beside the platform."""

    def __init__(self, cli: Cli, backend: str, pg_prefix: str) -> None:
        self.backend = backend
        self.schema = namespace("acme", pg_prefix)
        coredms = cli.env["MYSIMBDP_COREDMS_URL"]
        self.db = Path(coredms.removeprefix("sqlite:///")) / "acme" / "acme.db" if backend == "sqlite" else None

    def docs(self, table: str) -> list[dict[str, Any]] | None:
        """Every document of ``table``; None when there is no such table."""
        if self.db is not None:
            conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30.0, isolation_level=None)
            try:
                return [orjson.loads(doc) for (doc,) in conn.execute(f'SELECT doc FROM "{table}"')]
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return None
                raise
            finally:
                conn.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
            try:
                return [doc for (doc,) in pg.execute(f'SELECT doc FROM "{self.schema}"."{table}"')]
            except psycopg.errors.UndefinedTable:
                return None


def _popen_up(cli: Cli) -> subprocess.Popen[bytes]:
    """`mysimbdp up` in a session (and process group) of its own, so the test can kill the group."""
    return clifork.popen(["up"], env=cli.env, stderr=cli.home.parent / "up.log", new_session=True)


def _kill_group(up: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(up.pid, sig)
    up.wait(timeout=60)


@pytest.fixture
def meta(cli: Cli) -> Iterator[MetaStore]:
    store = MetaStore(cli.env["MYSIMBDP_META_URL"])
    store.start()
    yield store
    store.close()


@pytest.fixture
def platform(cli: Cli) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The `up` processes a test starts (append to the list); stopped at the end, whatever happened."""
    ups: list[subprocess.Popen[bytes]] = []
    yield ups
    for up in ups:
        if up.poll() is None:
            _kill_group(up, signal.SIGTERM)


def _start(cli: Cli, ups: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    up = _popen_up(cli)
    ups.append(up)
    wait_until_up(cli)
    return up


def _the_file(meta: MetaStore, name: str) -> str:
    def find() -> str:
        return next((f.id for f in meta.list_files(tenant="acme") if f.name == name), "")

    return until(find, 30, f"the file {name}")


def _until_ingested(cli: Cli, meta: MetaStore, file_id: str, also: Callable[[], None] = lambda: None) -> None:
    def done() -> bool:
        also()
        record = meta.get_file(file_id)
        assert record is not None and record.status not in ("failed", "rejected"), record
        return record.status == "ingested"

    try:
        until(done, 60, "the re-run finished", every_s=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cli.up_log()}") from exc


def _assert_ingested_once(meta: MetaStore, file_id: str, name: str, *, chunked: bool = False) -> None:
    """One record for the file, ingested; its history reached `ingested` once, after two runs
    (chunked: a run per chunk, and another of each chunk the kill caught running)."""
    mine = [f for f in meta.list_files(tenant="acme") if f.name == name]
    assert [(f.id, f.status) for f in mine] == [(file_id, "ingested")], mine
    statuses = [status for _, status, _ in meta.file_events(file_id)]
    assert statuses.count("ingested") == 1, statuses
    runs = [r for r in meta.list_runs("acme") if r.file_id == file_id]
    if not chunked:
        assert len(runs) == 2, runs  # the killed run and the re-run
        return
    chunks = meta.chunks.of_file(file_id)
    assert len(chunks) > 3 and {c.status for c in chunks} == {ChunkStatus.DONE}, chunks
    # a chunk the kill caught running ran again (mostly one or two; between two chunks, none)
    assert max(c.attempts for c in chunks) <= 2, chunks
    assert len(runs) == sum(c.attempts for c in chunks), (runs, chunks)


def _query(cli: Cli, dataset: str) -> list[dict[str, Any]]:
    out = cli.run("query", "--tenant", "acme", "--dataset", dataset, check=True).stdout
    return [orjson.loads(line) for line in out.splitlines()]


# -- merge ----------------------------------------------------------------------------------------

STORED = 600  # keys k0000..k0599, stored at v=5
ADDED = 100  # keys the corrections add, k0600..k0699


def _corrections() -> tuple[list[tuple[str, int, str]], dict[str, tuple[int, str]]]:
    """The corrections file's rows, and what each key must hold after it: two keys of three
    get a newer version (v=9), the third an older one (v=1, loses to the stored v=5); new
    keys; then every tenth key again, older still (v=3: arrives last, never wins)."""
    rows: list[tuple[str, int, str]] = []
    expected: dict[str, tuple[int, str]] = {}
    for n in range(STORED):
        newer = n % 3 != 0
        rows.append((f"k{n:04}", 9 if newer else 1, "new" if newer else "stale"))
        expected[f"k{n:04}"] = (9, "new") if newer else (5, "base")
    for n in range(STORED, STORED + ADDED):
        rows.append((f"k{n:04}", 9, "new"))
        expected[f"k{n:04}"] = (9, "new")
    rows += [(f"k{n:04}", 3, "late") for n in range(0, STORED, 10)]
    return rows, expected


def test_merge_sigkill_mid_file_then_restart_leaves_every_key_at_its_newest_version(
    cli: Cli,
    write_tenant: Callable[..., Path],
    tmp_path: Path,
    backend: str,
    pg_prefix: str,
    meta: MetaStore,
    platform: list[subprocess.Popen[bytes]],
) -> None:
    profile = PROFILE.format(dataset="prices", write="{mode: merge, order_by: v}", extra="")
    cli.run("tenant", "add", "acme", "--profile", str(write_tenant("acme", profile, {"app.py": APP})), check=True)
    store = Store(cli, backend, pg_prefix)
    table = table_name("prices")
    base = _csv(tmp_path / "base.csv", [(f"k{n:04}", 5, "base") for n in range(STORED)], 0)
    rows, expected = _corrections()
    corrections = _csv(tmp_path / "corrections.csv", rows, PAUSE_MS)
    summary = cli.json("ingest", str(base), "--tenant", "acme", "--json")  # no `up` yet: the CLI runs it
    assert summary["status"] == "ingested" and summary["rows_written"] == STORED, summary
    up = _start(cli, platform)

    cli.run("ingest", str(corrections), "--tenant", "acme", check=True)  # handed to `up`, not waited for
    file_id = _the_file(meta, "corrections.csv")
    newer = sum(1 for v, _ in expected.values() if v == 9)

    def tags() -> dict[str, int]:
        counts: dict[str, int] = {}
        for doc in store.docs(table) or []:
            counts[doc["tag"]] = counts.get(doc["tag"], 0) + 1
        return counts

    until(lambda: tags().get("new", 0) >= 100, 30, "part of the corrections written", every_s=0.05)
    _kill_group(up)
    after_kill = tags()
    assert 100 <= after_kill["new"] < newer, f"the kill landed mid-file: {after_kill}"
    assert set(after_kill) <= {"base", "new"}, f"an older correction won in the killed run: {after_kill}"
    time.sleep(0.5)
    assert tags() == after_kill, "nothing writes after the kill"
    record = meta.get_file(file_id)
    assert record is not None and record.status == "running", record  # the killed run's lease

    _start(cli, platform)
    _until_ingested(cli, meta, file_id)

    docs = _query(cli, "prices")
    assert len(docs) == STORED + ADDED, len(docs)
    keys = [d["k"] for d in docs]
    assert len(set(keys)) == len(keys) == len(expected), "no key lost, none doubled"
    wrong = {d["k"]: (d["v"], d["tag"]) for d in docs if (d["v"], d["tag"]) != expected[d["k"]]}
    assert not wrong, f"{len(wrong)} keys not at their newest version, e.g. {sorted(wrong.items())[:5]}"
    _assert_ingested_once(meta, file_id, "corrections.csv")


# -- replace --------------------------------------------------------------------------------------

OLD = [(str(n), 1, "old") for n in range(300)]
NEW = [(str(n), 2, "new") for n in range(1000, 1800)]


def _whole(docs: list[dict[str, Any]] | None) -> str:
    """Which content a read saw: "old" or "new", each only when whole; anything else is a failure."""
    assert docs is not None, "the dataset's table was missing"
    got = sorted((d["k"], d["v"], d["tag"]) for d in docs)
    if got == sorted(OLD):
        return "old"
    if got == sorted(NEW):
        return "new"
    tags = {tag for _, _, tag in got}
    raise AssertionError(f"a half-replaced dataset: {len(got)} rows, tags {tags}")


# the new file (~10 KB) in chunks of 2 KB, run by `up`'s chunk workers; the old one (~3 KB) whole
CHUNKED = "big_files: {threshold_bytes: 8000, chunk_bytes: 2048}\n"


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
def test_replace_sigkill_mid_file_then_restart_shows_a_reader_old_or_new_whole(
    chunked: bool,
    cli: Cli,
    write_tenant: Callable[..., Path],
    tmp_path: Path,
    backend: str,
    pg_prefix: str,
    meta: MetaStore,
    platform: list[subprocess.Popen[bytes]],
) -> None:
    profile = PROFILE.format(dataset="snap", write="{mode: replace}", extra=CHUNKED if chunked else "")
    cli.run("tenant", "add", "acme", "--profile", str(write_tenant("acme", profile, {"app.py": APP})), check=True)
    store = Store(cli, backend, pg_prefix)
    table = table_name("snap")
    summary = cli.json("ingest", str(_csv(tmp_path / "old.csv", OLD, 0)), "--tenant", "acme", "--json")
    assert summary["status"] == "ingested" and summary["rows_written"] == len(OLD), summary
    assert _whole(store.docs(table)) == "old"
    up = _start(cli, platform)

    cli.run("ingest", str(_csv(tmp_path / "new.csv", NEW, PAUSE_MS)), "--tenant", "acme", check=True)
    file_id = _the_file(meta, "new.csv")
    generation = generation_table("snap", file_id)
    reads: list[str] = []

    def staged() -> int:
        reads.append(_whole(store.docs(table)))
        return len(store.docs(generation) or [])

    until(lambda: staged() >= 100, 30, "part of the new file staged", every_s=0.05)
    _kill_group(up)
    partial = len(store.docs(generation) or [])
    assert 100 <= partial < len(NEW), f"the kill landed mid-file: {partial} rows staged"
    assert _whole(store.docs(table)) == "old", "right after the kill"
    assert _whole(_query(cli, "snap")) == "old", "the CLI's read in the dead window"
    time.sleep(0.5)
    assert len(store.docs(generation) or []) == partial, "nothing writes after the kill"
    assert set(reads) == {"old"}, reads

    _start(cli, platform)
    _until_ingested(cli, meta, file_id, also=lambda: reads.append(_whole(store.docs(table))))
    reads.append(_whole(store.docs(table)))
    swapped = reads.index("new")
    assert set(reads[:swapped]) == {"old"} and set(reads[swapped:]) == {"new"}, "old, then new, never back"
    assert reads.count("old") > 10, f"the reader read during the runs: {reads.count('old')} reads"
    assert store.docs(generation) is None, "the generation was swapped in (its table is gone)"

    docs = _query(cli, "snap")
    assert _whole(docs) == "new" and len(docs) == len(NEW)
    _assert_ingested_once(meta, file_id, "new.csv", chunked=chunked)
