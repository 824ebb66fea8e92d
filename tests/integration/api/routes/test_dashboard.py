"""The dashboard's pages over HTTP (the browser test is tests/e2e/test_dashboard.py): who
gets which view, the login form and its cookie, and what the panel shows: a tenant's
rejected file and its webhook delivery, and nothing of another tenant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mysimbdp.adapters.broker import Broker
from mysimbdp.adapters.metastore.chunks import ChunkCounts, ChunkStatus
from mysimbdp.api import create_app
from mysimbdp.api.deps import KEY_COOKIE
from mysimbdp.domain.states import FileStatus
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.ingest import ingest_one
from mysimbdp.services.tenants import NewTenant, add_tenant
from mysimbdp.settings import Settings

OPERATOR_KEY = "op-secret"
HOOKED = """
formats: [csv]
notifications:
  webhooks:
    - {url: "http://127.0.0.1:9/hook", secret: "0123456789abcdef0123"}
"""


@pytest.fixture
def broker_url(embedded_nats: str) -> str:
    return embedded_nats


def _platform(home: Path, admin_key: str) -> Iterator[Platform]:
    with Platform(Settings(home=home, admin_key=admin_key), {}) as started:
        yield started


@pytest.fixture
def open_platform(home: Path) -> Iterator[Platform]:
    """No operator key: the operator's view is open to loopback clients."""
    yield from _platform(home, "")


@pytest.fixture
def keyed_platform(home: Path) -> Iterator[Platform]:
    yield from _platform(home, OPERATOR_KEY)


def _client(platform: Platform, broker: Broker, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(platform, broker), client=(peer, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://test", follow_redirects=False)


async def _tenants(platform: Platform, tmp_path: Path) -> tuple[NewTenant, NewTenant]:
    profile = tmp_path / "hooked" / "profile.yaml"
    profile.parent.mkdir()
    profile.write_text(HOOKED)
    hooked = add_tenant(platform, "hooked", profile)
    plain = add_tenant(platform, "plain", None)
    bad = tmp_path / "not-csv.jsonl"
    bad.write_text('{"a": 1}\n')
    await ingest_one(platform, "hooked", bad, wait=True)  # rejected: format; a file_rejected delivery is queued
    good = tmp_path / "plain.csv"
    good.write_text("a,b\n1,2\n")
    await ingest_one(platform, "plain", good, wait=True)
    return hooked, plain


async def test_loopback_sees_the_operators_view_and_a_remote_peer_must_sign_in(
    open_platform: Platform, broker: Broker, tmp_path: Path
) -> None:
    await _tenants(open_platform, tmp_path)
    async with _client(open_platform, broker) as local:
        page = await local.get("/")
        assert page.status_code == 200 and "all tenants" in page.text
        assert page.text.count("<svg") == 4 and "/static/dashboard.js" in page.text
        assert 'data-tenant="hooked"' in page.text and 'data-tenant="plain"' in page.text
        overall = page.text.split('id="overall"', 1)[1].split("</tr>", 1)[0]  # the operator's totals row
        assert "all 2 tenants" in overall and '<td data-field="files_ingested">1</td>' in overall
        assert '<td data-field="files_rejected">1</td>' in overall
        assert (await local.get("/static/dashboard.js")).status_code == 200
    async with _client(open_platform, broker, peer="203.0.113.7") as remote:
        assert (await remote.get("/")).headers["location"] == "/login"
        assert (await remote.get("/dashboard/panel")).status_code == 401


async def test_with_an_operator_key_even_loopback_signs_in(keyed_platform: Platform, broker: Broker) -> None:
    async with _client(keyed_platform, broker) as local:
        assert (await local.get("/")).status_code == 303
        refused = await local.post(
            "/login", content=b"key=wrong", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert refused.status_code == 401 and "neither a tenant" in refused.text
        signed = await local.post(
            "/login",
            content=f"key={OPERATOR_KEY}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert signed.status_code == 303 and KEY_COOKIE in signed.cookies
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert "all tenants" in (await local.get("/")).text  # the cookie is kept by the client
        assert (await local.get("/logout")).status_code == 303


async def test_a_tenants_panel_shows_its_failures_and_deliveries_and_nothing_else(
    keyed_platform: Platform, broker: Broker, tmp_path: Path
) -> None:
    hooked, plain = await _tenants(keyed_platform, tmp_path)
    async with _client(keyed_platform, broker) as client:
        client.cookies.set(KEY_COOKIE, hooked.api_key)
        panel = (await client.get("/dashboard/panel?since=15m")).text
        assert 'data-tenant="hooked"' in panel and "not-csv.jsonl" in panel and "rule format" in panel
        assert 'data-status="pending"' in panel and "file_rejected" in panel and "http://127.0.0.1:9/hook" in panel
        assert "plain" not in panel
        assert 'id="overall"' not in panel  # a tenant's view has no platform totals
        asked = (await client.get("/dashboard/panel?tenant=plain")).text  # another tenant: still only its own
        assert "plain" not in asked and 'data-tenant="hooked"' in asked
        client.cookies.set(KEY_COOKIE, plain.api_key)
        other = (await client.get("/")).text
        assert "tenant plain" in other and "hooked" not in other


async def test_a_file_being_ingested_in_chunks_shows_its_chunk_progress(
    open_platform: Platform, broker: Broker, tmp_path: Path
) -> None:
    """While a big file's chunks run, the panel lists it with chunks done / running / waiting
    and the rows of its finished chunks; the section is absent when no file is chunked."""
    await _tenants(open_platform, tmp_path)
    async with _client(open_platform, broker) as local:
        assert 'id="big-files"' not in (await local.get("/dashboard/panel")).text
        (record,) = open_platform.meta.list_files(tenant="plain")
        open_platform.meta.set_status(record.id, FileStatus.RUNNING, {"test": "a big file"})
        open_platform.meta.chunks.plan("plain", record.id, [(0, 10, 1), (10, 20, 5), (20, 30, 9)])
        first = open_platform.meta.chunks.claim(record.id, 0, "w1", 30, "r1")
        assert first is not None
        open_platform.meta.chunks.finish(first, ChunkStatus.DONE, ChunkCounts(rows_written=4))
        open_platform.meta.chunks.claim(record.id, 1, "w1", 30, "r2")
        panel = (await local.get("/dashboard/panel")).text
    table = panel.split('id="big-files"', 1)[1].split("</table>", 1)[0]
    row = table.split(f'data-file="{record.id}"', 1)[1].split("</tr>", 1)[0]
    cells = [cell.split(">", 1)[1].split("</td>")[0].strip() for cell in row.split("<td")[1:]]
    assert cells[1] == "plain.csv"
    assert cells[2].endswith("1 / 3")  # chunks done, after a <progress> bar
    assert cells[3:] == ["1", "1", "0", "4"]  # running, waiting, failed, rows


SANDBOXES = {  # (MYSIMBDP_SANDBOX, MYSIMBDP_SANDBOX_LANDLOCK_ABI): what the dashboard shows
    "confined": ("on", -1),
    "off": ("off", -1),
    "missing": ("on", 0),  # an old kernel: apps do not run
}


@pytest.mark.parametrize("case", list(SANDBOXES))
async def test_the_dashboard_shows_the_sandbox_and_warns_when_apps_are_not_confined(
    home: Path, broker: Broker, case: str
) -> None:
    """Confined: the mechanism and ABI in the header, no banner; MYSIMBDP_SANDBOX=off or no
    sandbox on the machine: a warning banner saying which, with the remedy."""
    mode, abi = SANDBOXES[case]
    with Platform(Settings(home=home, sandbox=mode, sandbox_landlock_abi=abi), {}) as platform:
        if abi < 0 and not platform.sandbox_status.available:
            pytest.skip(platform.sandbox_status.problem)
        async with _client(platform, broker) as local:
            page = (await local.get("/")).text
    header = page.split("<header>", 1)[1].split("</header>", 1)[0]
    banner = 'class="sandbox warning" id="sandbox" data-mechanism="none" role="alert"'
    if case == "confined":
        assert "tenant apps sandboxed: landlock+seccomp, Landlock ABI" in header and banner not in page
    else:
        assert banner in page and "sandboxed" not in header
        warning = (
            "tenant apps run UNCONFINED" if case == "off" else "tenant apps will not run; set MYSIMBDP_SANDBOX=off"
        )
        assert warning in page


@pytest.mark.parametrize("case", list(SANDBOXES))
async def test_the_operator_api_gives_the_sandbox_status(home: Path, broker: Broker, case: str) -> None:
    """GET /v1/admin/sandbox: the operator gets the status doctor shows; a tenant's key and
    no key are refused."""
    mode, abi = SANDBOXES[case]
    settings = Settings(home=home, sandbox=mode, sandbox_landlock_abi=abi, admin_key=OPERATOR_KEY)
    with Platform(settings, {}) as platform:
        if abi < 0 and not platform.sandbox_status.available:
            pytest.skip(platform.sandbox_status.problem)
        tenant = add_tenant(platform, "t1", None)
        async with _client(platform, broker) as local:
            answer = await local.get("/v1/admin/sandbox", headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
            as_tenant = await local.get("/v1/admin/sandbox", headers={"Authorization": f"Bearer {tenant.api_key}"})
            anonymous = await local.get("/v1/admin/sandbox")
        expected = {**platform.sandbox_status.as_dict(), "summary": platform.sandbox_status.summary()}
    assert answer.status_code == 200 and answer.json() == expected
    assert answer.json()["enforced"] is (case == "confined")
    assert as_tenant.status_code == 403 and anonymous.status_code == 401
