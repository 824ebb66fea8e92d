"""The operator API: stream instances started, scaled, listed and stopped with the operator
key; a tenant's key is refused (403), a missing key is 401, and the API is off without a key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from mysimbdp.adapters.broker import Broker
from mysimbdp.api import create_app
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.tenants import add_tenant
from mysimbdp.settings import Settings

OPERATOR = {"Authorization": "Bearer op-secret"}


@pytest.fixture
def broker_url(embedded_nats: str) -> str:
    return embedded_nats


def _platform(home: Path, admin_key: str) -> Platform:
    return Platform(Settings(home=home, admin_key=admin_key), {}).start()


@pytest.fixture
def platform(home: Path) -> Iterator[Platform]:
    started = _platform(home, "op-secret")
    try:
        yield started
    finally:
        started.close()


async def _client(platform: Platform, broker: Broker) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(platform, broker))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
async def client(platform: Platform, broker: Broker) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(platform, broker):
        yield c


async def test_the_operator_starts_lists_and_stops_instances(client: httpx.AsyncClient, platform: Platform) -> None:
    add_tenant(platform, "acme", None)
    url = "/v1/admin/tenants/acme/streams/clicks/instances"
    started = await client.put(url, json={"instances": 2}, headers=OPERATOR)
    assert started.status_code == 200, started.text
    assert started.json() == {"tenant": "acme", "stream": "clicks", "app": "generic", "instances": 2}
    listed = (await client.get("/v1/admin/streams", params={"tenant": "acme"}, headers=OPERATOR)).json()
    assert [(r["stream"], r["instances"]) for r in listed] == [("clicks", 2)]
    too_many = await client.put(url, json={"instances": 9}, headers=OPERATOR)
    assert too_many.status_code == 422 and "max_instances" in too_many.json()["error"]
    stopped = await client.delete(url, headers=OPERATOR)
    assert stopped.status_code == 200 and stopped.json()[0]["instances"] == 0
    unknown = await client.put("/v1/admin/tenants/nobody/streams/clicks/instances", json={}, headers=OPERATOR)
    assert unknown.status_code == 404 and "nobody" in unknown.json()["error"]


async def test_a_tenant_key_is_forbidden_and_no_key_is_unauthorized(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    key = add_tenant(platform, "acme", None).api_key
    url = "/v1/admin/tenants/acme/streams/clicks/instances"
    forbidden = await client.put(url, json={}, headers={"Authorization": f"Bearer {key}"})
    assert forbidden.status_code == 403 and "tenant's API key" in forbidden.json()["error"]
    assert (await client.get("/v1/admin/streams")).status_code == 401
    wrong = await client.get("/v1/admin/streams", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


async def test_without_an_operator_key_the_operator_api_is_off(tmp_path: Path, broker: Broker) -> None:
    platform = _platform(tmp_path / "home", "")
    try:
        async for client in _client(platform, broker):
            off = await client.get("/v1/admin/streams", headers=OPERATOR)
            assert off.status_code == 403 and "MYSIMBDP_ADMIN_KEY" in off.json()["error"]
    finally:
        platform.close()
