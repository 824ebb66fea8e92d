"""Data quality kept per file and per stream window, on SQLite and PostgreSQL: fetchdata
records each file's rows checked and failed per rule (accepted and rejected files), a
stream app with the profile's rules quarantines failing records naming the rule and
reports its window's counts, which the monitor keeps; ``report --json``, ``files --json``
and ``GET /v1/files/{id}`` show them."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from mysimbdp import contract
from mysimbdp.adapters.broker import Broker
from mysimbdp.adapters.coredms import open_store
from mysimbdp.api import create_app
from mysimbdp.domain.envelope import Envelope, batch_id, encode_batch
from mysimbdp.domain.qualitycounts import FileQuality, QualityVerdict
from mysimbdp.domain.records import StreamInstance
from mysimbdp.domain.states import FileStatus
from mysimbdp.managers.streamingest import StreamIngestManager
from mysimbdp.managers.streammonitor import StreamMonitor
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.fetch import FetchDecision, fetch_file
from mysimbdp.services.tenants import NewTenant, add_tenant
from mysimbdp.settings import Settings
from tests import clifork
from tests.helpers import until_async

PROFILE = """
formats: [csv]
quality:
  max_bad_row_ratio: 0.3
  rules:
    - {field: qty, type: int, required: true, min: 0}
    - {field: sku, required: true, pattern: "^[a-z][0-9]$"}
stream_apps:
  - name: generic
    check_quality: true
    report_period_s: 0.3
    batch_size: 50
"""
# 10 rows, 3 failing (one breaks two rules): a ratio of 0.3, not over the limit: accepted.
ACCEPTED = "sku,qty\na1,1\na2,-1\na3,2\na4,3\nBAD,x\na6,5\na7,6\na8,7\na9,8\nb1,9,extra\n"
# 4 rows, 2 failing: 0.5 is over 0.3: the whole file is rejected.
REJECTED = "sku,qty\nc1,x\n,5\nc3,1\nc4,2\n"


@pytest.fixture
def broker_url(embedded_nats: str) -> str:
    return embedded_nats


@pytest.fixture
def settings(home: Path, meta_url: str, coredms_url: str, pg_prefix: str) -> Settings:
    return Settings(
        home=home, meta_url=meta_url, coredms_url=coredms_url, pg_prefix=pg_prefix, poll_interval_s=0.1, settle_s=0.0
    )


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    with Platform(settings, os.environ) as started:
        yield started


@pytest.fixture
def tenant(platform: Platform, tmp_path: Path) -> NewTenant:
    """A tenant with quality rules, named afresh (the module's NATS server outlives the test)."""
    profile = tmp_path / "bundle" / "profile.yaml"
    profile.parent.mkdir()
    profile.write_text(PROFILE, encoding="utf-8")
    return add_tenant(platform, f"q{uuid.uuid4().hex[:8]}", profile)


def _cli_json(settings: Settings, *args: str) -> Any:
    """``mysimbdp <args>`` as a subprocess on the same home and stores; its JSON output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    env.update(
        MYSIMBDP_HOME=str(settings.home),
        MYSIMBDP_META_URL=settings.meta_url,
        MYSIMBDP_COREDMS_URL=settings.coredms_url,
        MYSIMBDP_PG_PREFIX=settings.pg_prefix,
    )
    proc = clifork.run(args, env=env)
    assert proc.returncode == 0, proc.stderr
    return orjson.loads(proc.stdout)


def _fetch(platform: Platform, tenant: str, name: str, text: str) -> FetchDecision:
    inbox = platform.home.area("inbox", tenant)
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    path.write_text(text, encoding="utf-8")
    return fetch_file(platform, tenant, path)


def _quality(platform: Platform, decision: FetchDecision) -> FileQuality:
    quality = platform.meta.quality.file(decision.file_id)
    assert quality is not None
    record = platform.meta.get_file(decision.file_id)
    assert record is not None and quality.at == record.received_at
    return quality


# -- files ---------------------------------------------------------------------------------------
def test_an_accepted_file_keeps_exactly_its_per_rule_counts(platform: Platform, tenant: NewTenant) -> None:
    """3 of 10 rows fail (a ragged row, a negative qty, a row breaking two rules): the ratio
    0.3 is at the limit, the file is staged, and its quality says so rule by rule."""
    decision = _fetch(platform, tenant.record.id, "orders.csv", ACCEPTED)
    assert decision.status is FileStatus.STAGED, decision.reasons
    quality = _quality(platform, decision)
    assert quality == FileQuality(
        decision.file_id,
        tenant.record.id,
        quality.at,
        rows_checked=10,
        rows_failed=3,
        failed_by_rule={"qty.min": 1, "qty.type": 1, "sku.pattern": 1, "ragged": 1},
        max_bad_row_ratio=0.3,
        verdict=QualityVerdict.PASSED,
    )


def test_a_rejected_file_keeps_its_counts_and_its_reason_lists_them(platform: Platform, tenant: NewTenant) -> None:
    """2 of 4 rows fail: rejected whole; the reason names tenant, file, rule, ratio and the
    per-rule counts, and the quality record holds the same counts with verdict rejected."""
    decision = _fetch(platform, tenant.record.id, "bad.csv", REJECTED)
    assert decision.status is FileStatus.REJECTED
    (reason,) = decision.reasons
    assert reason.startswith(
        f"tenant {tenant.record.id!r}: file 'bad.csv': rule bad_row_ratio: 2 of 4 rows are bad (ratio 0.500), "
        "over the limit of 0.300; by rule: qty.type=1, sku.required=1"
    ), reason
    quality = _quality(platform, decision)
    assert (quality.rows_checked, quality.rows_failed, quality.failed_by_rule) == (
        4,
        2,
        {"qty.type": 1, "sku.required": 1},
    )
    assert (quality.verdict, quality.ratio, quality.max_bad_row_ratio) == (QualityVerdict.REJECTED, 0.5, 0.3)
    record = platform.meta.get_file(decision.file_id)
    assert record is not None and record.reasons == (reason,)


def test_a_file_without_rows_is_recorded_unchecked(platform: Platform, tenant: NewTenant) -> None:
    """A header-only file is rejected for that; its quality says no row was checked."""
    decision = _fetch(platform, tenant.record.id, "empty.csv", "sku,qty\n")
    assert decision.status is FileStatus.REJECTED
    quality = _quality(platform, decision)
    assert (quality.verdict, quality.rows_checked, quality.failed_by_rule) == (QualityVerdict.UNCHECKED, 0, {})


async def test_files_quality_is_shown_by_the_api_files_and_report(
    platform: Platform, settings: Settings, tenant: NewTenant, broker: Broker
) -> None:
    """``GET /v1/files/{id}`` and ``files --json`` carry each file's quality; ``report --json``
    adds them up per tenant: 14 rows checked, 5 failed, one file rejected, top rules first."""
    accepted = _fetch(platform, tenant.record.id, "orders.csv", ACCEPTED)
    rejected = _fetch(platform, tenant.record.id, "bad.csv", REJECTED)
    transport = httpx.ASGITransport(app=create_app(platform, broker), client=("127.0.0.1", 123))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(
            f"/v1/files/{rejected.file_id}", headers={"Authorization": f"Bearer {tenant.api_key}"}
        )
    assert response.status_code == 200, response.text
    assert response.json()["quality"] == {
        "rows_checked": 4,
        "rows_failed": 2,
        "ratio": 0.5,
        "max_bad_row_ratio": 0.3,
        "verdict": "rejected",
        "failed_by_rule": {"qty.type": 1, "sku.required": 1},
    }
    files = {f["file_id"]: f for f in _cli_json(settings, "files", "--tenant", tenant.record.id, "--json")}
    assert files[accepted.file_id]["quality"]["verdict"] == "passed"
    assert files[accepted.file_id]["quality"]["rows_failed"] == 3
    report = _cli_json(settings, "report", "--tenant", tenant.record.id, "--json")
    (item,) = report["tenants"]
    assert item["quality"]["batch"] == {
        "files": 2,
        "files_rejected": 1,
        "rows_checked": 14,
        "rows_failed": 5,
        "ratio": round(5 / 14, 6),
        "top_rules": [
            {"rule": "qty.type", "rows": 2},
            {"rule": "qty.min", "rows": 1},
            {"rule": "ragged", "rows": 1},
            {"rule": "sku.pattern", "rows": 1},
            {"rule": "sku.required", "rows": 1},
        ],
    }
    assert item["quality"]["stream"]["rows_checked"] == 0
    assert report["platform"]["quality"]["batch"]["rows_failed"] == 5


# -- stream windows ------------------------------------------------------------------------------
def test_the_stream_contract_passes_the_rules_only_to_apps_that_check_quality(
    platform: Platform, tenant: NewTenant, tmp_path: Path
) -> None:
    """``check_quality: true`` gives the app the profile's rules; off (the default) gives ""."""
    _, profile = platform.tenant(tenant.record.id)
    manager = StreamIngestManager(platform, broker=None, tenant_broker_url=str)  # type: ignore[arg-type]
    rec = StreamInstance("i1", tenant.record.id, "readings", "generic", "starting", 0, 0.0, 0.0, 0)
    (app,) = profile.stream_apps
    env = manager._contract(rec, app, profile, "sqlite:///x", tmp_path)
    assert orjson.loads(env[contract.QUALITY]) == orjson.loads(profile.quality.model_dump_json())
    off = manager._contract(rec, app.model_copy(update={"check_quality": False}), profile, "sqlite:///x", tmp_path)
    assert off[contract.QUALITY] == ""


@pytest.fixture
async def running(platform: Platform, broker: Broker, broker_url: str) -> AsyncIterator[None]:
    """The stream ingest manager and the stream monitor, as inside ``up``."""
    stop = asyncio.Event()
    manager = StreamIngestManager(platform, broker, lambda _tenant: broker_url)
    tasks = [asyncio.create_task(manager.run(stop)), asyncio.create_task(StreamMonitor(platform, broker).run(stop))]
    yield
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)


async def test_a_stream_app_quarantines_failing_records_and_its_windows_are_kept_and_reported(
    platform: Platform, settings: Settings, tenant: NewTenant, broker: Broker, running: None
) -> None:
    """The generic stream app with ``check_quality`` stores the 3 good of 5 records; the 2 bad
    are quarantined naming rule and value; the windows' counts (5 checked, 2 failed, per rule)
    are kept and ``report --json`` shows them."""
    name, stream = tenant.record.id, "readings"
    await broker.declare(name, stream)
    records: list[dict[str, Any]] = [
        {"sku": "a1", "qty": 1},
        {"sku": "a2", "qty": -4},  # qty.min
        {"sku": "a3", "qty": "2"},
        {"sku": "NOPE", "qty": "many"},  # sku.pattern and qty.type
        {"sku": "a5", "qty": 5},
    ]
    envelopes = [Envelope(f"r{n}", data) for n, data in enumerate(records)]
    await broker.publish(name, stream, [encode_batch(name, stream, envelopes)], [batch_id(envelopes)])
    platform.meta.streams.set_target(name, stream, "generic", 1)

    def windows_checked() -> int:
        return sum(w.rows_checked for w in platform.meta.quality.windows(name))

    await until_async(lambda: windows_checked() >= 5, what="the windows' quality counts")
    await until_async(lambda: len(platform.meta.list_quarantine(name)) >= 2, what="2 quarantined records")
    quarantined = {q.reason.split(":", 1)[0]: q for q in platform.meta.list_quarantine(name)}
    assert set(quarantined) == {"message r1", "message r3"}
    assert quarantined["message r1"].reason == "message r1: rule qty.min: field 'qty': value -4 is below the min of 0"
    bad = quarantined["message r3"].reason
    assert "rule qty.type: field 'qty': value 'many' is not an int" in bad and "rule sku.pattern:" in bad, bad
    assert orjson.loads(quarantined["message r3"].raw) == records[3]
    windows = platform.meta.quality.windows(name)
    assert {(w.stream, w.app) for w in windows} == {(stream, "generic")}
    assert (sum(w.rows_checked for w in windows), sum(w.rows_failed for w in windows)) == (5, 2)
    (tenant_record, _) = platform.tenant(name)
    store = open_store(tenant_record.coredms_url)
    try:
        assert store.count(stream) == 3
    finally:
        store.close()
    (item,) = _cli_json(settings, "report", "--tenant", name, "--json")["tenants"]
    assert item["quality"]["stream"] == {
        "windows": len(windows),
        "rows_checked": 5,
        "rows_failed": 2,
        "ratio": 0.4,
        "top_rules": [
            {"rule": "qty.min", "rows": 1},
            {"rule": "qty.type", "rows": 1},
            {"rule": "sku.pattern", "rows": 1},
        ],
    }
