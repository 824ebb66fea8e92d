"""Platform secrets at rest: after a tenant is added (with a webhook) and the embedded broker
runs, no password or webhook secret is written in plain anywhere under the home or in the meta
store's tenant rows; the files that hold them sealed are 0600; nats.conf holds bcrypt hashes
that the real nats-server accepts; the platform still opens every one (the tenant's broker
URL connects, its coredms URL is its own, the notifier gets the webhook secret).

Over SQLite and PostgreSQL, and over the embedded NATS and RabbitMQ for the broker users."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nats
import pytest

from mysimbdp.runtime.platform import Platform
from mysimbdp.runtime.up import databroker
from mysimbdp.services.tenants import add_tenant, broker_access
from mysimbdp.settings import Settings
from tests.conftest import broker_url_for

WEBHOOK_SECRET = "whsec-0123456789-abcdef"
PROFILE = f"""
notifications:
  webhooks:
    - url: https://hooks.example.com/acme
      secret: "{WEBHOOK_SECRET}"
"""


@pytest.fixture(params=["nats-embedded", "rabbitmq"])
def platform(
    request: pytest.FixtureRequest, home: Path, meta_url: str, coredms_url: str, pg_prefix: str
) -> Iterator[Platform]:
    broker_url = "" if request.param == "nats-embedded" else broker_url_for("rabbitmq", request)
    settings = Settings(
        home=home, meta_url=meta_url, coredms_url=coredms_url, pg_prefix=pg_prefix, broker_url=broker_url
    )
    with Platform(settings, os.environ) as started:
        yield started


def _everything_stored(platform: Platform) -> list[tuple[str, bytes]]:
    """Every file under the home, and the meta store's tenant rows as stored."""
    stored = [(str(p), p.read_bytes()) for p in platform.home.root.rglob("*") if p.is_file() and not p.is_socket()]
    raw = type(platform.meta)(platform.settings.meta_url)  # no secret box: the rows as they are
    raw.start()
    try:
        stored += [(f"meta tenants row {t.id}", repr(t).encode()) for t in raw.list_tenants()]
    finally:
        raw.close()
    return stored


def _password(url: str) -> str:
    return unquote(urlsplit(url).password or "")


async def test_no_secret_is_stored_in_plain_and_each_still_opens(tmp_path: Path, platform: Platform) -> None:
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "profile.yaml").write_text(PROFILE)
    add_tenant(platform, "acme", tmp_path / "acme" / "profile.yaml")
    async with databroker(platform) as access:
        tenant_url = access.tenant_url("acme")
        secrets = {"the tenant's broker password": _password(tenant_url), "the webhook secret": WEBHOOK_SECRET}
        if not platform.settings.broker_url:
            secrets["the platform's broker password"] = _password(access.url)
            client = await nats.connect(tenant_url.split("?")[0], connect_timeout=5, allow_reconnect=False)
            await client.close()  # nats.conf holds only a bcrypt hash, and the server accepts the password
            config = (platform.home.root / "broker" / "nats.conf").read_text()
            assert config.count('password: "$2a$') == 2, config
            assert platform.running_broker_url() == access.url  # the sealed url file opens
        record, profile = platform.tenant("acme")
        if role_password := _password(record.coredms_url):
            secrets["the tenant's PostgreSQL role password"] = role_password
        assert profile.notifications.webhooks[0].secret == WEBHOOK_SECRET
        assert broker_access(platform, "acme")["url"] == tenant_url
        stored = _everything_stored(platform)
    on_postgres = platform.settings.coredms_url.startswith("postgresql")
    assert ("the tenant's PostgreSQL role password" in secrets) == on_postgres  # SQLite: no password at all
    for what, secret in secrets.items():
        assert secret and len(secret) >= 16, what
        leaks = [where for where, content in stored if secret.encode() in content]
        assert leaks == [], f"{what} in plain in {leaks}"
    for name in ("users.json", "rabbitmq-users.json", "nats.conf"):
        for path in platform.home.root.rglob(name):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
