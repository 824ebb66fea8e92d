"""A thin SQL connection over sqlite3 or psycopg, so the meta store is written once.

SQL is written with ``?`` placeholders; for PostgreSQL they become ``%s``. Connection
failures become :class:`StoreUnavailable` (transient), other failures :class:`StoreError`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import psycopg

from mysimbdp.errors import StoreError, StoreUnavailable

Params = Sequence[Any]


def _psycopg() -> ModuleType:
    """psycopg, imported only for a PostgreSQL meta store: it costs ~55 ms at every start of
    a CLI command on the SQLite default (``docs/performance.md``, "CLI start")."""
    import psycopg

    return psycopg


class SqlConnection:
    """One connection, used from one thread at a time (guarded by a lock)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = "sqlite" if urlsplit(url).scheme == "sqlite" else "postgres"
        self._conn: sqlite3.Connection | psycopg.Connection[Any] | None = None
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
            self._conn = pg.connect(self.url, autocommit=True, connect_timeout=10)
        except pg.OperationalError as exc:
            raise StoreUnavailable(f"meta store: cannot connect: {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else sql.replace("?", "%s")

    def _raw(self) -> sqlite3.Connection | psycopg.Connection[Any]:
        if self._conn is None:
            self.connect()
        assert self._conn is not None
        return self._conn

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the affected row count."""
        with self._lock, self._errors():
            cur = self._raw().execute(self._sql(sql), tuple(params))
            return int(cur.rowcount)

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if not rows:
            return
        with self._lock, self._errors():
            conn = self._raw()
            if isinstance(conn, sqlite3.Connection):
                conn.executemany(sql, rows)
            else:
                with conn.cursor() as cur:
                    cur.executemany(self._sql(sql), rows)

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._errors():
            cur = self._raw().execute(self._sql(sql), tuple(params))
            return list(cur.fetchall())

    def one(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction (SQLite: BEGIN IMMEDIATE so concurrent writers queue)."""
        with self._lock, self._errors():
            conn = self._raw()
            if isinstance(conn, sqlite3.Connection):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                with conn.transaction():
                    yield

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
            if isinstance(exc, pg.OperationalError):
                self._conn = None
                raise StoreUnavailable(f"meta store unavailable: {exc}") from exc
            if isinstance(exc, pg.Error):
                raise StoreError(f"meta store: {exc}") from exc
            raise
