"""coredms on PostgreSQL, the platform side: connections, errors as coredms errors, and the
admin that creates and drops tenant schemas and roles (``coredms.postgres`` holds the store).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from mysimbdp.adapters.coredms.base import DocumentInvalid, namespace
from mysimbdp.errors import StoreError, StoreUnavailable, TenantError
from mysimbdp.settings import mask_url

__all__ = ["LOST", "PostgresAdmin", "connect", "connect_timeout", "pg_errors", "scoped_url"]


# A connection that cannot write any more, though the data may be fine: lost (the server died,
# a link went down), shut down by an admin or a failover (57P01-57P03: OperationalError), or
# left on a node demoted to standby (25006, read-only transaction). Transient: reconnect (the
# multi-host URL's ``target_session_attrs=read-write`` finds the new primary) and retry.
LOST = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction)


@contextmanager
def pg_errors(where: str, dataset: str | None = None, *, lost: Callable[[], None] | None = None) -> Iterator[None]:
    """psycopg's errors as coredms errors; ``lost`` is called before a :data:`LOST` one is
    raised as :class:`StoreUnavailable` (to drop the connection, so the next use reconnects)."""
    what = f"{where}: dataset {dataset!r}" if dataset else where
    try:
        yield
    except LOST as exc:
        if lost is not None:
            lost()
        raise StoreUnavailable(f"{what}: PostgreSQL unavailable: {exc}; retry later") from exc
    except psycopg.DataError as exc:
        raise DocumentInvalid(f"{what}: PostgreSQL refused a document: {exc}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"{what}: {exc}") from exc


def connect_timeout(url: str, default_s: float) -> int:
    """The URL's own ``connect_timeout`` if it has one, else ``default_s`` (at least 2 s).
    libpq spends it on each host of a multi-host URL in turn: an operator whose primary may
    vanish without a refusal (a cut link) sets a short one in the URL, with keepalives."""
    given = conninfo_to_dict(url).get("connect_timeout")
    return int(given) if isinstance(given, str) and given.isdigit() else max(2, round(default_s))


def connect(url: str, where: str, timeout_s: float) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=connect_timeout(url, timeout_s))
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"{where}: cannot connect to {mask_url(url)}: {exc}; retry later") from exc


def scoped_url(admin_url: str, role: str, password: str) -> str:
    """``admin_url`` with the tenant's credentials and its schema as the search path. Its
    hosts are kept as written, a multi-host list (``h1:5432,h2:5432``) too, and so are its
    other parameters (``target_session_attrs``, ``sslmode``...): a tenant app fails over as
    the platform does."""
    parts = urlsplit(admin_url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{host}"
    params = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("options", "user", "password")]
    params.append(("options", f"-csearch_path={role}"))
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(params, quote_via=quote), ""))


class PostgresAdmin:
    """Creates and drops tenant schemas and roles. Connects on first use."""

    def __init__(self, url: str, *, pg_prefix: str = "mysimbdp", connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.pg_prefix = pg_prefix
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, "coredms admin", self.connect_timeout_s)
        return self._conn

    def _name(self, tenant: str) -> str:
        name = namespace(tenant, self.pg_prefix)
        if len(name.encode()) > 63:
            raise TenantError(f"tenant {tenant!r}: schema name {name!r} is longer than PostgreSQL's 63 bytes")
        return name

    def provision(self, tenant: str) -> str:
        name = self._name(tenant)
        ident = sql.Identifier(name)
        password = secrets.token_urlsafe(24)
        with pg_errors(f"coredms admin: tenant {tenant!r}", lost=self.close):
            conn = self._db()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"mysimbdp.tenant.{name}",))
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
                verb = sql.SQL("ALTER" if exists else "CREATE")
                conn.execute(
                    sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}").format(
                        verb, ident, sql.Literal(password)
                    )
                )
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(ident, ident))
                conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(ident, ident))
                conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(ident))
                # The tenant needs CONNECT and TEMPORARY (the COPY staging table); granted to
                # the role itself so that an operator may revoke them from PUBLIC.
                database = conn.execute("SELECT current_database()").fetchone()
                assert database is not None
                conn.execute(
                    sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                        sql.Identifier(str(database[0])), ident
                    )
                )
                # PostgreSQL < 15 lets every role create objects in public; close that door.
                conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
                conn.execute(sql.SQL("ALTER ROLE {} SET search_path TO {}").format(ident, ident))
        return scoped_url(self.url, name, password)

    def deprovision(self, tenant: str) -> None:
        name = self._name(tenant)
        ident = sql.Identifier(name)
        with pg_errors(f"coredms admin: tenant {tenant!r}", lost=self.close):
            conn = self._db()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"mysimbdp.tenant.{name}",))
                try:
                    with conn.transaction():
                        conn.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE usename = %s AND pid <> pg_backend_pid()",
                            (name,),
                        )
                except psycopg.errors.InsufficientPrivilege:
                    pass  # an admin without pg_signal_backend: the drops below wait for the sessions
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                    conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(ident))
                    conn.execute(sql.SQL("DROP ROLE {}").format(ident))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
