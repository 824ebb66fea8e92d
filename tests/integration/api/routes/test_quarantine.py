"""The quarantine API over real ingestion (the tenant's own batch app, SQLite and PostgreSQL):
a tenant summarises, pages, replays and purges its own entries only; the operator names
the tenant; writes take the Authorization header, never the dashboard's cookie."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mysimbdp.adapters.broker import Broker
from mysimbdp.adapters.coredms import open_store
from mysimbdp.api import create_app
from mysimbdp.api.deps import KEY_COOKIE
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.ingest import ingest_one
from mysimbdp.services.tenants import NewTenant, add_tenant
from tests.conftest import OPERATOR_KEY

PROFILE = """
formats: [csv]
dataset: orders
quality: {max_bad_row_ratio: 0.9}
batch_apps:
  - name: app
    command: ["{python}", "{bundle}/app.py"]
    memory_mb: 512
"""
APP_V1 = 'from mysimbdp import sdk\nsdk.run_batch(lambda row: {"sku": row["sku"], "qty": int(row["qty"])})\n'
APP_V2 = APP_V1.replace('int(row["qty"])', 'None if row["qty"] == "n/a" else int(row["qty"])')


@pytest.fixture
def broker_url(embedded_nats: str) -> str:
    return embedded_nats


@pytest.fixture
async def client(operator_platform: Platform, broker: Broker) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(operator_platform, broker), client=("127.0.0.1", 123))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@dataclass
class World:
    platform: Platform
    shop: NewTenant
    other: NewTenant
    orders: str  # shop's file: lines 3 and 5 quarantined by app v1
    foreign: str  # other's file: line 2 quarantined

    def fix_shop(self) -> None:
        (Path(self.shop.record.bundle_dir) / "app.py").write_text(APP_V2, encoding="utf-8")

    def stored(self) -> int:
        store = open_store(self.shop.record.coredms_url)
        try:
            return store.count("orders")
        finally:
            store.close()


async def _ingest(platform: Platform, tenant: str, path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    record = await ingest_one(platform, tenant, path, wait=True)
    assert record is not None and record.status == "ingested"
    return record.id


@pytest.fixture
async def world(operator_platform: Platform, tmp_path: Path) -> World:
    tenants = {}
    for name in ("shop", "other"):
        bundle = tmp_path / "bundles" / name
        bundle.mkdir(parents=True)
        (bundle / "profile.yaml").write_text(PROFILE, encoding="utf-8")
        (bundle / "app.py").write_text(APP_V1, encoding="utf-8")
        tenants[name] = add_tenant(operator_platform, name, bundle / "profile.yaml")
    orders = await _ingest(operator_platform, "shop", tmp_path / "orders.csv", "sku,qty\na1,3\na2,n/a\na3,4\na4,n/a\n")
    foreign = await _ingest(operator_platform, "other", tmp_path / "theirs.csv", "sku,qty\nz1,n/a\n")
    return World(operator_platform, tenants["shop"], tenants["other"], orders, foreign)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_tenant_replays_its_fixed_rows_once(client: httpx.AsyncClient, world: World) -> None:
    """Summary and entries show the tenant's bad rows; after the app's fix a replay stores
    them (the file's count then equals a clean ingestion's) and a second replay is a no-op."""
    key = world.shop.api_key
    (summary,) = await _ok(await client.get("/v1/quarantine/summary", headers=_auth(key)))
    assert (summary["kind"], summary["source"], summary["name"], summary["entries"]) == (
        "batch",
        world.orders,
        "orders.csv",
        2,
    )
    assert summary["reasons"][0]["count"] == 2 and "invalid literal" in summary["reasons"][0]["reason"]
    page = await _ok(
        await client.get("/v1/quarantine/entries", params={"file_id": world.orders, "limit": 1}, headers=_auth(key))
    )
    assert page["total"] == 2 and [(e["line"], e["raw"]) for e in page["items"]] == [(3, "a2,n/a")]

    world.fix_shop()
    (report,) = await _ok(
        await client.post("/v1/quarantine/replay", json={"file_id": world.orders}, headers=_auth(key))
    )
    assert (report["replayed"], report["restored"], report["remaining"], report["errors"]) == (2, 2, 0, [])
    assert world.stored() == 4
    runs = await _ok(await client.get("/v1/runs", params={"file_id": world.orders}, headers=_auth(key)))
    assert report["runs"][0] in {r["id"] for r in runs["items"]}, "the replay run is in the history"
    assert await _ok(await client.post("/v1/quarantine/replay", json={}, headers=_auth(key))) == []
    assert world.stored() == 4


async def test_a_tenant_never_touches_another_tenants_entries(client: httpx.AsyncClient, world: World) -> None:
    """With another tenant's file id every route answers 404, as for an unknown id; naming
    the other tenant is 403; the entries stay as they were."""
    key = world.other.api_key
    entries = await client.get("/v1/quarantine/entries", params={"file_id": world.orders}, headers=_auth(key))
    replay = await client.post("/v1/quarantine/replay", json={"file_id": world.orders}, headers=_auth(key))
    purge = await client.post("/v1/quarantine/purge", json={"file_id": world.orders}, headers=_auth(key))
    unknown = await client.post("/v1/quarantine/replay", json={"file_id": "f_nope"}, headers=_auth(key))
    for response in (entries, replay, purge, unknown):
        assert response.status_code == 404, response.text
        assert "tenant 'other': no file" in response.json()["error"]
    named = await client.post("/v1/quarantine/replay", params={"tenant": "shop"}, json={}, headers=_auth(key))
    assert named.status_code == 403
    (own,) = await _ok(await client.get("/v1/quarantine/summary", headers=_auth(key)))
    assert own["source"] == world.foreign
    shop = await _ok(await client.get("/v1/quarantine/entries", headers=_auth(world.shop.api_key)))
    assert shop["total"] == 2


async def test_the_operator_names_the_tenant(client: httpx.AsyncClient, world: World) -> None:
    """The operator's key acts on the tenant of ``?tenant=`` and must name one."""
    op = _auth(OPERATOR_KEY)
    missing = await client.post("/v1/quarantine/replay", json={}, headers=op)
    assert missing.status_code == 422 and "?tenant=" in missing.json()["error"]
    nobody = await client.get("/v1/quarantine/summary", params={"tenant": "nobody"}, headers=op)
    assert nobody.status_code == 404
    world.fix_shop()
    (report,) = await _ok(await client.post("/v1/quarantine/replay", params={"tenant": "shop"}, json={}, headers=op))
    assert (report["tenant"], report["restored"]) == ("shop", 2)
    other = await _ok(await client.get("/v1/quarantine/entries", params={"tenant": "other"}, headers=op))
    assert other["total"] == 1, "the operator's replay of shop left other alone"


async def test_a_purge_is_recorded_with_who_and_when(client: httpx.AsyncClient, world: World) -> None:
    """A purge names what it deletes; it records who (``by``, else the key's owner) and when;
    each tenant sees its own purges only."""
    key = world.shop.api_key
    vague = await client.post("/v1/quarantine/purge", json={}, headers=_auth(key))
    assert vague.status_code == 422
    record = await _ok(await client.post("/v1/quarantine/purge", json={"file_id": world.orders}, headers=_auth(key)))
    assert (record["entries"], record["purged_by"], record["via"]) == (2, "tenant shop", "api (tenant key)")
    assert record["selection"] == f"file {world.orders}" and record["at"] > 0
    empty = await _ok(await client.get("/v1/quarantine/entries", headers=_auth(key)))
    assert empty["total"] == 0
    op = await _ok(
        await client.post(
            "/v1/quarantine/purge",
            params={"tenant": "other"},
            json={"all": True, "by": "ops on call"},
            headers=_auth(OPERATOR_KEY),
        )
    )
    assert (op["entries"], op["purged_by"], op["via"]) == (1, "ops on call", "api (operator key)")
    mine = await _ok(await client.get("/v1/quarantine/purges", headers=_auth(key)))
    assert [p["id"] for p in mine["items"]] == [record["id"]] and mine["total"] == 1
    theirs = await _ok(await client.get("/v1/quarantine/purges", headers=_auth(world.other.api_key)))
    assert [p["id"] for p in theirs["items"]] == [op["id"]]


async def test_writes_take_the_header_never_the_cookie(client: httpx.AsyncClient, world: World) -> None:
    """The dashboard's cookie reads; a replay or a purge with only the cookie is 401."""
    cookies = {KEY_COOKIE: world.shop.api_key}
    client.cookies.update(cookies)
    read = await client.get("/v1/quarantine/summary")
    assert read.status_code == 200
    for path, body in (("/v1/quarantine/replay", {}), ("/v1/quarantine/purge", {"all": True})):
        assert (await client.post(path, json=body)).status_code == 401
    assert world.platform.meta.quarantine.count("shop") == 2
