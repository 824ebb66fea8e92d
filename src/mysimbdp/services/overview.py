"""What the dashboard shows, for the operator (every tenant) or one tenant: totals per
tenant, stream instances and backlog, scaling decisions, recent failures, webhook
deliveries with their status, and the series of throughput and latency over time. Read
from the meta store only; one call per refresh.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from mysimbdp.adapters.metastore.chunks import ChunkStatus
from mysimbdp.adapters.metastore.notifications import Delivery
from mysimbdp.domain.records import ScalingRecord
from mysimbdp.domain.states import FileStatus, RunStatus
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.report import platform_report
from mysimbdp.services.timeseries import TenantSeries, quantile, tenant_series

RECENT = 15  # failures and decisions listed


@dataclass(frozen=True)
class StreamState:
    tenant: str
    stream: str
    app: str
    target: int
    running: int
    crash_loops: int
    backlog: int | None  # as the latest report saw it; None before the first report
    records: int  # in the period
    latency_p50_ms: float
    latency_p95_ms: float


@dataclass(frozen=True)
class TenantTotals:
    tenant: str
    files_ingested: int
    files_rejected: int  # rejected or duplicate
    files_failed: int
    files_in_progress: int
    rows: int
    bytes: int
    quarantined: int
    stream_records: int
    stream_messages: int
    stream_errors: int
    batch_p50_s: float | None  # run duration, start -> end
    batch_p95_s: float | None
    stream_p50_ms: float  # publish -> committed: the median of the periods' medians
    stream_p95_ms: float  # the worst period's p95


@dataclass(frozen=True)
class Failure:
    at: float
    tenant: str
    what: str  # "file <name>" or "instance <id> of <stream>"
    status: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class BigFileState:
    """A file being ingested in chunks (``big_files`` in the profile), chunk by chunk."""

    tenant: str
    file_id: str
    name: str
    chunks: int
    done: int
    running: int
    waiting: int  # queued, or waiting for a retry
    failed: int
    rows: int  # in finished chunks


@dataclass
class Overview:
    tenant: str | None  # None: every tenant (the operator's view)
    since: float
    generated_at: float
    tenants: list[TenantTotals] = field(default_factory=list)
    streams: list[StreamState] = field(default_factory=list)
    decisions: list[ScalingRecord] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    notifications: list[Delivery] = field(default_factory=list)  # webhook deliveries, newest first
    big_files: list[BigFileState] = field(default_factory=list)  # being ingested in chunks now
    series: list[TenantSeries] = field(default_factory=list)


def _quantile(values: list[float], q: float) -> float | None:
    return quantile(values, q) if values else None


def overview(platform: Platform, tenant: str | None, *, since_s: float = 3600.0) -> Overview:
    """The dashboard's data for ``tenant`` (None: every tenant) over the last ``since_s``."""
    now = time.time()
    since = now - since_s
    report = platform_report(platform, tenant, since)
    ids = [t["tenant"] for t in report["tenants"]]
    view = Overview(tenant, since, now)
    for item in report["tenants"]:
        view.tenants.append(_totals(platform, item, since))
    for name in ids:
        view.streams.extend(_streams(platform, name, since))
        view.decisions.extend(platform.meta.streams.decisions(name, since=since))
        view.failures.extend(_failures(platform, name, since))
        view.big_files.extend(_big_files(platform, name))
        view.notifications.extend(
            d for d in platform.meta.notifications.recent(name, limit=RECENT) if d.created_at >= since
        )
        view.series.append(tenant_series(platform, name, since=since, until=now))
    view.decisions = sorted(view.decisions, key=lambda d: d.at)[-RECENT:][::-1]
    view.failures = sorted(view.failures, key=lambda f: f.at)[-RECENT:][::-1]
    view.notifications = sorted(view.notifications, key=lambda d: d.created_at)[-RECENT:][::-1]
    return view


def _totals(platform: Platform, item: dict[str, object], since: float) -> TenantTotals:
    name = str(item["tenant"])
    by = item["files_by_status"]
    stream = item["stream"]
    assert isinstance(by, dict) and isinstance(stream, dict)
    runs = [r for r in platform.meta.list_runs(tenant=name, limit=10_000_000) if r.started_at >= since]
    durations = [r.ended_at - r.started_at for r in runs if r.ended_at is not None and r.status is RunStatus.SUCCEEDED]
    in_progress = sum(
        by.get(s, 0)
        for s in (FileStatus.CHECKING, FileStatus.RECEIVED, FileStatus.STAGED, FileStatus.RUNNING, FileStatus.RETRY)
    )
    return TenantTotals(
        tenant=name,
        files_ingested=by.get(FileStatus.INGESTED, 0),
        files_rejected=by.get(FileStatus.REJECTED, 0) + by.get(FileStatus.DUPLICATE, 0),
        files_failed=by.get(FileStatus.FAILED, 0),
        files_in_progress=in_progress,
        rows=int(str(item["rows_written"])),
        bytes=int(str(item["bytes_accepted"])),
        quarantined=int(str(item["quarantined_rows"])),
        stream_records=int(stream["records"]),
        stream_messages=int(stream["messages"]),
        stream_errors=int(stream["errors"]),
        batch_p50_s=_quantile(durations, 0.5),
        batch_p95_s=_quantile(durations, 0.95),
        stream_p50_ms=float(stream["latency_p50_ms"]),
        stream_p95_ms=float(stream["latency_p95_worst_ms"]),
    )


def _streams(platform: Platform, tenant: str, since: float) -> list[StreamState]:
    registry = platform.meta.streams
    instances = registry.instances(tenant)
    reports = registry.reports(tenant, since=since)
    states = []
    for target in registry.targets(tenant):
        key = (target.stream, target.app)
        mine = [i for i in instances if (i.stream, i.app) == key]
        period = [r for r in reports if (r.stream, r.app) == key]
        latest: dict[str, int] = {}
        for r in period:  # each instance's latest backlog; the stream's is the largest seen lately
            latest[r.instance] = r.backlog
        with_latency = [r for r in period if r.messages]
        states.append(
            StreamState(
                tenant=tenant,
                stream=target.stream,
                app=target.app,
                target=target.instances,
                running=sum(1 for i in mine if i.state == "running"),
                crash_loops=sum(1 for i in mine if i.state == "crash_loop"),
                backlog=max(latest.values()) if latest else None,
                records=sum(r.records for r in period),
                latency_p50_ms=quantile([r.latency_p50_ms for r in with_latency], 0.5) if with_latency else 0.0,
                latency_p95_ms=max((r.latency_p95_ms for r in with_latency), default=0.0),
            )
        )
    return states


def _failures(platform: Platform, tenant: str, since: float) -> list[Failure]:
    bad = (FileStatus.REJECTED, FileStatus.FAILED, FileStatus.DUPLICATE)
    files = [
        f for f in platform.meta.list_files(tenant=tenant, statuses=bad, limit=10_000_000) if f.updated_at >= since
    ]
    failures = [Failure(f.updated_at, tenant, f"file {f.name}", str(f.status), f.reasons) for f in files[-RECENT:]]
    for i in platform.meta.streams.instances(tenant):
        if i.state in ("crash_loop", "backoff") and i.updated_at >= since:
            what = f"instance {i.id} of stream {i.stream}"
            failures.append(Failure(i.updated_at, tenant, what, i.state, (i.exit_detail,) if i.exit_detail else ()))
    return failures


def _big_files(platform: Platform, tenant: str) -> list[BigFileState]:
    states = []
    for f in platform.meta.list_files(tenant=tenant, statuses=(FileStatus.RUNNING,), limit=RECENT):
        chunks = platform.meta.chunks.of_file(f.id)
        if not chunks:
            continue
        count = Counter(c.status for c in chunks)
        states.append(
            BigFileState(
                tenant=tenant,
                file_id=f.id,
                name=f.name,
                chunks=len(chunks),
                done=count[ChunkStatus.DONE],
                running=count[ChunkStatus.RUNNING],
                waiting=count[ChunkStatus.QUEUED] + count[ChunkStatus.RETRY],
                failed=count[ChunkStatus.FAILED],
                rows=sum(c.rows_written for c in chunks if c.status is ChunkStatus.DONE),
            )
        )
    return states
