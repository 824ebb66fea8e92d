"""Prometheus ``GET /metrics``: every tenant's volume, errors, latency and scaling.

A custom collector reads the meta store at scrape time, so each number is exactly what the
meta store holds (the same as ``mysimbdp report`` and the history API), whichever process
recorded it. Labels are the tenant and small fixed sets (``kind``, ``outcome``, ``status``,
``state``, ``direction``) and the stream name (a tenant declares a few): never a file name,
file id, run id or instance id, so the series stay bounded. Operator only (see
:mod:`mysimbdp.api.deps`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from mysimbdp.adapters.metastore.history import MetaHistory
from mysimbdp.api.deps import OperatorViewer, Refused, context_of, documented
from mysimbdp.domain.scaling import LATENCY_BOUNDS_MS
from mysimbdp.domain.states import FileStatus
from mysimbdp.errors import StoreError, StoreUnavailable

__all__ = ["OUTCOMES", "RUN_BUCKETS_S", "STREAM_P95_BUCKETS_S", "MetaStoreCollector", "router"]

RUN_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
STREAM_P95_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OUTCOMES = {
    FileStatus.INGESTED: "ingested",
    FileStatus.REJECTED: "rejected",
    FileStatus.DUPLICATE: "rejected",
    FileStatus.FAILED: "failed",
}

StreamTotals = list[tuple[str, str, int, int, int, int]]  # MetaHistory.stream_totals()

router = APIRouter(tags=["operator"])


def _buckets(bounds: Sequence[float], cumulative: Sequence[int], count: int) -> list[tuple[str, float]]:
    return [*((str(b), float(n)) for b, n in zip(bounds, cumulative, strict=True)), ("+Inf", float(count))]


class MetaStoreCollector(Collector):
    """Reads the meta store on each ``collect()`` (a scrape): no state of its own."""

    def __init__(self, history: MetaHistory) -> None:
        self._history = history

    def describe(self) -> list[Metric]:
        return []  # registering must not query the store

    def collect(self) -> Iterator[Metric]:
        stream_totals = self._history.stream_totals()
        yield from self._batch(stream_totals)
        yield from self._quarantine()
        yield from self._runs()
        yield from self._streams(stream_totals)

    def _batch(self, stream_totals: StreamTotals) -> Iterator[Metric]:
        tenants = self._history.tenants()
        records = CounterMetricFamily(
            "mysimbdp_records_ingested",
            "Records written to coredms: batch = the files' rows_written; stream = the instances' reported records",
            labels=["tenant", "kind"],
        )
        volume = CounterMetricFamily(
            "mysimbdp_bytes_ingested",
            "Bytes ingested: batch = size of the files ingested; stream = bytes of the broker messages handled",
            labels=["tenant", "kind"],
        )
        files = CounterMetricFamily(
            "mysimbdp_files",
            "Files that reached a final outcome: ingested, rejected (by the profile, or a duplicate), failed",
            labels=["tenant", "outcome"],
        )
        pending = GaugeMetricFamily(
            "mysimbdp_files_pending",
            "Files not finished yet, by status (checking, received, staged, running, retry)",
            labels=["tenant", "status"],
        )
        rows: dict[str, int] = dict.fromkeys(tenants, 0)
        size: dict[str, int] = dict.fromkeys(tenants, 0)
        outcomes = {(t, o): 0 for t in tenants for o in sorted(set(OUTCOMES.values()))}
        for tenant, status, count, size_bytes, written in self._history.files_by_status():
            rows[tenant] = rows.get(tenant, 0) + written
            outcome = OUTCOMES.get(FileStatus(status))
            if outcome is None:
                pending.add_metric([tenant, status], count)
                continue
            outcomes[tenant, outcome] = outcomes.get((tenant, outcome), 0) + count
            if outcome == "ingested":
                size[tenant] = size.get(tenant, 0) + size_bytes
        stream_rows: dict[str, int] = dict.fromkeys(tenants, 0)
        stream_size: dict[str, int] = dict.fromkeys(tenants, 0)
        for tenant, _stream, _reports, _messages, records_, bytes_ in stream_totals:
            stream_rows[tenant] = stream_rows.get(tenant, 0) + records_
            stream_size[tenant] = stream_size.get(tenant, 0) + bytes_
        for tenant in sorted(rows.keys() | stream_rows.keys()):
            records.add_metric([tenant, "batch"], rows.get(tenant, 0))
            records.add_metric([tenant, "stream"], stream_rows.get(tenant, 0))
            volume.add_metric([tenant, "batch"], size.get(tenant, 0))
            volume.add_metric([tenant, "stream"], stream_size.get(tenant, 0))
        for (tenant, outcome), count in sorted(outcomes.items()):
            files.add_metric([tenant, outcome], count)
        yield from (records, volume, files, pending)

    def _quarantine(self) -> Iterator[Metric]:
        quarantined = CounterMetricFamily(
            "mysimbdp_quarantined_records",
            "Rows in the quarantine ledger: of files (batch) and of stream apps (stream)",
            labels=["tenant", "kind"],
        )
        counts = {(tenant, kind): 0 for tenant in self._history.tenants() for kind in ("batch", "stream")}
        for tenant, kind, count in self._history.quarantine_counts():
            counts[tenant, kind] = count
        for (tenant, kind), count in sorted(counts.items()):
            quarantined.add_metric([tenant, kind], count)
        yield quarantined

    def _runs(self) -> Iterator[Metric]:
        durations = HistogramMetricFamily(
            "mysimbdp_batch_run_duration_seconds",
            "Wall time of finished batch app runs (ended_at - started_at), by run status",
            labels=["tenant", "status"],
        )
        for tenant, status, count, total_s, cumulative in self._history.run_durations(RUN_BUCKETS_S):
            durations.add_metric([tenant, status], _buckets(RUN_BUCKETS_S, cumulative, count), total_s)
        yield durations

    def _streams(self, stream_totals: StreamTotals) -> Iterator[Metric]:
        latest_avg = GaugeMetricFamily(
            "mysimbdp_stream_latency_avg_seconds",
            "Mean publish-to-committed latency over the period of the stream's newest instance report "
            "(one instance, one report period; not a platform-wide mean)",
            labels=["tenant", "stream"],
        )
        latest_p95 = GaugeMetricFamily(
            "mysimbdp_stream_latency_p95_seconds",
            "95th percentile publish-to-committed latency over the period of the stream's newest instance report "
            "(one instance, one report period)",
            labels=["tenant", "stream"],
        )
        latest_p50 = GaugeMetricFamily(
            "mysimbdp_stream_latency_p50_seconds",
            "Median publish-to-committed latency over the period of the stream's newest instance report "
            "(one instance, one report period)",
            labels=["tenant", "stream"],
        )
        backlog = GaugeMetricFamily(
            "mysimbdp_stream_backlog_messages",
            "Messages of the stream not acked yet, as the stream's newest instance report saw them",
            labels=["tenant", "stream"],
        )
        for tenant, stream, _at, avg_ms, p95_ms, waiting, p50_ms in self._history.latest_reports():
            latest_avg.add_metric([tenant, stream], avg_ms / 1000)
            latest_p50.add_metric([tenant, stream], p50_ms / 1000)
            latest_p95.add_metric([tenant, stream], p95_ms / 1000)
            backlog.add_metric([tenant, stream], waiting)
        p95s = HistogramMetricFamily(
            "mysimbdp_stream_report_latency_p95_seconds",
            "Distribution of the instances' per-report p95 latencies: one observation per report, "
            "not per message (the reports carry no per-message latencies)",
            labels=["tenant", "stream"],
        )
        bounds_ms = [b * 1000 for b in STREAM_P95_BUCKETS_S]
        for tenant, stream, count, sum_ms, cumulative in self._history.report_p95s(bounds_ms):
            p95s.add_metric([tenant, stream], _buckets(STREAM_P95_BUCKETS_S, cumulative, count), sum_ms / 1000)
        per_message = HistogramMetricFamily(
            "mysimbdp_stream_message_latency_seconds",
            "Publish-to-committed latency of each broker message, as the instances measured and reported it",
            labels=["tenant", "stream"],
        )
        bounds_s = [b / 1000 for b in LATENCY_BOUNDS_MS]
        for tenant, stream, count, sum_ms, cumulative in self._history.message_latencies():
            per_message.add_metric([tenant, stream], _buckets(bounds_s, cumulative, count), sum_ms / 1000)
        reports = CounterMetricFamily(
            "mysimbdp_stream_reports", "Instance reports received per stream", labels=["tenant", "stream"]
        )
        messages = CounterMetricFamily(
            "mysimbdp_stream_messages",
            "Broker messages handled, as the instances reported",
            labels=["tenant", "stream"],
        )
        for tenant, stream, count, handled, _records, _bytes in stream_totals:
            reports.add_metric([tenant, stream], count)
            messages.add_metric([tenant, stream], handled)
        instances = GaugeMetricFamily(
            "mysimbdp_stream_instances",
            "Stream app instances not stopped, by state (starting, running, backoff, crash_loop)",
            labels=["tenant", "stream", "state"],
        )
        for tenant, stream, state, count in self._history.instances():
            instances.add_metric([tenant, stream, state], count)
        targets = GaugeMetricFamily(
            "mysimbdp_stream_target_instances",
            "Instances the stream should have (operator's or monitor's target, summed over its apps)",
            labels=["tenant", "stream"],
        )
        for tenant, stream, count in self._history.targets():
            targets.add_metric([tenant, stream], count)
        decisions = CounterMetricFamily(
            "mysimbdp_scaling_decisions",
            "Scaling decisions the stream monitor carried out, by direction (up, down)",
            labels=["tenant", "stream", "direction"],
        )
        for tenant, stream, direction, count in self._history.decision_counts():
            decisions.add_metric([tenant, stream, direction], count)
        yield from (
            latest_avg,
            latest_p50,
            latest_p95,
            backlog,
            p95s,
            per_message,
            reports,
            messages,
            instances,
            targets,
            decisions,
        )


def _scrape(history: MetaHistory) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetaStoreCollector(history))
    return generate_latest(registry)


@router.get(
    "/metrics",
    summary="Prometheus metrics of every tenant (read from the meta store at scrape time)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        **documented(
            {
                401: "No credentials (and not loopback without an operator key), or an unknown key",
                403: "A tenant's API key",
                503: "The meta store is unavailable; see Retry-After",
            }
        ),
    },
)
async def metrics(request: Request, viewer: OperatorViewer) -> Response:
    try:
        body = await asyncio.to_thread(_scrape, context_of(request).platform.meta.history)
    except StoreUnavailable as exc:
        raise Refused(503, f"the meta store is unavailable: {exc}", {"Retry-After": "5"}) from exc
    except StoreError as exc:
        raise Refused(500, f"the meta store failed: {exc}") from exc
    return Response(body, media_type=CONTENT_TYPE_LATEST)
