"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright; no
browser is downloaded): the operator's page loads without console errors and shows both
example tenants' numbers as the meta store has them, updates when a new file lands without
reloading, and a tenant signed in with its key sees only itself. A screenshot is kept in
``test-artifacts/`` (``MYSIMBDP_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mysimbdp.adapters.broker.nats import free_port
from tests.conftest import IN_CI
from tests.e2e.conftest import Cli
from tests.helpers import ROOT, until

EXAMPLES = ROOT / "examples" / "tenants"
ARTIFACTS = Path(os.environ.get("MYSIMBDP_TEST_ARTIFACTS", ROOT / "test-artifacts"))
FIELDS = ("files_ingested", "files_rejected", "rows", "quarantined")


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        reason = "Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"
        if IN_CI:
            pytest.fail(f"{reason}; under CI=true the browser tests must run")
        pytest.skip(reason)
    return path


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def platform_up(tmp_path: Path) -> Iterator[tuple[Cli, str, dict[str, str]]]:
    """``mysimbdp up`` on a fresh home with the two example tenants and their sample files ingested."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    port = free_port()
    env.update(
        MYSIMBDP_HOME=str(home),
        MYSIMBDP_API_PORT=str(port),
        MYSIMBDP_LOG_FORMAT="json",
        MYSIMBDP_POLL_INTERVAL_S="0.2",
        MYSIMBDP_SETTLE_S="0.3",
    )
    cli = Cli(home, env)
    keys = {
        t: cli.json("tenant", "add", t, "--profile", str(EXAMPLES / t / "profile.yaml"), "--json")["api_key"]
        for t in ("flights", "sensors")
    }
    up = cli.popen("up")
    try:
        for tenant in keys:
            for sample in sorted((EXAMPLES / tenant / "data").glob("*.*")):
                shutil.copy(sample, home / "inbox" / tenant / sample.name)
        until(lambda: _all_final(cli, 9), timeout_s=120, what="the 9 sample files to be final")
        yield cli, f"http://127.0.0.1:{port}", keys
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)


def _all_final(cli: Cli, want: int) -> bool:
    files = cli.json("files", "--json")
    return len(files) == want and all(f["status"] in ("ingested", "rejected", "failed", "duplicate") for f in files)


def _expected(cli: Cli) -> dict[str, tuple[int, ...]]:
    """Each tenant's numbers as the meta store has them (through ``report --json``)."""
    out = {}
    for t in cli.json("report", "--json")["tenants"]:
        by = t["files_by_status"]
        rejected = by.get("rejected", 0) + by.get("duplicate", 0)
        out[t["tenant"]] = (by.get("ingested", 0), rejected, t["rows_written"], t["quarantined_rows"])
    return out


def _shown(page: Any) -> dict[str, tuple[int, ...]]:
    rows = page.locator("#tenants tbody tr[data-tenant]")
    out = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        out[row.get_attribute("data-tenant")] = tuple(
            int(row.locator(f'td[data-field="{f}"]').inner_text()) for f in FIELDS
        )
    return out


def test_the_operator_sees_every_tenant_live_and_a_tenant_only_itself(
    browser: Any, platform_up: tuple[Cli, str, dict[str, str]]
) -> None:
    cli, url, keys = platform_up
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    assert page.locator("h1").inner_text().endswith("all tenants")  # loopback, no operator key: the operator
    expected = _expected(cli)
    assert set(expected) == {"flights", "sensors"}
    assert _shown(page) == expected
    assert page.locator("svg.chart").count() == 4
    assert "readings_legacy.csv" in page.locator("#failures").inner_text()

    page.evaluate("window.notReloaded = true")
    before = expected["sensors"]
    fresh = cli.home / "inbox" / "sensors" / "readings_live.jsonl"
    lines = (EXAMPLES / "sensors" / "data" / "readings_001.jsonl").read_text().splitlines()[:25]
    fresh.write_text("\n".join(lines) + "\n")
    until(lambda: _all_final(cli, 10), timeout_s=60, what="the new file to be final")
    after = _expected(cli)["sensors"]
    assert after[0] == before[0] + 1
    page.wait_for_function(  # the page refreshes itself within a few seconds
        "want => document.querySelector('tr[data-tenant=sensors] td[data-field=files_ingested]').innerText == want",
        arg=str(after[0]),
        timeout=15_000,
    )
    assert page.evaluate("window.notReloaded") is True
    assert _shown(page)["sensors"] == after

    sample = (EXAMPLES / "sensors" / "data" / "stream" / "readings.ndjson").read_bytes()
    headers = {"Authorization": f"Bearer {keys['sensors']}", "Content-Type": "application/x-ndjson"}
    assert httpx.post(f"{url}/v1/streams/readings/messages", content=sample, headers=headers).status_code == 202
    page.wait_for_function(  # the stream app's reports reach the page: records stored from the stream
        "() => Number(document.querySelector('tr[data-tenant=sensors] td[data-field=stream_records]').innerText) > 0",
        timeout=30_000,
    )
    assert page.locator('#streams tr[data-stream="readings"]').count() == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    tenant = browser.new_context().new_page()
    tenant.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tenant.goto(url + "/login")
    tenant.fill("#key", keys["flights"])
    tenant.click("button[type=submit]")
    tenant.wait_for_url(url + "/")
    assert tenant.locator("h1").inner_text().endswith("tenant flights")
    assert set(_shown(tenant)) == {"flights"}
    assert "sensors" not in tenant.content()  # nothing of the other tenant anywhere on the page
    tenant.goto(url + "/?tenant=sensors")  # asking for another tenant changes nothing
    assert set(_shown(tenant)) == {"flights"} and "sensors" not in tenant.locator("#panel").inner_text()

    stranger = browser.new_context().new_page()
    stranger.goto(url + "/login")
    stranger.fill("#key", "msb_not-a-key")
    stranger.click("button[type=submit]")
    assert "neither a tenant's API key nor the operator key" in stranger.locator(".error").inner_text()
    assert errors == []
