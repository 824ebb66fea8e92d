"""API key rotation, on the meta store of each backend and through the real API: the old key
works within its grace and is refused after it, the new key works at once and reaches only
its own tenant; by the CLI and by the operator API."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import pytest

from mysimbdp.adapters.broker import Broker
from mysimbdp.api import create_app
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.tenants import add_tenant, rotate_key
from tests import clifork
from tests.conftest import OPERATOR_KEY

OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


@pytest.fixture
def broker_url(embedded_nats: str) -> str:
    return embedded_nats


class Clock:
    """The API's monotonic clock: the real one, which a test may move on (``clock.now += s``)
    to outlive the key cache (5 s). It must keep running between requests: a clock that only
    moved by the test's sleep let a key cached under load outlive its grace (a flake)."""

    def __init__(self) -> None:
        self.offset = 0.0

    @property
    def now(self) -> float:
        return time.monotonic() + self.offset

    @now.setter
    def now(self, value: float) -> None:
        self.offset = value - time.monotonic()

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


async def test_rotation_on_the_operator_api_ends_the_old_key_after_its_grace(
    client: httpx.AsyncClient, operator_platform: Platform, clock: Clock
) -> None:
    """The API that rotates forgets the tenant's cached keys: the old key, cached just before
    for 5 s, is refused once its 1 s grace is over (the cache clock moved on by the wait only)."""
    first = add_tenant(operator_platform, "acme", None).api_key
    assert (await _files(client, first)).status_code == 200  # cached for 5 s of the API's clock
    answer = await client.post("/v1/admin/tenants/acme/rotate-key", json={"grace_s": 1}, headers=OPERATOR)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"tenant", "api_key", "old_keys_expire_at"} and body["api_key"] != first
    assert (await _files(client, first)).status_code == 200  # within the grace
    assert (await _files(client, body["api_key"])).status_code == 200
    wait_s = max(0.0, body["old_keys_expire_at"] - time.time()) + 0.1
    time.sleep(wait_s)
    clock.now += wait_s
    refused = await _files(client, first)
    assert refused.status_code == 401 and "unknown key" in refused.text
    assert (await _files(client, body["api_key"])).status_code == 200
    too_long = await client.post("/v1/admin/tenants/acme/rotate-key", json={"grace_s": 31 * 86400}, headers=OPERATOR)
    assert too_long.status_code == 422


def test_a_meta_store_made_before_rotation_gets_its_table_at_start(operator_platform: Platform) -> None:
    """No migration step: the expiry table is created at the next start (``IF NOT EXISTS``)
    and the keys already there keep working, without an end."""
    from mysimbdp.services.tenants import hash_key
    from mysimbdp.settings import Settings

    first = add_tenant(operator_platform, "acme", None).api_key
    settings: Settings = operator_platform.settings
    operator_platform.meta._db.execute("DROP TABLE api_key_expiry")  # as a store made before
    operator_platform.close()
    with Platform(settings, {}) as again:
        assert again.meta.tenant_for_key(hash_key(first)) == "acme"
        rotated = rotate_key(again, "acme", grace_s=0)
        assert again.meta.tenant_for_key(hash_key(first)) is None
        assert again.meta.tenant_for_key(hash_key(rotated.api_key)) == "acme"


@pytest.fixture
def cli_env(tmp_path: Path, meta_url: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "MYSIMBDP_HOME": str(tmp_path / "home"), "MYSIMBDP_META_URL": meta_url}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return clifork.run(args, env=env)


def _tenant_of(env: dict[str, str], key: str) -> str | None:
    from mysimbdp.services.tenants import hash_key
    from mysimbdp.settings import Settings

    with Platform(Settings(home=Path(env["MYSIMBDP_HOME"]), meta_url=env["MYSIMBDP_META_URL"]), {}) as platform:
        return platform.meta.tenant_for_key(hash_key(key))


def test_rotate_key_on_the_command_line(cli_env: dict[str, str]) -> None:
    """`tenant rotate-key ID --grace 3s --json`: a new key at once; the old one until the
    grace ends, then no longer; `--grace 0` ends the old keys at once."""
    first = orjson.loads(_cli(cli_env, "tenant", "add", "acme", "--json").stdout)["api_key"]
    _cli(cli_env, "tenant", "add", "beta")
    out = _cli(cli_env, "tenant", "rotate-key", "acme", "--grace", "3s", "--json")
    assert out.returncode == 0, out.stderr
    answer = orjson.loads(out.stdout)
    assert answer["id"] == "acme" and answer["grace_s"] == 3.0 and answer["api_key"].startswith("msb_")
    assert answer["api_key"] != first and answer["old_keys_expire_at"].endswith("+00:00")
    # the grace is long enough that the CLI's own exit under load does not eat it (1 s did once)
    assert _tenant_of(cli_env, first) == "acme"  # within the grace
    assert _tenant_of(cli_env, answer["api_key"]) == "acme"  # never another tenant
    expires = datetime.fromisoformat(answer["old_keys_expire_at"]).timestamp()
    time.sleep(max(0.0, expires - time.time()) + 1.2)  # the time is shown to the second
    assert _tenant_of(cli_env, first) is None
    assert _tenant_of(cli_env, answer["api_key"]) == "acme"

    text = _cli(cli_env, "tenant", "rotate-key", "acme", "--grace", "0")
    assert text.returncode == 0, text.stderr
    newest = text.stdout.split("(shown once): ")[1].split()[0]
    assert "its previous keys stop working at " in text.stdout
    assert _tenant_of(cli_env, answer["api_key"]) is None and _tenant_of(cli_env, newest) == "acme"


def test_rotate_key_refuses_a_bad_grace_and_an_unknown_tenant(cli_env: dict[str, str]) -> None:
    _cli(cli_env, "tenant", "add", "acme")
    bad = _cli(cli_env, "tenant", "rotate-key", "acme", "--grace", "5y")
    assert bad.returncode == 2 and "--grace" in bad.stderr and "'5y' is not valid" in bad.stderr
    long = _cli(cli_env, "tenant", "rotate-key", "acme", "--grace", "31d")
    assert long.returncode == 2 and "over 30 days" in long.stderr
    unknown = _cli(cli_env, "tenant", "rotate-key", "nobody")
    assert unknown.returncode == 1 and "tenant 'nobody' does not exist" in unknown.stderr
