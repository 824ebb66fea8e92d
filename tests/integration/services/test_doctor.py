"""``doctor``'s checks one by one against real PostgreSQL, a real NATS server and real sockets:
each finds what is wrong, says what to do, gives up within its timeout, and passes once the
same thing is right (the CLI end to end is tests/e2e/test_doctor.py)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from mysimbdp.adapters.broker.nats import free_port
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.doctor import CONNECT_TIMEOUT_S, Check, run_checks
from mysimbdp.settings import Settings


def _check(name: str, home: Path, **settings: Any) -> Check:
    platform = Platform(Settings(home=home, **settings), {})  # not started: the meta check opens it
    try:
        return {c.name: c for c in run_checks(platform)}[name]
    finally:
        platform.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


def _port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def test_coredms_needs_an_admin_role_that_can_provision_tenants(
    home: Path, postgres_admin_url: str, pg_prefix: str
) -> None:
    """A role without CREATEROLE connects but could not add a tenant: fail, naming the
    privilege; the admin URL of the same database passes."""
    weak = f"{pg_prefix}_weak"
    database = urlsplit(postgres_admin_url).path.lstrip("/")
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{weak}" LOGIN')
        conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{weak}"')
    parts = urlsplit(postgres_admin_url)
    weak_url = urlunsplit(parts._replace(netloc=f"{weak}@{parts.hostname}:{parts.port or 5432}"))
    refused = _check("coredms", home, coredms_url=weak_url)
    assert refused.state == "fail", refused
    assert f"connected as {weak}" in refused.detail and "CREATEROLE" in refused.detail
    assert "MYSIMBDP_COREDMS_URL" in refused.detail
    assert refused.data["can_create_roles"] is False
    passed = _check("coredms", home, coredms_url=postgres_admin_url)
    assert passed.state == "ok" and "can create tenant roles and schemas" in passed.detail, passed


def test_a_silent_coredms_host_fails_within_the_timeout(home: Path, listener: socket.socket) -> None:
    """A host that takes the connection and never answers costs about CONNECT_TIMEOUT_S, not minutes."""
    started = time.monotonic()
    check = _check("coredms", home, coredms_url=f"postgresql://postgres@127.0.0.1:{_port(listener)}/x")
    assert check.state == "fail" and "cannot connect" in check.detail, check
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 3


def test_an_unreachable_postgresql_meta_store_fails_naming_the_variable(home: Path) -> None:
    closed = free_port()
    check = _check("meta store", home, meta_url=f"postgresql://postgres:pw@127.0.0.1:{closed}/x")
    assert check.state == "fail", check
    assert f"127.0.0.1:{closed} does not answer" in check.detail and "MYSIMBDP_META_URL" in check.detail
    assert "pw" not in check.detail  # the password is masked


def test_the_meta_store_opens_and_names_its_backend(home: Path, meta_url: str) -> None:
    check = _check("meta store", home, meta_url=meta_url)
    assert check.state == "ok" and check.data["tenants"] == 0, check
    assert check.data["backend"] == ("sqlite" if meta_url.startswith("sqlite") else "postgresql")


def test_a_configured_broker_is_reached_by_tcp(home: Path, embedded_nats: str) -> None:
    """A NATS server answering: ok; one of two cluster hosts down: a warning naming it; none: fail."""
    assert _check("broker", home, broker_url=embedded_nats).state == "ok"
    closed = free_port()
    netloc = urlsplit(embedded_nats).netloc
    half = _check("broker", home, broker_url=f"nats://{netloc},127.0.0.1:{closed}")
    assert half.state == "warn" and f"1 of 2 hosts do not answer: 127.0.0.1:{closed}" in half.detail, half
    down = _check("broker", home, broker_url=f"amqp://guest:secret@127.0.0.1:{closed}/")
    assert down.state == "fail" and "MYSIMBDP_BROKER_URL" in down.detail and "secret" not in down.detail, down


def test_the_embedded_broker_and_a_stale_running_url(home: Path, embedded_nats: str) -> None:
    """No platform running: the binary is named; HOME/broker/url of a running broker: it
    answers; the same file left behind by a dead platform: a warning."""
    idle = _check("broker", home)
    assert idle.state == "ok" and "nats-server" in idle.detail and "no platform running" in idle.detail, idle
    (home / "broker").mkdir()
    (home / "broker" / "url").write_text(embedded_nats.replace("nats://", "nats://platform:pw@") + "\n")
    running = _check("broker", home)
    assert running.state == "ok" and "the running platform's broker" in running.detail, running
    assert "pw@" not in running.detail
    (home / "broker" / "url").write_text(f"nats://127.0.0.1:{free_port()}\n")
    stale = _check("broker", home)
    assert stale.state == "warn" and "does not answer" in stale.detail, stale


def test_the_api_port_free_or_taken_by_another_program(home: Path, listener: socket.socket) -> None:
    """A port nobody holds is free; one held by a program that is not the platform fails
    (`up` could not listen there) and names MYSIMBDP_API_PORT."""
    free = _check("api", home, api_port=free_port())
    assert free.state == "ok" and "is free" in free.detail, free
    taken = _check("api", home, api_port=_port(listener))
    assert taken.state == "fail" and "taken by another program" in taken.detail, taken
    assert "MYSIMBDP_API_PORT" in taken.detail and taken.data["in_use"] is True


def test_sqlite_coredms_where_nothing_can_be_written(home: Path, tmp_path: Path) -> None:
    """Under a regular file (and, for a user other than root, in a read-only directory) the
    check fails saying where; in a writable directory it passes."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    under_file = _check("coredms", home, coredms_url=f"sqlite:///{blocker / 'coredms'}")
    assert under_file.state == "fail" and f"cannot write in {blocker}" in under_file.detail, under_file
    assert "MYSIMBDP_COREDMS_URL" in under_file.detail
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        read_only = _check("coredms", home, coredms_url=f"sqlite:///{locked / 'coredms'}")
    finally:
        locked.chmod(0o700)
    if os.geteuid() != 0:  # root writes anyway
        assert read_only.state == "fail" and f"cannot write in {locked}" in read_only.detail, read_only
    writable = _check("coredms", home, coredms_url=f"sqlite:///{locked / 'coredms'}")
    assert writable.state == "ok" and "to be created under" in writable.detail, writable
