"""coredms on SQLite: one database file per tenant, WAL, one transaction per write.

Isolation is the filesystem: a tenant's app receives the path of its own file only.

A batch goes to SQLite as ONE JSON object ``{key: document text}``, built by orjson in one
call, and one ``INSERT ... SELECT key, value FROM json_each(?)``: SQLite parses it and
inserts every row in C, with the GIL released for the whole statement, where binding each
row from Python held it (and took it back row by row). That one statement is the whole
transaction (SQLite makes each statement outside ``BEGIN`` atomic): no ``BEGIN`` and
``COMMIT`` round trips, each of which gave the GIL away and waited to get it back while
another thread of the app was busy. Only a batch over SQLite's length limit (1 GB) is
split, and then written in one explicit transaction.

Writers to one tenant's file (stream app instances, batch app processes, chunk workers)
take turns on an advisory lock next to it (``<file>-lock``) before ``BEGIN IMMEDIATE``:
a waiting writer starts within about a millisecond of the last ``COMMIT``, where SQLite's
own busy handler sleeps 1, 2, 5 … up to 100 ms between tries. The busy timeout still
bounds the wait, and a writer that does not take the lock is still serialized by SQLite.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from mysimbdp.adapters.coredms import reads, sqlitesql
from mysimbdp.adapters.coredms.base import (
    DocumentInvalid,
    generation_table,
    merge_rounds,
    sqlite_path,
    table_name,
)
from mysimbdp.adapters.coredms.rows import DatasetStats, StoredRow, StoredTexts
from mysimbdp.adapters.coredms.sqliteadmin import SqliteAdmin
from mysimbdp.domain.docfilter import MATCH_ALL, Node
from mysimbdp.domain.docfilter import Path as FieldPath
from mysimbdp.domain.exactjson import loads_for_output
from mysimbdp.domain.readparams import BY_KEY, SortSpec
from mysimbdp.domain.writespec import APPEND, WriteMode, WriteSpec
from mysimbdp.errors import StoreError, StoreUnavailable

_TURN_POLL_S = (0.0001, 0.0002, 0.0005, 0.001)  # waits between tries for the writers' lock; then 1 ms


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _utc(stored: str | None) -> str:
    """A stored ``ingested_at`` (``+00:00``) as ISO 8601 with ``Z``; "" for none."""
    return "" if stored is None else datetime.fromisoformat(stored).astimezone(UTC).isoformat().replace("+00:00", "Z")


class SqliteStore:
    """One tenant's database file. ``open()`` connects; the constructor does no IO."""

    # See DocumentStore. The GIL is released for a whole INSERT, but in the batch SDK a
    # writer thread measured no faster (bench/batch.py, 2026-11-29): its app processes keep
    # both cores busy already. The stream loop, one process per instance, writes on a
    # worker thread whatever the store (see mysimbdp.sdk.stream).
    overlaps_writes = False

    def __init__(self, path: str, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._tables: set[str] = set()

    def open(self) -> None:
        if not self.path.is_file():
            raise StoreError(
                f"coredms {self.path}: no such tenant database; provision the tenant first (mysimbdp tenant add)"
            )
        try:
            conn = sqlite3.connect(
                f"file:{quote(str(self.path))}?mode=rw",
                uri=True,
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"coredms {self.path}: cannot open: {exc}; retry later") from exc
        try:
            self._lock_fd = os.open(f"{self.path}-lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            conn.close()
            raise StoreUnavailable(f"coredms {self.path}: cannot open its writers' lock: {exc}; retry later") from exc
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """Hold the writers' lock (see the module's docstring) for one transaction, once
        it is free or the busy timeout has passed (then SQLite's own locking decides)."""
        fd = self._lock_fd
        deadline = time.monotonic() + self.busy_timeout_s
        held = False
        tries = 0
        while fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(_TURN_POLL_S[min(tries, len(_TURN_POLL_S) - 1)])
                tries += 1
        try:
            yield
        finally:
            if held and fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.open()
        assert self._conn is not None
        return self._conn

    @contextmanager
    def _errors(self, dataset: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text or "unable to open" in text:
                raise StoreUnavailable(
                    f"coredms {self.path}: dataset {dataset!r}: {text} (waited {self.busy_timeout_s:g} s); retry later"
                ) from exc
            raise StoreError(f"coredms {self.path}: dataset {dataset!r}: {text}") from exc
        except sqlite3.DataError as exc:  # e.g. a document longer than SQLite's length limit
            raise DocumentInvalid(
                f"coredms {self.path}: dataset {dataset!r}: SQLite refused a document: {exc}"
            ) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"coredms {self.path}: dataset {dataset!r}: {exc}") from exc

    def _exists(self, table: str, *, cached: bool = True) -> bool:
        if cached and table in self._tables:
            return True
        row = self._db().execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        if row is not None:
            self._ensure_seq(table)
            self._tables.add(table)
        return row is not None

    def _ensure_seq(self, table: str) -> None:
        """``seq`` (write order), its index and the high-water table for ``table``; a table
        made before ``seq`` gets the column, numbered by (ingested_at, key), in one
        transaction (its own, or the caller's when one is open)."""
        conn = self._db()
        index = conn.execute("SELECT 1 FROM sqlite_master WHERE name IN (?, ?)", (f"sq_{table}", sqlitesql.SEQ_TABLE))
        if len(index.fetchall()) == 2:
            return
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
            if columns:
                for statement in sqlitesql.seq_sql(table) if "seq" in columns else sqlitesql.add_seq_sql(table):
                    conn.execute(statement)
            if own:
                conn.execute("COMMIT")
        except BaseException:
            if own and conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def write(
        self,
        dataset: str,
        records: Sequence[tuple[str, bytes]],
        source: str,
        spec: WriteSpec = APPEND,
        *,
        generation: str = "",
    ) -> int:
        table = table_name(dataset)
        if spec.mode is WriteMode.REPLACE:
            table, spec = generation_table(dataset, generation), APPEND  # indexes come at the swap
        if not records:
            return 0
        rounds = merge_rounds(records) if spec.mode is WriteMode.MERGE else [list(records)]
        pairs = [sqlitesql.text_pairs(f"coredms {self.path}", dataset, batch) for batch in rounds]
        now = _now()
        with self._errors(dataset):
            conn = self._db()
            try:
                limit = conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
                objects = [text for batch in pairs for text in sqlitesql.json_objects(batch, limit)]
            except orjson.JSONEncodeError as exc:  # a key that is no valid text (a lone surrogate)
                raise DocumentInvalid(
                    f"coredms {self.path}: dataset {dataset!r}: a key is not valid text: {exc}"
                ) from exc
            insert = sqlitesql.insert_sql(table, spec)
            with self._writer_turn():
                if table not in self._tables:
                    conn.execute(sqlitesql.create_sql(table))
                    self._ensure_seq(table)
                    for fields in spec.indexes:
                        conn.execute(sqlitesql.index_sql(table, fields))
                    self._tables.add(table)
                if len(objects) == 1:  # the usual batch: one statement, a transaction of its own
                    return int(conn.execute(insert, (source, now, objects[0])).rowcount)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    before = conn.total_changes
                    for text in objects:
                        conn.execute(insert, (source, now, text))
                    inserted = conn.total_changes - before
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        return inserted

    def stage(self, dataset: str, generation: str) -> None:
        table = generation_table(dataset, generation)
        with self._errors(dataset), self._writer_turn():
            self._db().execute(sqlitesql.create_sql(table))
            self._ensure_seq(table)
            self._tables.add(table)

    def replace(self, dataset: str, generation: str, spec: WriteSpec = APPEND) -> int | None:
        table, staged = table_name(dataset), generation_table(dataset, generation)
        with self._errors(dataset):
            conn = self._db()
            with self._writer_turn():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if not self._exists(staged, cached=False):
                        conn.execute("ROLLBACK")
                        return None
                    self._ensure_seq(staged)
                    exists = self._exists(table, cached=False)
                    for statement in sqlitesql.swap_seq_sql(staged, table, exists=exists):
                        conn.execute(statement)
                    conn.execute(f'DROP TABLE IF EXISTS "{table}"')  # its indexes with it: their names are free
                    conn.execute(f'ALTER TABLE "{staged}" RENAME TO "{table}"')
                    conn.execute(f'DROP INDEX IF EXISTS "sq_{staged}"')
                    for statement in [
                        *sqlitesql.seq_sql(table),
                        *(sqlitesql.index_sql(table, f) for f in spec.indexes),
                    ]:
                        conn.execute(statement)
                    row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
                    conn.execute("COMMIT")  # WAL: a reader sees the old table until here, then the new
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            self._tables.discard(staged)
            self._tables.add(table)
        return int(row[0])

    def discard(self, dataset: str, generation: str) -> None:
        staged = generation_table(dataset, generation)
        with self._errors(dataset), self._writer_turn():
            self._db().execute(f'DROP TABLE IF EXISTS "{staged}"')
            self._tables.discard(staged)

    def count(self, dataset: str, where: Node = MATCH_ALL) -> int:
        table = table_name(dataset)
        with self._errors(dataset):
            if not self._exists(table):
                return 0
            return reads.count(self._db(), "sqlite", f'"{table}"', where)

    def query(
        self,
        dataset: str,
        *,
        where: Node = MATCH_ALL,
        sort: SortSpec = BY_KEY,
        after: Sequence[Any] | None = None,
        fields: Sequence[FieldPath] = (),
        limit: int,
        offset: int = 0,
    ) -> list[StoredRow]:
        table = table_name(dataset)
        with self._errors(dataset):
            if not self._exists(table):
                return []
            return reads.page(
                self._db(),
                "sqlite",
                f'"{table}"',
                where=where,
                sort=sort,
                after=after,
                fields=fields,
                limit=limit,
                offset=offset,
            )

    def query_texts(
        self,
        dataset: str,
        *,
        where: Node = MATCH_ALL,
        sort: SortSpec = BY_KEY,
        after: Sequence[Any] | None = None,
        limit: int,
        offset: int = 0,
    ) -> StoredTexts:
        table = table_name(dataset)
        with self._errors(dataset):
            if not self._exists(table):
                return StoredTexts([], None)
            db, name = self._db(), f'"{table}"'
            return reads.page_texts(db, "sqlite", name, where=where, sort=sort, after=after, limit=limit, offset=offset)

    def changes(
        self,
        dataset: str,
        *,
        where: Node = MATCH_ALL,
        after: Sequence[Any] | None = None,
        fields: Sequence[FieldPath] = (),
        limit: int,
    ) -> list[StoredRow]:
        table = table_name(dataset)
        with self._errors(dataset):
            if not self._exists(table):
                return []
            return reads.changes(
                self._db(), "sqlite", f'"{table}"', where=where, after=after, fields=fields, limit=limit
            )

    def stats(self) -> list[DatasetStats]:
        """Documents, their JSON text's bytes and the latest ``ingested_at`` per dataset
        (one read transaction: the numbers are of one moment)."""
        conn, out = self._db(), []
        with self._errors("*"):
            conn.execute("BEGIN")
            try:
                for name in self.datasets():
                    sizes = "count(*), coalesce(sum(length(CAST(doc AS BLOB))), 0), max(ingested_at)"
                    row = conn.execute(f'SELECT {sizes} FROM "ds_{name}"').fetchone()
                    out.append(DatasetStats(name, int(row[0]), int(row[1]), _utc(row[2])))
            finally:
                conn.execute("COMMIT")
        return out

    def documents(self, dataset: str, *, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        table = table_name(dataset)
        with self._errors(dataset):
            if not self._exists(table):
                return []
            rows = self._db().execute(f'SELECT doc FROM "{table}" ORDER BY key LIMIT ? OFFSET ?', (limit, offset))
            return [loads_for_output(doc) for (doc,) in rows]

    def datasets(self) -> list[str]:
        with self._errors("*"):
            rows = self._db().execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'ds\\_%' ESCAPE '\\' ORDER BY name"
            )
            return [name[3:] for (name,) in rows]


def open_store(scoped_url: str, *, busy_timeout_s: float) -> SqliteStore:
    """The tenant's database file of a ``sqlite:///PATH`` URL, opened."""
    store = SqliteStore(sqlite_path(scoped_url), busy_timeout_s=busy_timeout_s)
    store.open()
    return store


def open_admin(url: str, *, pg_prefix: str) -> SqliteAdmin:
    """The admin of the directory of a ``sqlite:///DIR`` URL (``pg_prefix`` is PostgreSQL's)."""
    return SqliteAdmin(sqlite_path(url))
