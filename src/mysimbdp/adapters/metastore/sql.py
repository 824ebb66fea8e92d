"""A thin SQL connection over sqlite3 or psycopg, so the meta store is written once.

SQL is written with ``?`` placeholders; for PostgreSQL they become ``%s``. Connection
failures become :class:`StoreUnavailable` (transient), other failures :class:`StoreError`.

On PostgreSQL a connection that was open and is lost (the server died, a failover, a node
demoted to read-only) is reconnected for up to ``reconnect_s`` and the statement run again:
through a multi-host URL with ``target_session_attrs=read-write`` libpq finds the new
primary, and the callers (managers, the API, the CLI) carry on without seeing the failover.
A transaction is retried only when its ``BEGIN`` failed (nothing of it ran); a statement
whose connection died after it was sent is run again: the meta store's writes are updates of
states and upserts, and an insert whose first try did commit fails on its key, so nothing is
doubled. A first connection that fails is not waited for: a wrong URL is reported at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import psycopg

from mysimbdp.errors import StoreError, StoreUnavailable
from mysimbdp.logs import get_logger

Params = Sequence[Any]
T = TypeVar("T")

RECONNECT_S = 30.0  # how long a lost PostgreSQL connection is retried (a failover takes seconds)
RECONNECT_PAUSE_S = 0.2
CONNECT_TIMEOUT_S = 10  # per host, unless the URL sets connect_timeout

log = get_logger("metastore")


def _psycopg() -> ModuleType:
    """psycopg, imported only for a PostgreSQL meta store: it costs ~55 ms at every start of
    a CLI command on the SQLite default (``docs/performance.md``, "CLI start")."""
    import psycopg

    return psycopg


class SqlConnection:
    """One connection, used from one thread at a time (guarded by a lock)."""

    def __init__(self, url: str, *, reconnect_s: float = RECONNECT_S) -> None:
        self.url = url
        self.dialect = "sqlite" if urlsplit(url).scheme == "sqlite" else "postgres"
        self.reconnect_s = reconnect_s
        self._conn: sqlite3.Connection | psycopg.Connection[Any] | None = None
        self._connected = False  # once: from then on a lost connection is waited for
        self._in_transaction = 0  # a statement in a transaction is never retried alone
        self._lock = threading.RLock()

    def connect(self) -> None:
        if self.dialect == "sqlite":
            try:
                path = Path(urlsplit(self.url).path)
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise StoreError(f"meta store {self.url}: cannot open: {exc}") from exc
            self._conn = conn
            return
        pg = _psycopg()
        try:
            given = str(pg.conninfo.conninfo_to_dict(self.url).get("connect_timeout", ""))  # the URL's own wins
            timeout = int(given) if given.isdigit() else CONNECT_TIMEOUT_S
            self._conn = pg.connect(self.url, autocommit=True, connect_timeout=timeout)
        except pg.OperationalError as exc:
            raise StoreUnavailable(f"meta store: cannot connect: {exc}") from exc
        self._connected = True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else sql.replace("?", "%s")

    def _raw(self) -> sqlite3.Connection | psycopg.Connection[Any]:
        if self._conn is None:
            self.connect()
        assert self._conn is not None
        return self._conn

    def _retrying(self, op: Callable[[sqlite3.Connection | psycopg.Connection[Any]], T]) -> T:
        """``op`` on the connection; on PostgreSQL, once connected, a lost connection is
        reconnected and ``op`` run again until ``reconnect_s`` have passed."""
        deadline = 0.0
        while True:
            try:
                with self._errors():
                    return op(self._raw())
            except StoreUnavailable as exc:
                if self.dialect != "postgres" or not self._connected or self._in_transaction:
                    raise
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.reconnect_s
                    log.warning("meta_store_reconnecting", error=str(exc), reconnect_s=self.reconnect_s)
                if now >= deadline:
                    raise StoreUnavailable(f"{exc} (reconnected for {self.reconnect_s:g} s in vain)") from exc
                time.sleep(RECONNECT_PAUSE_S)

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the affected row count."""
        with self._lock:
            return self._retrying(lambda conn: int(conn.execute(self._sql(sql), tuple(params)).rowcount))

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if not rows:
            return

        def run(conn: sqlite3.Connection | psycopg.Connection[Any]) -> None:
            if isinstance(conn, sqlite3.Connection):
                conn.executemany(sql, rows)
            else:
                with conn.cursor() as cur:
                    cur.executemany(self._sql(sql), rows)

        with self._lock:
            self._retrying(run)

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._retrying(lambda conn: list(conn.execute(self._sql(sql), tuple(params)).fetchall()))

    def one(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction (SQLite: BEGIN IMMEDIATE so concurrent writers queue)."""
        with self._lock:
            if self.dialect == "postgres":
                with self._errors(), ExitStack() as begun:  # COMMIT's errors are converted too
                    # BEGIN is sent on entering: a lost connection is found there and retried
                    self._retrying(lambda conn: begun.enter_context(conn.transaction()))  # type: ignore[union-attr]
                    self._in_transaction += 1
                    try:
                        yield
                    finally:
                        self._in_transaction -= 1
                return
            with self._errors():
                conn = self._raw()
                assert isinstance(conn, sqlite3.Connection)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreUnavailable(f"meta store busy: {exc}") from exc
            raise StoreError(f"meta store: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"meta store: {exc}") from exc
        except Exception as exc:
            if self.dialect != "postgres":
                raise
            pg = _psycopg()  # loaded already: this connection is psycopg's
            if isinstance(exc, (pg.OperationalError, pg.InterfaceError, pg.errors.ReadOnlySqlTransaction)):
                self._drop()  # lost, shut down, or on a demoted node: the next use reconnects
                raise StoreUnavailable(f"meta store unavailable: {exc}") from exc
            if isinstance(exc, pg.Error):
                raise StoreError(f"meta store: {exc}") from exc
            raise
