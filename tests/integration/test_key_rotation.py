"""API key rotation, on the meta store of each backend and through the real API: the old key
works within its grace and is refused after it, the new key works at once and reaches only
its own tenant; by the CLI and by the operator API."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from mysimbdp.adapters.broker import Broker
from mysimbdp.api import create_app
from mysimbdp.platform import Platform
from mysimbdp.services.tenants import add_tenant, rotate_key
from tests.conftest import OPERATOR_KEY

OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


@pytest.fixture
def broker_url(embedded_nats: str) -> str:
    return embedded_nats


class Clock:
    """The API's monotonic clock, moved on by the test (its key cache lives 5 s)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(operator_platform: Platform, broker: Broker, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(operator_platform, broker, clock=clock))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def _files(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.get("/v1/files", headers={"Authorization": f"Bearer {key}"})


async def test_the_old_key_works_within_the_grace_and_is_refused_after(
    client: httpx.AsyncClient, operator_platform: Platform, clock: Clock
) -> None:
    """A key the API has cached stays cached at most its 5 s (a rotation by another process,
    the CLI, cannot reach the API's cache): then the grace decides, to the second."""
    first = add_tenant(operator_platform, "acme", None).api_key
    assert (await _files(client, first)).status_code == 200  # cached by the API from now on
    rotated = rotate_key(operator_platform, "acme", grace_s=1.5)
    assert rotated.api_key != first
    assert (await _files(client, first)).status_code == 200  # within the grace
    assert (await _files(client, rotated.api_key)).status_code == 200
    time.sleep(max(0.0, rotated.old_keys_expire_at - time.time()) + 0.1)
    clock.now += 5.0
    assert (await _files(client, first)).status_code == 401  # the cache never outlives the grace
    assert (await _files(client, rotated.api_key)).status_code == 200


async def test_a_rotated_key_reaches_only_its_own_tenant(
    client: httpx.AsyncClient, operator_platform: Platform
) -> None:
    add_tenant(operator_platform, "acme", None)
    add_tenant(operator_platform, "beta", None)
    answer = await client.post("/v1/admin/tenants/acme/rotate-key", json={"grace_s": 0}, headers=OPERATOR)
    assert answer.status_code == 200, answer.text
    key = answer.json()["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/v1/files", headers=headers)).status_code == 200
    assert (await client.get("/v1/admin/streams", headers=headers)).status_code == 403
    other = await client.get("/v1/files", params={"tenant": "beta"}, headers=headers)
    assert other.status_code in (403, 422) or all(f["tenant"] == "acme" for f in other.json())
    tenant_key = {"Authorization": f"Bearer {key}"}
    refused = await client.post("/v1/admin/tenants/beta/rotate-key", json={}, headers=tenant_key)
    assert refused.status_code == 403  # a tenant cannot rotate another's (or any) key
    unknown = await client.post("/v1/admin/tenants/nobody/rotate-key", json={}, headers=OPERATOR)
    assert unknown.status_code == 404


def test_rotate_key_on_the_command_line(tmp_path: Path) -> None:
    """`tenant rotate-key ID --grace 0 --json`: a new key; the old one no longer works."""
    env = {"PATH": "/usr/bin:/bin", "MYSIMBDP_HOME": str(tmp_path / "home")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mysimbdp", *args], env=env, capture_output=True, text=True)

    first = orjson.loads(cli("tenant", "add", "acme", "--json").stdout)["api_key"]
    out = cli("tenant", "rotate-key", "acme", "--grace", "0", "--json")
    assert out.returncode == 0, out.stderr
    answer = orjson.loads(out.stdout)
    assert answer["id"] == "acme" and answer["api_key"].startswith("msb_") and answer["api_key"] != first
    from mysimbdp.services.tenants import hash_key
    from mysimbdp.settings import Settings

    with Platform(Settings(home=tmp_path / "home"), {}) as platform:
        assert platform.meta.tenant_for_key(hash_key(first)) is None
        assert platform.meta.tenant_for_key(hash_key(answer["api_key"])) == "acme"
    assert cli("tenant", "rotate-key", "nobody").returncode == 1
