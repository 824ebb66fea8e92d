"""Ingestion over time, in buckets: what ``report --plot`` draws and the dashboard charts.

Batch figures come from the runs (a run's rows count in the bucket where it ended; its
duration is start → end); stream figures from the instances' reports (each report's
records count in the bucket of its end; latency is publish → committed as the SDK measured
it over the report's period). A report carries its period's median, average and p95, not
every message's latency, so a bucket's stream p50 is the median of the medians reported in
it and its p95 the worst p95.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mysimbdp.domain.records import RunRecord
from mysimbdp.domain.scaling import Report
from mysimbdp.errors import ConfigError
from mysimbdp.runtime.platform import Platform

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``1h`` or ``2d``."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"duration {text!r} is not valid: use e.g. 90s, 15m, 1h, 2d")
    return float(match[1]) * _UNIT_S[match[2]]


def bucket_size(span_s: float, buckets: int = 60) -> float:
    """A round bucket width (1 s, 5 s, 15 s, 1 min, ...) giving about ``buckets`` buckets."""
    for width in (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400):
        if span_s / width <= buckets:
            return float(width)
    return 86400.0 * math.ceil(span_s / 86400 / buckets)


@dataclass(frozen=True)
class Point:
    at: float  # the bucket's start, epoch s
    value: float


@dataclass(frozen=True)
class TenantSeries:
    tenant: str
    batch_rows_per_s: list[Point]
    batch_run_p50_s: list[Point]
    batch_run_p95_s: list[Point]
    stream_records_per_s: list[Point]
    stream_latency_p50_ms: list[Point]
    stream_latency_p95_ms: list[Point]


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank; not empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _buckets(start: float, end: float, width: float) -> list[float]:
    first = math.floor(start / width) * width
    return [first + i * width for i in range(int((end - first) // width) + 1)]


def series_of(
    tenant: str, runs: Iterable[RunRecord], reports: Iterable[Report], *, start: float, end: float, width: float
) -> TenantSeries:
    """One tenant's series over ``[start, end]`` in buckets of ``width`` seconds (pure)."""
    rows: dict[float, float] = defaultdict(float)
    durations: dict[float, list[float]] = defaultdict(list)
    for run in runs:
        if run.ended_at is not None and start <= run.ended_at <= end:
            at = math.floor(run.ended_at / width) * width
            rows[at] += run.rows_written
            durations[at].append(run.ended_at - run.started_at)
    records: dict[float, float] = defaultdict(float)
    latency: dict[float, float] = {}
    medians: dict[float, list[float]] = defaultdict(list)
    for report in reports:
        if start <= report.at <= end:
            at = math.floor(report.at / width) * width
            records[at] += report.records
            if report.messages:
                latency[at] = max(latency.get(at, 0.0), report.latency_p95_ms)
                medians[at].append(report.latency_p50_ms)
    buckets = _buckets(start, end, width)
    return TenantSeries(
        tenant,
        [Point(b, rows.get(b, 0.0) / width) for b in buckets],
        [Point(b, quantile(durations[b], 0.5)) for b in buckets if durations.get(b)],
        [Point(b, quantile(durations[b], 0.95)) for b in buckets if durations.get(b)],
        [Point(b, records.get(b, 0.0) / width) for b in buckets],
        [Point(b, quantile(medians[b], 0.5)) for b in buckets if medians.get(b)],
        [Point(b, latency[b]) for b in buckets if b in latency],
    )


def first_activity(platform: Platform, tenants: Iterable[str], since: float) -> float | None:
    """When the first run started or the first stream report came, at ``since`` or later."""
    times = [
        t
        for tenant in tenants
        for t in (
            *(r.started_at for r in platform.meta.list_runs(tenant=tenant, limit=10_000_000)),
            *(r.at - r.period_s for r in platform.meta.streams.reports(tenant, since=since, limit=1)),
        )
        if t >= since
    ]
    return min(times, default=None)


def tenant_series(
    platform: Platform, tenant: str, *, since: float, until: float, width: float | None = None
) -> TenantSeries:
    runs = [r for r in platform.meta.list_runs(tenant=tenant, limit=10_000_000) if (r.ended_at or 0) >= since]
    reports = platform.meta.streams.reports(tenant, since=since)
    return series_of(tenant, runs, reports, start=since, end=until, width=width or bucket_size(until - since))
