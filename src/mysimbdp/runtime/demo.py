"""The platform's main job on the embedded default, end to end, for the README's first command.

Registers every example tenant (a directory with a ``profile.yaml``), starts the platform's
services (as ``up`` does: broker, API, fetchdata, batch manager, stream manager, monitor),
drops each tenant's sample files into its inbox, but for one (the first example tenant's
first CSV sample) that it sends over HTTP (``POST /v1/files`` with the tenant's key, as a
remote client would), and waits until every file is final; then
runs the near-realtime half (:mod:`demo_stream`) on every stream sample at once; stops the
services and returns a per-tenant summary of both.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mysimbdp.adapters.files.home import drop_into_inbox
from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.sources import STREAM_PREFIX
from mysimbdp.domain.states import FileStatus
from mysimbdp.errors import MysimbdpError
from mysimbdp.managers.apiserver import bind_api
from mysimbdp.runtime.demo_stream import StreamDemo, StreamSummary, stream_samples
from mysimbdp.runtime.platform import Platform
from mysimbdp.runtime.up import BrokerAccess, run_services
from mysimbdp.services.tenants import add_tenant

DATA_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")


@dataclass
class TenantSummary:
    tenant: str
    files: list[FileRecord] = field(default_factory=list)
    quarantined: int = 0
    seconds: float = 0.0

    @property
    def accepted(self) -> list[FileRecord]:
        return [f for f in self.files if f.status is FileStatus.INGESTED]

    @property
    def rejected(self) -> list[FileRecord]:
        return [f for f in self.files if f.status is not FileStatus.INGESTED]

    @property
    def rows_written(self) -> int:
        return sum(f.rows_written for f in self.files)

    @property
    def bytes_ingested(self) -> int:
        return sum(f.size_bytes for f in self.accepted)

    @property
    def rows_per_s(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0


@dataclass
class HttpUpload:
    """The sample file the demo sent through ``POST /v1/files``: the API's answer, then the
    file's final status (``final_status``, once the batch half is done)."""

    tenant: str
    name: str
    file_id: str
    answered: str  # the status in the upload's answer (staged)
    status_code: int
    final_status: str = ""


@dataclass
class DemoResult:
    batch: list[TenantSummary]
    stream: list[StreamSummary]
    uploaded: HttpUpload | None = None


def example_tenants(examples: Path) -> list[Path]:
    """Each directory under ``examples`` holding a ``profile.yaml``."""
    return sorted(p.parent for p in examples.glob("*/profile.yaml"))


def sample_files(tenant_dir: Path) -> list[Path]:
    data = tenant_dir / "data"
    return sorted(p for p in data.glob("*") if p.is_file() and p.suffix in DATA_SUFFIXES)


async def run_demo(
    platform: Platform, examples: Path, *, timeout_s: float = 600.0, resend_copies: int = 40
) -> DemoResult:
    """Both halves of the demo; ``resend_copies``: how many times the stream half's devices
    re-send what was stored (0: no resend storm, no scaling)."""
    tenant_dirs = example_tenants(examples)
    if not tenant_dirs:
        raise MysimbdpError(f"no example tenants (directories with profile.yaml) under {examples}")
    existing = {t.id for t in platform.meta.list_tenants()}
    keys: dict[str, str] = {}
    for tenant_dir in tenant_dirs:
        if tenant_dir.name not in existing:
            keys[tenant_dir.name] = add_tenant(platform, tenant_dir.name, tenant_dir / "profile.yaml").api_key
    stop = asyncio.Event()
    api_socket = bind_api(platform.settings, 0)  # never a busy port
    api_url = "http://{}:{}".format(*api_socket.getsockname()[:2])
    ready: asyncio.Future[BrokerAccess] = asyncio.get_running_loop().create_future()
    services = asyncio.create_task(run_services(platform, stop, drain_s=5.0, api_socket=api_socket, ready=ready))
    started = time.time()
    streams: list[StreamSummary] = []
    try:
        uploaded = await _batch_half(platform, tenant_dirs, services, started, timeout_s, api_url, keys)
        access = await asyncio.wait_for(asyncio.shield(ready), 60)
        demo = StreamDemo(platform, api_url, access, timeout_s=timeout_s)
        try:
            async with asyncio.TaskGroup() as group:  # every stream at once: each has its own apps
                runs = [
                    group.create_task(demo.run(tenant_dir.name, keys.get(tenant_dir.name), sample, resend_copies))
                    for tenant_dir in tenant_dirs
                    for sample in stream_samples(tenant_dir)
                ]
        except ExceptionGroup as failed:  # the first stream's failure, as a sequential run raised it
            raise failed.exceptions[0] from failed
        streams = [run.result() for run in runs]
    finally:
        stop.set()
        await services
    if uploaded is not None:
        record = platform.meta.get_file(uploaded.file_id)
        uploaded.final_status = str(record.status) if record is not None else "unknown"
    return DemoResult([_batch_summary(platform, d.name, started) for d in tenant_dirs], streams, uploaded)


def _http_sample(samples: Mapping[str, list[Path]], keys: Mapping[str, str]) -> tuple[str, Path] | None:
    """The sample sent over HTTP: the first CSV of the first tenant the demo has a key of."""
    for tenant, paths in samples.items():
        csvs = [p for p in paths if p.suffix == ".csv"]
        if tenant in keys and csvs:
            return tenant, csvs[0]
    return None


async def _upload(api_url: str, tenant: str, api_key: str, sample: Path, timeout_s: float) -> HttpUpload:
    """``POST /v1/files?name=NAME`` with ``sample``'s bytes, once the API answers /healthz."""
    import httpx

    async with httpx.AsyncClient(base_url=api_url, timeout=30.0) as client:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise MysimbdpError(f"demo: the API at {api_url} did not answer within {timeout_s:.0f} s")
            await asyncio.sleep(0.1)
        resp = await client.post(
            "/v1/files",
            params={"name": sample.name},
            content=sample.read_bytes(),
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/octet-stream"},
        )
    body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    if not body.get("file_id"):
        raise MysimbdpError(
            f"demo: POST /v1/files of {sample.name!r} (tenant {tenant!r}): {resp.status_code} {resp.text}"
        )
    return HttpUpload(tenant, sample.name, str(body["file_id"]), str(body.get("status", "")), resp.status_code)


async def _batch_half(
    platform: Platform,
    tenant_dirs: list[Path],
    services: asyncio.Task[None],
    started: float,
    timeout_s: float,
    api_url: str,
    keys: Mapping[str, str],
) -> HttpUpload | None:
    samples = {tenant_dir.name: sample_files(tenant_dir) for tenant_dir in tenant_dirs}
    over_http = _http_sample(samples, keys)
    for tenant, paths in samples.items():
        for sample in paths:
            if over_http != (tenant, sample):
                drop_into_inbox(sample, platform.home.area("inbox", tenant), sample.name)
    uploaded = None
    if over_http is not None:
        tenant, sample = over_http
        uploaded = await _upload(api_url, tenant, keys[tenant], sample, 60.0)
    expected = sum(map(len, samples.values()))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if services.done():
            services.result()  # a service's failure, raised here
            raise MysimbdpError("demo: the services stopped before the files were ingested")
        records = [f for f in platform.meta.list_files(limit=100_000) if f.received_at >= started - 1]
        if len(records) >= expected and platform.meta.count_unfinished() == 0:
            return uploaded
        await asyncio.sleep(0.2)
    raise MysimbdpError(f"demo: files still unfinished after {timeout_s:.0f} s")


def _batch_summary(platform: Platform, tenant: str, started: float) -> TenantSummary:
    files = [f for f in platform.meta.list_files(tenant=tenant, limit=100_000) if f.received_at >= started - 1]
    first = min((f.received_at for f in files), default=started)
    seconds = max((f.updated_at for f in files), default=started) - first
    quarantined = platform.meta.count_quarantine(tenant) - platform.meta.count_quarantine(
        tenant, file_id_prefix=STREAM_PREFIX
    )
    return TenantSummary(tenant, files, quarantined, seconds)


def fresh_home(home: Path) -> None:
    """Remove a previous demo home (only one that looks like a mysimbdp home)."""
    if home.exists() and (home / "meta.db").exists():
        shutil.rmtree(home)
