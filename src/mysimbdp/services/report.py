"""Per-tenant and platform-wide ingestion statistics from the meta store (Part 1.5, 3.1):
batch (files, runs, rows) and near-realtime (the stream instances' reports), over all
time or since a moment."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from mysimbdp.domain.qualitycounts import FileQuality, WindowQuality, summarize
from mysimbdp.domain.records import TenantStats
from mysimbdp.domain.scaling import Report
from mysimbdp.domain.states import FileStatus, RunStatus
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.timeseries import quantile


def _rule_of(reason: str) -> str:
    marker = "rule "
    if marker in reason:
        return reason.split(marker, 1)[1].split(":", 1)[0]
    return "app" if ": app " in reason else "other"


def tenant_stats(platform: Platform, tenant: str, since: float = 0.0) -> TenantStats:
    files = [f for f in platform.meta.list_files(tenant=tenant, limit=10_000_000) if f.received_at >= since]
    runs = [r for r in platform.meta.list_runs(tenant=tenant, limit=10_000_000) if r.started_at >= since]
    by_status = Counter(str(f.status) for f in files)
    reasons: Counter[str] = Counter()
    for f in files:
        if f.status in (FileStatus.REJECTED, FileStatus.DUPLICATE, FileStatus.FAILED):
            reasons.update({_rule_of(r) for r in f.reasons} or {"unknown"})
    accepted = [f for f in files if f.status not in (FileStatus.REJECTED, FileStatus.DUPLICATE)]
    finished = [r for r in runs if r.ended_at is not None]
    return TenantStats(
        tenant=tenant,
        files_by_status=dict(sorted(by_status.items())),
        bytes_accepted=sum(f.size_bytes for f in accepted),
        rows_written=sum(f.rows_written for f in files),
        rows_rejected=sum(f.rows_rejected for f in files),
        runs=len(runs),
        runs_failed=sum(1 for r in runs if r.status in (RunStatus.FAILED, RunStatus.TRANSIENT)),
        run_seconds=sum((r.ended_at or r.started_at) - r.started_at for r in finished),
        first_at=min((f.received_at for f in files), default=None),
        last_at=max((f.updated_at for f in files), default=None),
        top_reasons=tuple(reasons.most_common(5)),
    )


def stream_stats(reports: Sequence[Report]) -> dict[str, Any]:
    """Totals of the stream instances' reports: records, messages, bytes, errors (quarantined),
    latency (publish → committed) averaged over messages, the median of the periods' medians
    and the worst p95 of any period."""
    messages = sum(r.messages for r in reports)
    weighted = sum(r.latency_avg_ms * r.messages for r in reports)
    return {
        "records": sum(r.records for r in reports),
        "messages": messages,
        "bytes": sum(r.bytes for r in reports),
        "errors": sum(r.errors for r in reports),
        "latency_avg_ms": round(weighted / messages, 1) if messages else 0.0,
        "latency_p50_ms": round(quantile([r.latency_p50_ms for r in reports if r.messages], 0.5), 1)
        if any(r.messages for r in reports)
        else 0.0,
        "latency_p95_worst_ms": round(max((r.latency_p95_ms for r in reports if r.messages), default=0.0), 1),
        "streams": sorted({r.stream for r in reports}),
    }


def quality_stats(files: Sequence[FileQuality], windows: Sequence[WindowQuality]) -> dict[str, Any]:
    """The quality rules' results: of the files as fetchdata checked them (how many were
    rejected for their bad-row ratio) and of the stream apps' report windows."""
    batch, stream = summarize(files), summarize(windows)
    return {
        "batch": {"files": batch.units, "files_rejected": batch.rejected, **batch.to_json()},
        "stream": {"windows": stream.units, **stream.to_json()},
    }


def platform_report(platform: Platform, tenant: str | None = None, since: float = 0.0) -> dict[str, Any]:
    """Statistics per tenant (one tenant if given) and the platform-wide totals, of what was
    received (files) or reported (streams) since ``since`` (epoch s; 0: all)."""
    ids = [tenant] if tenant else [t.id for t in platform.meta.list_tenants()]
    stats = [tenant_stats(platform, t, since) for t in ids]
    streams = {t: stream_stats(platform.meta.streams.reports(t, since=since)) for t in ids}
    ledger = platform.meta.quality
    checked = {t: (ledger.files(t, since=since), ledger.windows(t, since=since)) for t in ids}
    total: Counter[str] = Counter()
    for s in stats:
        total.update(s.files_by_status)
    totals = {
        "tenants": len(stats),
        "files_by_status": dict(sorted(total.items())),
        "bytes_accepted": sum(s.bytes_accepted for s in stats),
        "rows_written": sum(s.rows_written for s in stats),
        "rows_rejected": sum(s.rows_rejected for s in stats),
        "runs": sum(s.runs for s in stats),
        "runs_failed": sum(s.runs_failed for s in stats),
        "run_seconds": round(sum(s.run_seconds for s in stats), 3),
        "stream_records": sum(st["records"] for st in streams.values()),
        "stream_messages": sum(st["messages"] for st in streams.values()),
        "quality": quality_stats(
            [q for files, _ in checked.values() for q in files], [w for _, windows in checked.values() for w in windows]
        ),
    }
    tenants = []
    for s in stats:
        item = asdict(s)
        item["rows_per_s"] = round(s.rows_per_s, 1)
        item["run_seconds"] = round(s.run_seconds, 3)
        item["quarantined_rows"] = platform.meta.count_quarantine(s.tenant)
        item["top_reasons"] = [{"rule": rule, "files": n} for rule, n in s.top_reasons]
        item["stream"] = streams[s.tenant]
        item["quality"] = quality_stats(*checked[s.tenant])
        tenants.append(item)
    return {
        "since": since or None,
        "tenants": tenants,
        "platform": totals,
        "sandbox": {**platform.sandbox_status.as_dict(), "summary": platform.sandbox_status.summary()},
    }
