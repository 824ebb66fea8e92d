"""The worker routes (/v1/worker/) with a real meta store, a real broker and real app runs: worker
tokens (create, list, revoke: a revoked token is refused at once), what a worker token and a
tenant's key may reach, a range read equal to the staged file's bytes, a remote worker with a
home of its own ingesting a chunked file exactly once, and bytes or a bundle altered on the
way refused by the worker, the chunk given back and run again, nothing of it recorded."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from mysimbdp.adapters.broker import Broker
from mysimbdp.adapters.metastore.chunks import ChunkStatus
from mysimbdp.adapters.workerapi import WorkerApi
from mysimbdp.api import create_app
from mysimbdp.cli import main
from mysimbdp.domain.ids import new_id
from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.states import FileStatus, RunStatus
from mysimbdp.errors import ApiError
from mysimbdp.managers.chunkworker import ChunkTasks
from mysimbdp.managers.remoteworker import RemoteChunkWorker
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.fetch import fetch_file
from mysimbdp.services.remotework import issue_token, revoke_token
from mysimbdp.services.run_batch import run_file
from mysimbdp.services.tenants import NewTenant, add_tenant
from mysimbdp.settings import Settings
from tests.helpers import on_backends, until_async

PROFILE = """
formats: [csv]
dataset: readings
big_files: {threshold_bytes: 4000, chunk_bytes: 4096}
batch_apps:
  - name: app
"""
ROWS = 1200
PEER = ("10.9.8.7", 40000)  # not loopback: no request is the operator's for coming from this machine


@pytest.fixture
def broker_url(embedded_nats: str) -> str:
    return embedded_nats


@pytest.fixture
def platform(home: Path, meta_url: str, coredms_url: str, pg_prefix: str) -> Iterator[Platform]:
    settings = Settings(
        home=home, meta_url=meta_url, coredms_url=coredms_url, pg_prefix=pg_prefix, lease_ttl_s=3.0, admin_key="op-key"
    )
    with Platform(settings, {}) as started:
        yield started


@pytest.fixture
def acme(platform: Platform, tmp_path: Path) -> NewTenant:
    profile = tmp_path / "bundle" / "profile.yaml"
    profile.parent.mkdir()
    profile.write_text(PROFILE, encoding="utf-8")
    return add_tenant(platform, "acme", profile)


@pytest.fixture
def worker_platform(tmp_path: Path) -> Platform:
    """The worker's own machine: an empty home, never started (no meta store, no coredms)."""
    return Platform(Settings(home=tmp_path / "worker-home"), {})


@pytest.fixture
async def client(platform: Platform, broker: Broker) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(platform, broker), client=PEER)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def _csv(rows: int) -> bytes:
    return b"id,sensor,value\n" + b"".join(f"{n},s{n % 7},{n * 0.5}\n".encode() for n in range(rows))


def _staged(platform: Platform, tmp_path: Path) -> tuple[FileRecord, str]:
    """A big CSV fetched into staging and claimed for a run, as the batch manager does."""
    inbox = platform.home.area("inbox", "acme")
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "readings.csv").write_bytes(_csv(ROWS))
    decision = fetch_file(platform, "acme", inbox / "readings.csv")
    assert decision.status is FileStatus.STAGED, decision
    run_id = new_id("r")
    assert platform.meta.claim(decision.file_id, "test-manager", 30.0, run_id)
    record = platform.meta.get_file(decision.file_id)
    assert record is not None
    return record, run_id


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_worker_tokens_are_created_listed_and_revoked_from_the_cli(tmp_path: Path) -> None:
    """`worker token create --json` prints the token once; `list` shows it (never its secret);
    `revoke` marks it revoked; revoking an unknown id fails naming it."""
    home = ["--home", str(tmp_path / "home")]
    runner = CliRunner()
    created = runner.invoke(main, [*home, "worker", "token", "create", "--name", "host-b", "--json"])
    assert created.exit_code == 0, created.output
    token = orjson.loads(created.stdout)
    assert token["token"].startswith("msbw_") and token["name"] == "host-b"
    listed = runner.invoke(main, [*home, "worker", "token", "list", "--json"])
    assert [(t["id"], t["revoked_at"]) for t in orjson.loads(listed.stdout)] == [(token["id"], 0.0)]
    assert token["token"] not in listed.output
    assert runner.invoke(main, [*home, "worker", "token", "revoke", token["id"]]).exit_code == 0
    (after,) = orjson.loads(runner.invoke(main, [*home, "worker", "token", "list", "--json"]).stdout)
    assert after["revoked_at"] > 0
    again = runner.invoke(main, [*home, "worker", "token", "revoke", token["id"]])
    assert again.exit_code == 1 and token["id"] in again.output and "no token in force" in again.output


async def test_a_worker_token_reaches_only_the_worker_routes(
    platform: Platform, acme: NewTenant, client: httpx.AsyncClient
) -> None:
    """A worker token gets 401 on tenants' routes (files, documents, uploads, messages, history,
    quarantine) and on the operator's; a tenant's key and the operator key get 401 on the worker
    routes; a revoked token is refused at its very next request."""
    _, secret = issue_token(platform, "b")
    worker = _bearer(secret)
    tenant_routes = [
        ("GET", "/v1/files"),
        ("POST", "/v1/files"),
        ("GET", "/v1/datasets"),
        ("GET", "/v1/datasets/readings/documents"),
        ("POST", "/v1/uploads/"),
        ("POST", "/v1/streams/s1/messages"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/quarantine"),
        ("GET", "/v1/admin/streams"),
        ("GET", "/v1/admin/sandbox"),
        ("POST", "/v1/admin/tenants/acme/rotate-key"),
    ]
    for method, path in tenant_routes:
        answer = await client.request(method, path, headers={**worker, "Tus-Resumable": "1.0.0"})
        assert answer.status_code == 401, (method, path, answer.status_code, answer.text)
    assert (await client.post("/v1/worker/claims", json={"worker": "b:1"}, headers=worker)).status_code == 204
    for other in (acme.api_key, "op-key"):
        refused = await client.post("/v1/worker/claims", json={"worker": "b:1"}, headers=_bearer(other))
        assert refused.status_code == 401 and "worker token" in refused.json()["error"]
        bundle = await client.get(f"/v1/worker/bundles/acme/{'0' * 64}", headers=_bearer(other))
        assert bundle.status_code == 401
    assert (await client.post("/v1/worker/claims", json={"worker": "b:1"})).status_code == 401
    (token,) = platform.meta.worker_tokens.all()
    revoke_token(platform, token.id)
    revoked = await client.post("/v1/worker/claims", json={"worker": "b:1"}, headers=worker)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]


@on_backends("sqlite")
async def test_a_range_read_is_the_staged_files_bytes_and_only_the_tasks_ranges_are_served(
    platform: Platform, acme: NewTenant, client: httpx.AsyncClient, broker: Broker, tmp_path: Path
) -> None:
    """A claimed chunk's range reads back exactly the staged file's bytes with the announced
    sha256; a range the task does not name is 416, another token's task 404, and the bundle
    is served at its version (its sha256)."""
    record, run_id = _staged(platform, tmp_path)
    manager = asyncio.create_task(run_file(platform, record, run_id, publish=ChunkTasks(broker).publish))
    try:
        _, secret = issue_token(platform, "b")
        task: dict[str, Any] = {}
        for _ in range(100):
            answer = await client.post("/v1/worker/claims", json={"worker": "b:1"}, headers=_bearer(secret))
            if answer.status_code == 200:
                task = answer.json()
                break
            await asyncio.sleep(0.1)
        assert task, "no chunk was handed out"
        staged = Path(str(platform.meta.get_file(record.id).path)).read_bytes()  # type: ignore[union-attr]
        assert task["size_bytes"] == len(staged)
        for piece in task["ranges"]:
            got = await client.get(
                f"/v1/worker/chunks/{task['task']}/bytes",
                headers={**_bearer(secret), "Range": f"bytes={piece['start']}-{piece['end'] - 1}"},
            )
            assert got.status_code == 206
            assert got.content == staged[piece["start"] : piece["end"]]
            assert hashlib.sha256(got.content).hexdigest() == piece["sha256"]
        beyond = task["ranges"][-1]["end"]
        outside = await client.get(
            f"/v1/worker/chunks/{task['task']}/bytes", headers={**_bearer(secret), "Range": f"bytes=0-{beyond}"}
        )
        assert outside.status_code == 416
        _, other = issue_token(platform, "c")
        stolen = await client.get(
            f"/v1/worker/chunks/{task['task']}/bytes", headers={**_bearer(other), "Range": "bytes=0-9"}
        )
        assert stolen.status_code == 404
        bundle = await client.get(f"/v1/worker/bundles/acme/{task['bundle_version']}", headers=_bearer(secret))
        assert bundle.status_code == 200 and hashlib.sha256(bundle.content).hexdigest() == task["bundle_version"]
        assert (
            await client.get(f"/v1/worker/bundles/acme/{task['bundle_version']}", headers=_bearer(other))
        ).status_code == 403
        assert "MYSIMBDP_INPUT" not in task["env"] and task["env"]["MYSIMBDP_TENANT"] == "acme"
    finally:
        manager.cancel()
        await asyncio.gather(manager, return_exceptions=True)


class Tamper:
    """An ASGI middleware in front of the real API: flips one byte of the first ``bytes`` and of
    the first bundle answer, as a broken proxy or an attacker on the way would."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.left = {"/bytes": 1, "/v1/worker/bundles/": 1}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        kind = next((k for k, n in self.left.items() if n and k in path), None)
        if kind is None:
            await self.app(scope, receive, send)
            return
        self.left[kind] -= 1
        flipped = False

        async def altered(message: dict[str, Any]) -> None:
            nonlocal flipped
            body = message.get("body", b"")
            if message["type"] == "http.response.body" and body and not flipped:
                message = {**message, "body": bytes([body[0] ^ 0x01]) + body[1:]}
                flipped = True
            await send(message)

        await self.app(scope, receive, altered)


@on_backends("sqlite")
async def test_a_remote_worker_with_its_own_home_ingests_a_chunked_file_once_refusing_altered_bytes(
    platform: Platform, acme: NewTenant, broker: Broker, worker_platform: Platform, tmp_path: Path
) -> None:
    """A worker whose home is empty runs every chunk through the API; the first bundle and the
    first chunk bytes it gets are altered on the way: it refuses each (sha256), gives the chunk
    back, and the chunk runs again. The file ends ingested with every row once, each chunk done
    by this worker, the two given-back runs recorded as transient with the reason and no rows,
    and nothing staged left in the worker's home."""
    record, run_id = _staged(platform, tmp_path)
    _, secret = issue_token(platform, "b")
    tamper = Tamper(create_app(platform, broker))
    api = WorkerApi("http://test", secret, transport=httpx.ASGITransport(app=tamper, client=PEER))
    stop = asyncio.Event()
    worker = RemoteChunkWorker(worker_platform, api, slots=2)
    running = asyncio.create_task(worker.run(stop))
    try:
        final = await asyncio.wait_for(run_file(platform, record, run_id, publish=ChunkTasks(broker).publish), 120)
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
        await api.close()
    assert final.status is FileStatus.INGESTED, final.reasons
    assert final.rows_written == ROWS
    store = platform.tenant_store(platform.meta.get_tenant("acme"))
    try:
        assert store.count("readings") == ROWS
    finally:
        store.close()
    chunks = platform.meta.chunks.of_file(record.id)
    assert len(chunks) > 2 and all(c.status is ChunkStatus.DONE for c in chunks)
    claims = platform.meta.worker_claims.of_file(record.id)
    assert sorted(c.outcome for c in claims) == ["done"] * len(chunks) + ["given_back"] * 2
    assert {c.worker for c in claims} == {f"api:{claims[0].token_id}:{worker.label}"}
    given_back = {c.run_id for c in claims if c.outcome == "given_back"}
    runs = {r.id: r for r in platform.meta.list_runs("acme") if r.file_id == record.id}
    assert {runs[r].status for r in given_back} == {RunStatus.TRANSIENT}
    reasons = sorted(runs[r].error for r in given_back)
    assert sum("the bundle of tenant 'acme', version" in r for r in reasons) == 1, reasons
    assert sum("of the staged file: sha256" in r for r in reasons) == 1, reasons
    assert all("is not the announced" in r and "gave the chunk back" in r for r in reasons), reasons
    assert all(runs[r].rows_written == 0 for r in given_back)
    assert sum(r.rows_written for r in runs.values()) == ROWS
    left = [p for p in (worker_platform.home.root / "worker").rglob("*") if p.is_file()]
    assert left and all("bundles" in p.parts for p in left), left  # the cached bundle, no input, no run
    shutil.rmtree(worker_platform.home.root)


async def test_a_worker_whose_token_is_revoked_stops_saying_so(
    platform: Platform, acme: NewTenant, broker: Broker, worker_platform: Platform
) -> None:
    """A worker refused with 401 (its token revoked) does not ask again forever: it stops with
    the API's reason."""
    token, secret = issue_token(platform, "b")
    revoke_token(platform, token.id)
    api = WorkerApi("http://test", secret, transport=httpx.ASGITransport(app=create_app(platform, broker), client=PEER))
    try:
        with pytest.raises(ApiError, match="revoked") as refused:
            await asyncio.wait_for(RemoteChunkWorker(worker_platform, api, slots=1).run(asyncio.Event()), 30)
    finally:
        await api.close()
    assert refused.value.status == 401


SLOW_PROFILE = """
formats: [csv]
dataset: readings
big_files: {threshold_bytes: 2000, chunk_bytes: 3000}
batch_apps:
  - name: app
    command: ["{python}", "{bundle}/app.py"]
"""
SLOW_APP = (
    "import time\nfrom mysimbdp import sdk\n\n\n"
    "def slow(row):\n    time.sleep(0.02)\n    return row\n\n\n"
    "sdk.run_batch(slow)\n"
)


class Link(httpx.AsyncBaseTransport):
    """A worker's network link to the API, which the test cuts and restores."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.up = inner, True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("the link is down", request=request)
        return await self.inner.handle_async_request(request)


@on_backends("sqlite")
async def test_a_worker_cut_off_mid_chunk_loses_its_lease_and_its_late_end_is_refused(
    platform: Platform, broker: Broker, worker_platform: Platform, tmp_path: Path
) -> None:
    """Worker 1's link to the API goes down while its app is half-way through a chunk: its lease
    expires, the chunk is queued again and worker 2 runs it. When the link comes back, worker
    1's renewal or late finish is refused (409, its claim ends as lease_expired) and nothing
    of its run is recorded: the file ends with every row once, that chunk done at attempt 2."""
    bundle = tmp_path / "slow" / "profile.yaml"
    bundle.parent.mkdir()
    bundle.write_text(SLOW_PROFILE, encoding="utf-8")
    (bundle.parent / "app.py").write_text(SLOW_APP, encoding="utf-8")
    add_tenant(platform, "slow", bundle)
    inbox = platform.home.area("inbox", "slow")
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "readings.csv").write_bytes(_csv(400))
    decision = fetch_file(platform, "slow", inbox / "readings.csv")
    run_id = new_id("r")
    assert decision.status is FileStatus.STAGED and platform.meta.claim(decision.file_id, "test", 30.0, run_id)
    record = platform.meta.get_file(decision.file_id)
    assert record is not None
    _, secret = issue_token(platform, "b")
    app = create_app(platform, broker)
    link = Link(httpx.ASGITransport(app=app, client=PEER))
    apis = [
        WorkerApi("http://test", secret, transport=link),
        WorkerApi("http://test", secret, transport=httpx.ASGITransport(app=app, client=PEER)),
    ]
    stop = asyncio.Event()
    first = asyncio.create_task(RemoteChunkWorker(worker_platform, apis[0], slots=1).run(stop))
    manager = asyncio.create_task(run_file(platform, record, run_id, publish=ChunkTasks(broker).publish))
    second: asyncio.Task[None] | None = None
    try:

        def half_way() -> list[Any]:
            running = [c for c in platform.meta.chunks.of_file(record.id) if c.status is ChunkStatus.RUNNING]
            return [c for c in running if time.time() - c.started_at > 0.5]

        (cut,) = await until_async(half_way, 60, "worker 1 half-way through a chunk")
        link.up = False
        second = asyncio.create_task(RemoteChunkWorker(worker_platform, apis[1], slots=2).run(stop))

        def taken_again() -> bool:
            chunk = platform.meta.chunks.get(record.id, cut.index)
            return chunk is not None and chunk.run_id != cut.run_id

        await until_async(taken_again, 60, "the cut-off chunk claimed again")
        link.up = True
        final = await asyncio.wait_for(manager, 120)
        await until_async(lambda: platform.meta.worker_claims.get(cut.run_id).ended_at, 30, "worker 1 asking again")  # type: ignore[union-attr]
    finally:
        stop.set()
        manager.cancel()
        await asyncio.gather(*[t for t in (first, second, manager) if t is not None], return_exceptions=True)
        for api in apis:
            await api.close()
    assert final.status is FileStatus.INGESTED and final.rows_written == 400
    again = platform.meta.chunks.get(record.id, cut.index)
    assert again is not None and again.status is ChunkStatus.DONE and again.attempts == 2
    outcomes = [c.outcome for c in platform.meta.worker_claims.of_file(record.id) if c.index == cut.index]
    assert outcomes == ["lease_expired", "done"]
    store = platform.tenant_store(platform.meta.get_tenant("slow"))
    try:
        assert store.count("readings") == 400
    finally:
        store.close()


@on_backends("sqlite")
async def test_a_remote_worker_reads_parquet_chunks_from_their_row_groups_and_the_footer(
    platform: Platform, broker: Broker, worker_platform: Platform, tmp_path: Path
) -> None:
    """A Parquet file chunked by row groups: each task names the chunk's bytes plus the file's
    magic and footer, and the worker's sparse copy reads as the file: every row once."""
    profile = tmp_path / "pq" / "profile.yaml"
    profile.parent.mkdir()
    profile.write_text(
        "formats: [parquet]\ndataset: readings\nbig_files: {threshold_bytes: 10000, chunk_bytes: 4096}\n"
    )
    add_tenant(platform, "pq", profile)
    inbox = platform.home.area("inbox", "pq")
    inbox.mkdir(parents=True, exist_ok=True)
    rows = 3000
    table = pa.table({"id": pa.array(range(rows), pa.int64()), "note": [f"n{n}" for n in range(rows)]})
    pq.write_table(table, inbox / "big.parquet", row_group_size=200)
    decision = fetch_file(platform, "pq", inbox / "big.parquet")
    run_id = new_id("r")
    assert decision.status is FileStatus.STAGED and platform.meta.claim(decision.file_id, "test", 30.0, run_id)
    record = platform.meta.get_file(decision.file_id)
    assert record is not None
    _, secret = issue_token(platform, "b")
    api = WorkerApi("http://test", secret, transport=httpx.ASGITransport(app=create_app(platform, broker), client=PEER))
    stop = asyncio.Event()
    running = asyncio.create_task(RemoteChunkWorker(worker_platform, api, slots=2).run(stop))
    try:
        final = await asyncio.wait_for(run_file(platform, record, run_id, publish=ChunkTasks(broker).publish), 120)
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
        await api.close()
    assert final.status is FileStatus.INGESTED, final.reasons
    assert final.rows_written == rows
    claims = platform.meta.worker_claims.of_file(record.id)
    assert len(claims) == len(platform.meta.chunks.of_file(record.id)) > 1
    size = Path(final.path).stat().st_size
    assert all(c.ranges[0][0] == 0 and c.ranges[-1][1] == size for c in claims)  # the magic and the footer
    assert sum(c.ranges[0][:2] == (0, 4) for c in claims) == len(claims) - 1  # all but the first chunk's
    store = platform.tenant_store(platform.meta.get_tenant("pq"))
    try:
        assert store.count("readings") == rows
    finally:
        store.close()
