"""The platform's main job on the embedded default, end to end, for the README's first command.

Registers every example tenant (a directory with a ``profile.yaml``), starts fetchdata and
the batch manager, drops each tenant's sample files into its inbox, waits until every file
is final, stops the services and returns a per-tenant summary.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from mysimbdp.adapters.filesystem import drop_into_inbox
from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.states import FileStatus
from mysimbdp.errors import MysimbdpError
from mysimbdp.managers import run_services
from mysimbdp.platform import Platform
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


def example_tenants(examples: Path) -> list[Path]:
    """Each directory under ``examples`` holding a ``profile.yaml``."""
    return sorted(p.parent for p in examples.glob("*/profile.yaml"))


def sample_files(tenant_dir: Path) -> list[Path]:
    data = tenant_dir / "data"
    return sorted(p for p in data.glob("*") if p.is_file() and p.suffix in DATA_SUFFIXES)


async def run_demo(platform: Platform, examples: Path, *, timeout_s: float = 600.0) -> list[TenantSummary]:
    tenant_dirs = example_tenants(examples)
    if not tenant_dirs:
        raise MysimbdpError(f"no example tenants (directories with profile.yaml) under {examples}")
    existing = {t.id for t in platform.meta.list_tenants()}
    for tenant_dir in tenant_dirs:
        if tenant_dir.name not in existing:
            add_tenant(platform, tenant_dir.name, tenant_dir / "profile.yaml")
    stop = asyncio.Event()
    services = asyncio.create_task(run_services(platform, stop, drain_s=5.0, api_port=0))  # never a busy port
    started = time.time()
    samples = {tenant_dir.name: sample_files(tenant_dir) for tenant_dir in tenant_dirs}
    for tenant, paths in samples.items():
        for sample in paths:
            drop_into_inbox(sample, platform.home.area("inbox", tenant), sample.name)
    expected = sum(map(len, samples.values()))
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not services.done():
            records = [f for f in platform.meta.list_files(limit=100_000) if f.received_at >= started - 1]
            if len(records) >= expected and platform.meta.count_unfinished() == 0:
                break
            await asyncio.sleep(0.2)
        else:
            if not services.done():
                raise MysimbdpError(f"demo: files still unfinished after {timeout_s:.0f} s")
    finally:
        stop.set()
        await services
    summaries = []
    for tenant_dir in tenant_dirs:
        files = [
            f for f in platform.meta.list_files(tenant=tenant_dir.name, limit=100_000) if f.received_at >= started - 1
        ]
        seconds = max((f.updated_at for f in files), default=started) - min(
            (f.received_at for f in files), default=started
        )
        summaries.append(
            TenantSummary(tenant_dir.name, files, platform.meta.count_quarantine(tenant_dir.name), seconds)
        )
    return summaries


def fresh_home(home: Path) -> None:
    """Remove a previous demo home (only one that looks like a mysimbdp home)."""
    if home.exists() and (home / "meta.db").exists():
        shutil.rmtree(home)
