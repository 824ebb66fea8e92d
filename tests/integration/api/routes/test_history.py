"""The history API over real ingestion (a file run by the tenant's app, on SQLite and
PostgreSQL): a tenant sees only its own files, runs, quarantined rows and decisions, the
operator sees every tenant's; and who may look (keys, the cookie, the loopback rule)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mysimbdp.adapters.broker import Broker
from mysimbdp.api import create_app
from mysimbdp.api.deps import KEY_COOKIE
from mysimbdp.domain.records import QuarantinedRow, ScalingRecord
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.ingest import ingest_one
from mysimbdp.services.tenants import NewTenant, add_tenant
from mysimbdp.settings import Settings
from tests.conftest import OPERATOR_KEY

REMOTE = ("203.0.113.7", 40000)  # TEST-NET-3: not loopback
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


def _settings(home: Path, meta_url: str, coredms_url: str, pg_prefix: str, admin_key: str) -> Settings:
    return Settings(home=home, meta_url=meta_url, coredms_url=coredms_url, pg_prefix=pg_prefix, admin_key=admin_key)


@pytest.fixture
def platform(operator_platform: Platform) -> Platform:
    return operator_platform


def _client(platform: Platform, broker: Broker, peer: tuple[str, int] = ("127.0.0.1", 123)) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(platform, broker), client=peer)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
async def client(platform: Platform, broker: Broker) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(platform, broker) as c:
        yield c


@dataclass
class World:
    shop: NewTenant
    other: NewTenant
    good: str  # shop's ingested file (2 of 4 rows quarantined)
    rejected: str  # shop's file rejected by the profile
    foreign: str  # other's ingested file


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _ingest(platform: Platform, tenant: str, path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    record = await ingest_one(platform, tenant, path, wait=True)
    assert record is not None
    return record.id


@pytest.fixture
async def world(platform: Platform, tmp_path: Path) -> World:
    """Two tenants with real files: shop has one ingested (two bad rows) and one rejected
    file, a stream app's quarantined record and a scaling decision; other has one file."""
    profile = tmp_path / "bundle" / "profile.yaml"
    profile.parent.mkdir()
    profile.write_text(PROFILE, encoding="utf-8")
    shop, other = add_tenant(platform, "shop", profile), add_tenant(platform, "other", None)
    good = await _ingest(platform, "shop", tmp_path / "orders.csv", "sku,qty\na1,3\na2,-1\na3,x\na4,9\n")
    rejected = await _ingest(platform, "shop", tmp_path / "notes.txt", "not a csv\n")
    foreign = await _ingest(platform, "other", tmp_path / "other.csv", "a,b\n1,2\n")
    platform.meta.add_quarantine([QuarantinedRow("shop", "stream:clicks:i1", "", 1, "{oops", "bad JSON")])
    decision = ScalingRecord(time.time(), "shop", "clicks", "generic", 1, 2, "backlog: scale up", {"backlog": 9})
    platform.meta.streams.record_decision(decision)
    return World(shop, other, good, rejected, foreign)


async def _get(client: httpx.AsyncClient, url: str, key: str, **params: Any) -> Any:
    response = await client.get(url, params=params, headers=_auth(key))
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_tenant_sees_each_file_with_its_history_runs_and_bad_rows(
    client: httpx.AsyncClient, world: World
) -> None:
    """A file's detail holds its record, every status change, its run with timings and its
    quarantined rows with line and reason."""
    detail = await _get(client, f"/v1/files/{world.good}", world.shop.api_key)
    assert detail["file"]["status"] == "ingested" and detail["file"]["name"] == "orders.csv"
    assert (detail["file"]["rows_written"], detail["file"]["rows_rejected"]) == (2, 2)
    assert [e["status"] for e in detail["events"]] == ["received", "staged", "running", "ingested"]
    (run,) = detail["runs"]
    duration = run["ended_at"] - run["started_at"]
    assert run["status"] == "succeeded" and run["duration_s"] == pytest.approx(duration, abs=1e-6)  # rounded to µs
    assert detail["quarantined_rows"] == 2
    assert {(q["line"], q["kind"]) for q in detail["quarantine_sample"]} == {(3, "batch"), (4, "batch")}
    assert all("qty" in q["reason"] for q in detail["quarantine_sample"])
    rejected = await _get(client, f"/v1/files/{world.rejected}", world.shop.api_key)
    assert rejected["file"]["status"] == "rejected" and rejected["file"]["reasons"] and rejected["runs"] == []


async def test_files_are_paged_newest_first_and_filtered(client: httpx.AsyncClient, world: World) -> None:
    """limit/offset page the tenant's files newest first; total counts every match; status
    and since filter."""
    key = world.shop.api_key
    first = await _get(client, "/v1/files", key, limit=1)
    second = await _get(client, "/v1/files", key, limit=1, offset=1)
    assert (first["total"], second["total"]) == (2, 2)
    assert [first["items"][0]["id"], second["items"][0]["id"]] == [world.rejected, world.good]
    ingested = await _get(client, "/v1/files", key, status="ingested")
    assert [f["id"] for f in ingested["items"]] == [world.good]
    assert (await _get(client, "/v1/files", key, since=time.time() + 60))["total"] == 0
    runs = await _get(client, "/v1/runs", key)
    assert [r["file_id"] for r in runs["items"]] == [world.good] and runs["total"] == 1


async def test_a_tenant_never_sees_another_tenants_rows(client: httpx.AsyncClient, world: World) -> None:
    """Another tenant's file id is 404 exactly like an unknown one; listings hold only the
    tenant's rows; asking for another tenant is 403."""
    key = world.other.api_key
    foreign = await client.get(f"/v1/files/{world.good}", headers=_auth(key))
    unknown = await client.get("/v1/files/f-nope", headers=_auth(key))
    assert (foreign.status_code, unknown.status_code) == (404, 404)
    assert foreign.json()["error"].replace(world.good, "X") == unknown.json()["error"].replace("f-nope", "X")
    assert [f["id"] for f in (await _get(client, "/v1/files", key))["items"]] == [world.foreign]
    for url in ("/v1/runs", "/v1/quarantine", "/v1/decisions"):
        assert {row["tenant"] for row in (await _get(client, url, key))["items"]} <= {"other"}, url
    assert (await _get(client, "/v1/quarantine", key))["total"] == 0
    asked = await client.get("/v1/files", params={"tenant": "shop"}, headers=_auth(key))
    assert asked.status_code == 403 and "own tenant" in asked.json()["error"]
    assert (await _get(client, "/v1/files", key, tenant="other"))["total"] == 1
    nul = await client.get("/v1/files/a%00b", headers=_auth(key))  # PostgreSQL text cannot hold NUL
    assert nul.status_code == 422


async def test_quarantine_holds_batch_and_stream_rows_and_decisions_are_listed(
    client: httpx.AsyncClient, world: World
) -> None:
    """Stream apps' quarantined records come with the files' ones (kind and stream named);
    the monitor's decisions are listed with reason and inputs."""
    key = world.shop.api_key
    rows = await _get(client, "/v1/quarantine", key)
    assert rows["total"] == 3
    stream_rows = await _get(client, "/v1/quarantine", key, kind="stream")
    assert [(q["stream"], q["reason"], q["raw"]) for q in stream_rows["items"]] == [("clicks", "bad JSON", "{oops")]
    assert (await _get(client, "/v1/quarantine", key, kind="batch", file_id=world.good))["total"] == 2
    page = await _get(client, "/v1/quarantine", key, limit=2, offset=2)
    assert len(page["items"]) == 1 and page["total"] == 3
    decisions = await _get(client, "/v1/decisions", key)
    assert [(d["stream"], d["from_instances"], d["to_instances"]) for d in decisions["items"]] == [("clicks", 1, 2)]
    assert decisions["items"][0]["inputs"] == {"backlog": 9}


async def test_the_operator_sees_every_tenant_or_the_one_asked(client: httpx.AsyncClient, world: World) -> None:
    """The operator key lists every tenant's files, filters with ?tenant= and opens any file;
    a file of another tenant than the one asked is 404."""
    everything = await _get(client, "/v1/files", OPERATOR_KEY)
    assert {f["tenant"] for f in everything["items"]} == {"shop", "other"} and everything["total"] == 3
    assert (await _get(client, "/v1/files", OPERATOR_KEY, tenant="other"))["total"] == 1
    assert (await _get(client, f"/v1/files/{world.good}", OPERATOR_KEY))["file"]["tenant"] == "shop"
    mismatched = await client.get(f"/v1/files/{world.good}", params={"tenant": "other"}, headers=_auth(OPERATOR_KEY))
    assert mismatched.status_code == 404


async def test_credentials_come_from_the_header_or_the_cookie_on_reads_only(
    client: httpx.AsyncClient, world: World
) -> None:
    """The dashboard's cookie authenticates a read like the header does, never a write; an
    unknown key or none (with an operator key configured) is 401; a tenant on /metrics is 403."""
    client.cookies.set(KEY_COOKIE, world.shop.api_key)
    by_cookie = await client.get("/v1/files")
    assert by_cookie.status_code == 200 and {f["tenant"] for f in by_cookie.json()["items"]} == {"shop"}
    write = await client.put("/v1/admin/tenants/shop/streams/clicks/instances", json={})
    assert write.status_code == 401, "a cookie must not authorize a write"
    client.cookies.clear()
    none = await client.get("/v1/files")
    assert none.status_code == 401 and "Authorization: Bearer" in none.json()["error"]
    assert none.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.get("/v1/files", headers=_auth("nope"))).status_code == 401
    forbidden = await client.get("/metrics", headers=_auth(world.shop.api_key))
    assert forbidden.status_code == 403 and "operator" in forbidden.json()["error"]
    assert (await client.get("/metrics", headers=_auth(OPERATOR_KEY))).status_code == 200


async def test_without_an_operator_key_only_loopback_is_the_operator_unasked(
    platform: Platform, broker: Broker, world: World
) -> None:
    """With no operator key configured a request without credentials is the operator from
    127.0.0.1 and ::1 (loopback-only by default) and 401 from anywhere else; keys still work."""
    settings = _settings(
        platform.settings.home,
        platform.settings.meta_url,
        platform.settings.coredms_url,
        platform.settings.pg_prefix,
        admin_key="",
    )
    with Platform(settings, {}) as open_platform:
        for peer in (("127.0.0.1", 5000), ("::1", 5000)):
            async with _client(open_platform, broker, peer) as local:
                assert (await local.get("/v1/files")).json()["total"] == 3, peer
                assert (await local.get("/metrics")).status_code == 200, peer
        async with _client(open_platform, broker, REMOTE) as remote:
            refused = await remote.get("/v1/files")
            assert refused.status_code == 401 and "Authorization" in refused.json()["error"]
            assert (await remote.get("/metrics")).status_code == 401
            own = await remote.get("/v1/files", headers=_auth(world.other.api_key))
            assert own.status_code == 200 and own.json()["total"] == 1


async def test_a_big_files_detail_lists_its_chunks_with_their_progress(
    client: httpx.AsyncClient, platform: Platform, tmp_path: Path
) -> None:
    """A file ingested in chunks (tiny ``big_files`` thresholds) shows each chunk: its byte
    range, first line, rows and state; the runs are one per chunk."""
    profile = tmp_path / "big" / "profile.yaml"
    profile.parent.mkdir()
    profile.write_text("formats: [csv]\nbig_files: {threshold_bytes: 1000, chunk_bytes: 1024}\n", encoding="utf-8")
    tenant = add_tenant(platform, "big", profile)
    rows = "".join(f"{n},{n * 2}\n" for n in range(600))
    file_id = await _ingest(platform, "big", tmp_path / "pairs.csv", "a,b\n" + rows)
    detail = await _get(client, f"/v1/files/{file_id}", tenant.api_key)
    chunks = detail["chunks"]
    size = detail["file"]["size_bytes"]
    assert len(chunks) == len(detail["runs"]) >= size // 1024  # one run per chunk of about 1 KiB
    assert [c["status"] for c in chunks] == ["done"] * len(chunks)
    assert chunks[0]["start_byte"] == 0 and chunks[-1]["end_byte"] == size
    assert all(a["end_byte"] == b["start_byte"] for a, b in itertools.pairwise(chunks))
    assert sum(c["rows_written"] for c in chunks) == detail["file"]["rows_written"] == 600
    assert chunks[0]["first_line"] == 1 and chunks[1]["first_line"] > 2
