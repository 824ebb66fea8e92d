"""A multi-host PostgreSQL URL (``h1:5432,h2:5432`` with ``target_session_attrs=read-write``)
against the machine's real PostgreSQL: masked whole, handed to tenants with its host list, and
connections that die or turn read-only are transient, reconnected, and double no write.

The first host of each URL here is a loopback port nothing listens on: libpq moves on to the
next host, as it does past a dead primary (``tests/e2e/test_pg_failover.py`` kills a real one).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
import pytest

from mysimbdp.adapters.coredms import open_admin, open_store
from mysimbdp.adapters.coredms.pgadmin import connect_timeout, scoped_url
from mysimbdp.adapters.metastore.sql import SqlConnection
from mysimbdp.errors import StoreUnavailable
from mysimbdp.settings import mask_url
from tests.conftest import POSTGRES_URL, require_service

DEAD = "127.0.0.1:1"  # a host of the list that refuses connections


def multihost(url: str, *extra: str) -> str:
    """``url`` (one host) with a dead host in front and ``target_session_attrs=read-write``."""
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    query = "&".join(q for q in (parts.query, "target_session_attrs=read-write", *extra) if q)
    return urlunsplit(parts._replace(netloc=f"{user}@{DEAD},{host}", query=query))


def read_only(url: str) -> str:
    """``url`` whose sessions are read-only, as on a node demoted under an open session
    (added to its ``options``; without ``target_session_attrs``, which would refuse them)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    del query["target_session_attrs"]
    query["options"] = [" ".join([*query.get("options", []), "-cdefault_transaction_read_only=on"])]
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True, quote_via=quote)))


@pytest.fixture
def url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return multihost(POSTGRES_URL)


def test_mask_url_hides_the_password_and_keeps_every_host() -> None:
    """The password of a multi-host URL is masked; its hosts and parameters are shown."""
    url = "postgresql://admin:s3cr%40t@10.0.0.2:5432,10.0.0.3:5432/db?target_session_attrs=read-write"
    assert mask_url(url) == "postgresql://admin:***@10.0.0.2:5432,10.0.0.3:5432/db?target_session_attrs=read-write"
    assert mask_url("postgresql://admin@h1,h2/db?password=s3cret&sslmode=require") == (
        "postgresql://admin@h1,h2/db?password=***&sslmode=require"
    )


def test_scoped_url_keeps_the_host_list_and_target_session_attrs() -> None:
    """A tenant's URL names the same hosts and asks for the read-write one, with its own role."""
    admin = "postgresql://admin:pw@10.0.0.2:5432,10.0.0.3:5432/db?target_session_attrs=read-write&sslmode=prefer"
    scoped = urlsplit(scoped_url(admin, "mysimbdp_acme", "p/w"))
    assert scoped.netloc == "mysimbdp_acme:p%2Fw@10.0.0.2:5432,10.0.0.3:5432"
    assert parse_qs(scoped.query) == {
        "target_session_attrs": ["read-write"],
        "sslmode": ["prefer"],
        "options": ["-csearch_path=mysimbdp_acme"],
    }


def test_the_urls_connect_timeout_wins_over_the_default() -> None:
    """libpq spends ``connect_timeout`` on each host in turn: the operator's short one in the
    URL (for a primary that vanishes without refusing) is kept, not replaced by the store timeout."""
    assert (
        connect_timeout("postgresql://u@h1:5432,h2:5432/db?connect_timeout=3&target_session_attrs=read-write", 30) == 3
    )
    assert connect_timeout("postgresql://u@h1:5432,h2:5432/db?target_session_attrs=read-write", 30) == 30
    assert connect_timeout("postgresql://u@h1/db", 0.5) == 2


def test_a_tenant_provisioned_through_a_multihost_url_writes_through_it(url: str, pg_prefix: str) -> None:
    """Provisioning over the multi-host URL hands the tenant a URL with both hosts, and the
    tenant's store connects through it (past the dead first host) and writes."""
    admin = open_admin(url, pg_prefix=pg_prefix)
    try:
        tenant_url = admin.provision("acme")
        assert f"@{DEAD},127.0.0.1:5432/" in tenant_url
        assert parse_qs(urlsplit(tenant_url).query)["target_session_attrs"] == ["read-write"]
        store = open_store(tenant_url)
        try:
            assert store.write("things", [("k1", b'{"n":1}')], source="f1") == 1
            assert store.count("things") == 1
        finally:
            store.close()
    finally:
        admin.close()


@pytest.fixture
def tenant_url(url: str, pg_prefix: str) -> Iterator[str]:
    admin = open_admin(url, pg_prefix=pg_prefix)
    try:
        yield admin.provision("acme")
    finally:
        admin.close()


def _terminate(role: str) -> int:
    """Close every session of ``role`` from the server side (57P01, as a failover does)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s", (role,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_batch_written_again_after_its_commit_doubles_nothing(tenant_url: str, pg_prefix: str) -> None:
    """A write whose commit was lost to the client is retried: the retry (on a new connection,
    after the old one was terminated) stores no key twice, and reports nothing new written."""
    rows = [(f"k{n}", orjson.dumps({"n": n})) for n in range(1000)]
    store = open_store(tenant_url)
    try:
        assert store.write("things", rows, source="f1") == 1000  # committed; say the client never heard
        assert _terminate(f"{pg_prefix}_acme") == 1
        with pytest.raises(StoreUnavailable, match="PostgreSQL unavailable"):
            store.count("things")  # the lost connection: transient
        assert store.write("things", [*rows[500:], ("k1000", b'{"n":1000}')], source="f1") == 1  # reconnected
        assert store.count("things") == 1001
    finally:
        store.close()


def test_a_read_only_session_is_transient_for_coredms(tenant_url: str) -> None:
    """A session on a node that went read-only (a demoted primary) is unavailable, not bad
    data: the store's first statement (its COPY staging table) is refused as transient."""
    with pytest.raises(StoreUnavailable, match="read-only transaction"):
        open_store(read_only(tenant_url)).close()


@pytest.fixture
def meta_url(url: str, pg_prefix: str) -> str:
    schema = f"{pg_prefix}_meta"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".t (k text PRIMARY KEY, v int)')
    return f"{url}&options=-csearch_path%3D{schema}"


def _backend_pid(db: SqlConnection) -> int:
    row = db.one("SELECT pg_backend_pid()")
    assert row is not None
    return int(row[0])


def test_the_meta_store_reconnects_and_runs_the_statement_again(meta_url: str) -> None:
    """The meta store's connection is terminated by the server: the next statement and the
    next transaction reconnect through the multi-host URL and succeed, the caller sees nothing."""
    db = SqlConnection(meta_url)
    try:
        db.execute("INSERT INTO t VALUES (?, ?)", ("a", 1))
        first = _backend_pid(db)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (first,))
        assert db.execute("UPDATE t SET v = ? WHERE k = ?", (2, "a")) == 1
        second = _backend_pid(db)
        assert second != first
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (second,))
        with db.transaction():  # its BEGIN finds the connection dead: reconnected, nothing ran twice
            db.execute("INSERT INTO t VALUES (?, ?)", ("b", 1))
        assert db.query("SELECT k, v FROM t ORDER BY k") == [("a", 2), ("b", 1)]
    finally:
        db.close()


def test_the_meta_store_gives_up_on_a_read_only_node_after_its_reconnect_window(meta_url: str) -> None:
    """Every session read-only (no primary): StoreUnavailable once ``reconnect_s`` has passed."""
    db = SqlConnection(read_only(meta_url), reconnect_s=0.5)
    try:
        assert db.query("SELECT 1") == [(1,)]
        with pytest.raises(StoreUnavailable, match="in vain"):
            db.execute("INSERT INTO t VALUES (?, ?)", ("c", 1))
    finally:
        db.close()


def test_a_first_connection_that_fails_is_reported_at_once() -> None:
    """A URL whose hosts all refuse is not waited for: the operator's mistake shows at once."""
    db = SqlConnection(f"postgresql://postgres@{DEAD},127.0.0.1:2/x?target_session_attrs=read-write")
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        db.query("SELECT 1")
