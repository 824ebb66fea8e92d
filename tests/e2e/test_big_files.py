"""Big files: split into line-aligned chunks, run by workers through the broker, each row once.

The profile's ``big_files`` thresholds are tiny here so a ~100 KB file is "big"; the code
path is the one a multi-GB file takes (``bench/bigfile.py`` runs that).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from mysimbdp.adapters.metastore import MetaStore
from mysimbdp.adapters.metastore.chunks import ChunkStatus
from mysimbdp.domain.states import RunStatus
from tests.conftest import broker_url_for
from tests.e2e.conftest import Cli, wait_until_up
from tests.helpers import on_backends, until

PROFILE = """
formats: [csv, jsonl]
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
    "def transform(row):\n    time.sleep(0.02)\n    return row\n\n\n"
    "sdk.run_batch(transform)\n"
)


def _csv(path: Path, rows: int) -> Path:
    """Every seventh row has a quoted field with a line break and a quote in it."""
    with open(path, "w", newline="") as fh:
        fh.write("id,sensor,value,note\n")
        for n in range(rows):
            note = f'"two\nlines, ""quoted"" {n}"' if n % 7 == 0 else f"plain {n}"
            fh.write(f"{n},s{n % 13},{n * 0.25},{note}\r\n")
    return path


def _documents(cli: Cli, rows: int) -> list[dict[str, object]]:
    out = cli.run("query", "--tenant", "acme", "--dataset", "readings", "--limit", str(rows * 2), check=True)
    return [orjson.loads(line) for line in out.stdout.splitlines()]


def _assert_each_row_once(cli: Cli, rows: int) -> None:
    docs = _documents(cli, rows)
    assert len(docs) == rows
    assert sorted(int(str(d["id"])) for d in docs) == list(range(rows))
    quoted = next(d for d in docs if d["id"] in ("14", 14))
    assert quoted["note"] == 'two\nlines, "quoted" 14'  # a line break inside a quoted field survived the cut


@pytest.fixture
def meta(cli: Cli) -> Iterator[MetaStore]:
    store = MetaStore(cli.env["MYSIMBDP_META_URL"])
    store.start()
    yield store
    store.close()


@pytest.fixture(params=["nats-embedded", "rabbitmq"])
def platform_broker(request: pytest.FixtureRequest, cli: Cli) -> str:
    """`up`'s broker: its own embedded NATS, or the machine's RabbitMQ (a vhost of this run)."""
    if request.param == "rabbitmq":
        cli.env["MYSIMBDP_BROKER_URL"] = broker_url_for("rabbitmq", request)
    return str(request.param)


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        proc.wait(timeout=60)


@pytest.mark.slow
def test_a_big_file_is_ingested_in_chunks_by_separate_workers_through_the_broker(
    cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path, meta: MetaStore, platform_broker: str
) -> None:
    """`up` runs no chunk worker of its own; two `mysimbdp worker` processes take the chunk
    tasks from the broker. Every row is stored once, quoted line breaks intact; the decision
    and its reason are in the file's history; the CLI shows the chunks."""
    rows = 3000
    profile = write_tenant("acme", PROFILE.format(chunk_bytes=16384, command=GENERIC))
    cli.run("tenant", "add", "acme", "--profile", str(profile), check=True)
    data = _csv(tmp_path / "readings.csv", rows)
    cli.env["MYSIMBDP_WORKERS"] = "0"
    up = cli.popen("up")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        wait_until_up(cli)
        workers = [cli.popen("worker", "--slots", "1") for _ in range(2)]
        summary = cli.json("ingest", str(data), "--tenant", "acme", "--json")
    finally:
        _stop(*workers, up)
    assert summary["status"] == "ingested", summary
    assert summary["rows_written"] == rows
    chunks = summary["chunks"]
    assert chunks["total"] == chunks["done"] >= data.stat().st_size // 16384
    assert len({item["worker"] for item in chunks["items"]}) == 1  # finished chunks give their worker back
    runs = [r for r in meta.list_runs("acme") if r.file_id == summary["file_id"]]
    assert len(runs) == chunks["total"]  # one app run per chunk, each recorded
    events = meta.file_events(summary["file_id"])
    reasons = [detail["chunked"] for _, _, detail in events if "chunked" in detail]
    assert reasons and "big_files.threshold_bytes" in reasons[0]
    _assert_each_row_once(cli, rows)


@pytest.mark.slow
def test_a_worker_killed_mid_chunk_has_its_chunk_run_again_and_nothing_is_stored_twice(
    cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path, meta: MetaStore
) -> None:
    """SIGKILL the only worker while its app is half-way through a chunk; a new worker takes
    the chunk once its lease expired, and the store holds every row exactly once."""
    rows = 600
    profile = write_tenant(
        "acme", PROFILE.format(chunk_bytes=4096, command='["{python}", "{bundle}/app.py"]'), {"app.py": SLOW_APP}
    )
    cli.run("tenant", "add", "acme", "--profile", str(profile), check=True)
    data = _csv(tmp_path / "readings.csv", rows)
    cli.env["MYSIMBDP_WORKERS"] = "0"
    up = cli.popen("up")
    first = second = None
    try:
        wait_until_up(cli)  # its broker too: a worker needs HOME/broker/url
        first = cli.popen("worker", "--slots", "1")
        cli.run("ingest", str(data), "--tenant", "acme", check=True)
        file_id = ""

        def half_way() -> bool:  # a chunk's app has been at work for a second (~50 of its ~130 rows)
            nonlocal file_id
            files = meta.list_files(tenant="acme")
            file_id = files[0].id if files else ""
            running = [c for c in meta.chunks.of_file(file_id) if c.status is ChunkStatus.RUNNING] if file_id else []
            return any(time.time() - c.started_at > 1.0 for c in running)

        until(half_way, 60, "a chunk half-way")
        killed = next(c for c in meta.chunks.of_file(file_id) if c.status is ChunkStatus.RUNNING)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        second = cli.popen("worker", "--slots", "2")
        until(lambda: meta.get_file(file_id).status == "ingested", 120, "file ingested")  # type: ignore[union-attr]
    finally:
        _stop(*[p for p in (first, second) if p is not None], up)
    again = meta.chunks.get(file_id, killed.index)
    assert again is not None and again.status is ChunkStatus.DONE and again.attempts == 2
    record = meta.get_file(file_id)
    assert record is not None and record.rows_written == rows
    _assert_each_row_once(cli, rows)
    runs = {r.id: r for r in meta.history.file_runs(file_id)}
    lost = runs[killed.run_id]  # the killed worker's run: ended when its chunk was queued again
    assert (lost.status, bool(lost.ended_at), "expired" in lost.error) == (RunStatus.TRANSIENT, True, True), lost
    assert all(r.status is not None for r in runs.values()), runs  # no run left open


@on_backends("postgres")
def test_without_a_running_platform_the_cli_runs_the_chunks_itself(
    cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path
) -> None:
    """`mysimbdp ingest` with no `up`: the same chunks, run by the CLI process, same result."""
    rows = 1500
    profile = write_tenant("acme", PROFILE.format(chunk_bytes=8192, command=GENERIC))
    cli.run("tenant", "add", "acme", "--profile", str(profile), check=True)
    summary = cli.json("ingest", str(_csv(tmp_path / "readings.csv", rows)), "--tenant", "acme", "--json")
    assert summary["status"] == "ingested", summary
    assert summary["chunks"]["total"] == summary["chunks"]["done"] > 1
    assert summary["rows_written"] == rows
    _assert_each_row_once(cli, rows)


@on_backends("sqlite")
@pytest.mark.slow
def test_a_big_file_being_chunked_does_not_hold_up_small_files(
    cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path, meta: MetaStore
) -> None:
    """With one whole-file slot (MYSIMBDP_MAX_WORKERS=1), a small file dropped while a big
    file's chunks run is ingested before the big file is done: watching chunks takes no slot."""
    profile = write_tenant(
        "acme", PROFILE.format(chunk_bytes=4096, command='["{python}", "{bundle}/app.py"]'), {"app.py": SLOW_APP}
    )
    cli.run("tenant", "add", "acme", "--profile", str(profile), check=True)
    big = _csv(tmp_path / "readings.csv", 600)
    small = tmp_path / "small.csv"
    small.write_text("id,sensor,value,note\n1,s1,0.5,x\n2,s2,1.0,y\n")
    cli.env.update(MYSIMBDP_MAX_WORKERS="1", MYSIMBDP_WORKERS="1")
    up = cli.popen("up")
    try:
        wait_until_up(cli)  # its broker too: a worker needs HOME/broker/url
        cli.run("ingest", str(big), "--tenant", "acme", check=True)

        def chunks_running() -> bool:
            files = meta.list_files(tenant="acme")
            return bool(files) and any(c.status is ChunkStatus.RUNNING for c in meta.chunks.of_file(files[0].id))

        until(chunks_running, 60, "the big file's chunks running")
        summary = cli.json("ingest", str(small), "--tenant", "acme", "--json")
        (big_record,) = [f for f in meta.list_files(tenant="acme") if f.name == "readings.csv"]
        assert summary["status"] == "ingested" and summary["rows_written"] == 2
        assert big_record.status == "running", "the small file had to wait for the big one"
        until(lambda: meta.get_file(big_record.id).status == "ingested", 120, "big file ingested")  # type: ignore[union-attr]
    finally:
        _stop(up)
