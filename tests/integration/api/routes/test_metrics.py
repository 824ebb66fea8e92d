"""``GET /metrics`` over real ingestion on SQLite and PostgreSQL: each counter, gauge and
histogram equals what the meta store's own read methods say, and no label carries a file
name or an id."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mysimbdp.adapters.broker import Broker
from mysimbdp.api import create_app
from mysimbdp.api.routes.metrics import RUN_BUCKETS_S
from mysimbdp.domain.records import QuarantinedRow, ScalingRecord, StreamInstance
from mysimbdp.domain.scaling import LATENCY_BOUNDS_MS, Report
from mysimbdp.domain.states import FileStatus
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.ingest import ingest_one
from mysimbdp.services.tenants import add_tenant
from tests.conftest import OPERATOR_KEY

OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
PROFILE = """
formats: [csv]
quality:
  max_bad_row_ratio: 0.5
  rules:
    - {field: qty, type: int, required: true, min: 0}
"""


@pytest.fixture
def broker_url(embedded_nats: str) -> str:
    return embedded_nats


@pytest.fixture
def platform(operator_platform: Platform) -> Platform:
    return operator_platform


@pytest.fixture
async def client(platform: Platform, broker: Broker) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(platform, broker))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def _report(at: float, instance: str, records: int, p95_ms: float, backlog: int) -> Report:
    messages = records // 10  # each message's latency: a tenth of them at p95_ms, the rest at p95_ms / 4
    slow = messages // 10
    latencies = [p95_ms] * slow + [p95_ms / 4] * (messages - slow)
    counts = tuple(sum(1 for v in latencies if v <= bound) for bound in LATENCY_BOUNDS_MS)
    return Report(at, "shop", "clicks", "generic", instance, 5.0, messages, records, records * 20, 1,
                  p95_ms / 2, p95_ms, backlog, p95_ms / 4, messages, sum(latencies), counts)  # fmt: skip


async def _fill(platform: Platform, tmp_path: Path) -> None:
    """Real files through fetch and the tenant's app, plus the stream side's records."""
    profile = tmp_path / "bundle" / "profile.yaml"
    profile.parent.mkdir()
    profile.write_text(PROFILE, encoding="utf-8")
    add_tenant(platform, "shop", profile)
    add_tenant(platform, "idle", None)
    for name, text in {
        "orders.csv": "sku,qty\na1,3\na2,-1\na3,x\na4,9\n",
        "more.csv": "sku,qty\nb1,1\nb2,2\n",
        "notes.txt": "not a csv\n",
        "again.csv": "sku,qty\nb1,1\nb2,2\n",  # a duplicate of more.csv
    }.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert await ingest_one(platform, "shop", tmp_path / name, wait=True) is not None
    now = time.time()
    streams = platform.meta.streams
    streams.record_reports(
        [
            _report(now - 10, "i-one", 400, 80.0, 12),
            _report(now - 5, "i-two", 600, 1200.0, 30),
            _report(now, "i-one", 100, 20.0, 3),  # the newest: its latency and backlog are the gauges
        ]
    )
    streams.set_target("shop", "clicks", "generic", 2)
    for number, state in enumerate(("running", "running", "backoff", "stopped")):
        streams.record_instance(StreamInstance(f"i-{number}", "shop", "clicks", "generic", state, 0, now, now, 0))
    streams.record_decision(ScalingRecord(now - 8, "shop", "clicks", "generic", 1, 2, "backlog high", {}))
    streams.record_decision(ScalingRecord(now - 1, "shop", "clicks", "generic", 2, 1, "idle", {}))
    platform.meta.add_quarantine(
        [QuarantinedRow("shop", "stream:clicks:i-one", "", n, "{", "bad JSON") for n in (1, 2)]
    )


def _samples(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


async def test_metrics_equal_the_meta_store(client: httpx.AsyncClient, platform: Platform, tmp_path: Path) -> None:
    """Records, bytes, files by outcome, quarantine, run durations, stream latency, backlog,
    instances and decisions are the meta store's numbers, per tenant."""
    await _fill(platform, tmp_path)
    response = await client.get("/metrics", headers=OPERATOR)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    m = _samples(response.text)
    meta = platform.meta
    files = meta.list_files(tenant="shop")
    rows_written = sum(f.rows_written for f in files)
    reports = meta.streams.reports("shop")
    assert rows_written == 4 and len(reports) == 3
    records = m["mysimbdp_records_ingested"]
    assert _value(records, "mysimbdp_records_ingested_total", tenant="shop", kind="batch") == rows_written
    assert _value(records, "mysimbdp_records_ingested_total", tenant="shop", kind="stream") == sum(
        r.records for r in reports
    )
    assert _value(records, "mysimbdp_records_ingested_total", tenant="idle", kind="batch") == 0
    ingested_bytes = sum(f.size_bytes for f in files if f.status is FileStatus.INGESTED)
    assert _value(m["mysimbdp_bytes_ingested"], "mysimbdp_bytes_ingested_total", tenant="shop", kind="batch") == (
        ingested_bytes
    )
    assert _value(m["mysimbdp_bytes_ingested"], "mysimbdp_bytes_ingested_total", tenant="shop", kind="stream") == sum(
        r.bytes for r in reports
    )
    by_status = {s: sum(1 for f in files if f.status is s) for s in FileStatus}
    outcomes = {
        "ingested": by_status[FileStatus.INGESTED],
        "rejected": by_status[FileStatus.REJECTED] + by_status[FileStatus.DUPLICATE],
        "failed": by_status[FileStatus.FAILED],
    }
    assert outcomes == {"ingested": 2, "rejected": 2, "failed": 0}
    for outcome, count in outcomes.items():
        assert _value(m["mysimbdp_files"], "mysimbdp_files_total", tenant="shop", outcome=outcome) == count
    quarantined = m["mysimbdp_quarantined_records"]
    batch_q = meta.count_quarantine("shop") - meta.count_quarantine("shop", file_id_prefix="stream:")
    assert _value(quarantined, "mysimbdp_quarantined_records_total", tenant="shop", kind="batch") == batch_q == 2
    assert _value(quarantined, "mysimbdp_quarantined_records_total", tenant="shop", kind="stream") == 2

    runs = [r for r in meta.list_runs(tenant="shop") if r.ended_at is not None]
    durations = [r.ended_at - r.started_at for r in runs if r.ended_at is not None]
    hist = m["mysimbdp_batch_run_duration_seconds"]
    name = "mysimbdp_batch_run_duration_seconds"
    assert _value(hist, f"{name}_count", tenant="shop", status="succeeded") == len(durations) == 2
    assert _value(hist, f"{name}_sum", tenant="shop", status="succeeded") == pytest.approx(sum(durations))
    for bound in RUN_BUCKETS_S:
        below = sum(1 for d in durations if d <= bound)
        assert _value(hist, f"{name}_bucket", tenant="shop", status="succeeded", le=str(bound)) == below

    newest = max(reports, key=lambda r: r.at)
    stream = {"tenant": "shop", "stream": "clicks"}
    p95_gauge = _value(m["mysimbdp_stream_latency_p95_seconds"], "mysimbdp_stream_latency_p95_seconds", **stream)
    assert p95_gauge == pytest.approx(newest.latency_p95_ms / 1000)
    assert _value(m["mysimbdp_stream_backlog_messages"], "mysimbdp_stream_backlog_messages", **stream) == 3
    p95s = m["mysimbdp_stream_report_latency_p95_seconds"]
    assert _value(p95s, "mysimbdp_stream_report_latency_p95_seconds_count", **stream) == len(reports)
    assert _value(p95s, "mysimbdp_stream_report_latency_p95_seconds_bucket", **stream, le="0.1") == 2
    assert _value(p95s, "mysimbdp_stream_report_latency_p95_seconds_sum", **stream) == pytest.approx(1.3)
    per_message = m["mysimbdp_stream_message_latency_seconds"]
    name = "mysimbdp_stream_message_latency_seconds"
    assert _value(per_message, f"{name}_count", **stream) == sum(r.latency_n for r in reports) == 110
    assert _value(per_message, f"{name}_sum", **stream) == pytest.approx(sum(r.latency_sum_ms for r in reports) / 1000)
    for index, bound in enumerate(LATENCY_BOUNDS_MS):
        below = sum(r.latency_counts[index] for r in reports)
        assert _value(per_message, f"{name}_bucket", **stream, le=str(bound / 1000)) == below
    assert _value(per_message, f"{name}_bucket", **stream, le="0.025") == 36 + 10  # 20 ms, and 20 ms and 5 ms
    instances = m["mysimbdp_stream_instances"]
    assert _value(instances, "mysimbdp_stream_instances", **stream, state="running") == 2
    assert _value(instances, "mysimbdp_stream_instances", **stream, state="backoff") == 1
    assert _value(m["mysimbdp_stream_target_instances"], "mysimbdp_stream_target_instances", **stream) == 2
    decisions = m["mysimbdp_scaling_decisions"]
    assert len(meta.streams.decisions("shop")) == 2
    for direction in ("up", "down"):
        assert _value(decisions, "mysimbdp_scaling_decisions_total", **stream, direction=direction) == 1


async def test_no_label_names_a_file_or_an_id(client: httpx.AsyncClient, platform: Platform, tmp_path: Path) -> None:
    """Label values are tenants, streams and small fixed sets: never a file name, file id,
    run id or instance id (bounded cardinality)."""
    await _fill(platform, tmp_path)
    text = (await client.get("/metrics", headers=OPERATOR)).text
    values = {v for samples in _samples(text).values() for s in samples for k, v in s.labels.items() if k != "le"}
    files = platform.meta.list_files(limit=1000)
    forbidden = {f.name for f in files} | {f.id for f in files} | {r.id for r in platform.meta.list_runs()}
    forbidden |= {i.id for i in platform.meta.streams.instances(include_stopped=True)} | {"i-one", "i-two"}
    assert values and not values & forbidden
    fixed = {"batch", "stream", "ingested", "rejected", "failed", "succeeded", "up", "down", "running", "backoff"}
    assert values <= {"shop", "idle", "clicks"} | fixed | {str(s) for s in FileStatus}
