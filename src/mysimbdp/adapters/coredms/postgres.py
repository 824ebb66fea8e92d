"""coredms on PostgreSQL: per tenant one schema owned by one LOGIN role of the same name.

A tenant's role owns its schema and has no privilege on any other tenant's schema, nor
CREATE on ``public``. A batch is first COPied straight into the dataset, one statement and
so one transaction; when a key of it is already stored, it is COPied into a per-connection
temporary table instead, then ``INSERT ... SELECT ... ON CONFLICT (key) DO NOTHING`` into
the dataset (mode merge: ``DO UPDATE ... WHERE``, see ``coredms.pgsql``), in one transaction.
Mode replace writes into a generation's staging table the same way; ``replace`` swaps it in.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from mysimbdp.adapters.coredms import pgsql, reads
from mysimbdp.adapters.coredms.base import generation_table, merge_rounds, table_name
from mysimbdp.adapters.coredms.pgadmin import PostgresAdmin
from mysimbdp.adapters.coredms.pgadmin import connect as _connect
from mysimbdp.adapters.coredms.pgadmin import pg_errors as _errors
from mysimbdp.adapters.coredms.rows import DatasetStats, StoredRow, StoredTexts
from mysimbdp.domain.docfilter import MATCH_ALL, Node, Path
from mysimbdp.domain.exactjson import loads_for_output
from mysimbdp.domain.readparams import BY_KEY, SortSpec
from mysimbdp.domain.writespec import APPEND, WriteMode, WriteSpec
from mysimbdp.errors import StoreError
from mysimbdp.settings import mask_url

LOAD_TABLE = "_mysimbdp_load"
COPY_CHUNK_BYTES = 1 << 20


def _escape(value: bytes) -> bytes:
    """Escape a value for COPY's text format."""
    return value.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")


def _copy_chunks(records: Sequence[tuple[str, bytes]], source: str | None = None) -> Iterator[bytes]:
    """COPY text rows ``key<TAB>doc`` (``<TAB>source`` added when given)."""
    raw_tail = b"" if source is None else source.encode()
    fast = _copy_text(records, raw_tail, with_tail=source is not None)
    if fast is not None:
        yield fast
        return
    parts: list[bytes] = []
    size = 0
    end = (b"" if source is None else b"\t" + _escape(raw_tail)) + b"\n"
    for key, doc in records:
        line = _escape(key.encode()) + b"\t" + _escape(doc) + end
        parts.append(line)
        size += len(line)
        if size >= COPY_CHUNK_BYTES:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def _copy_text(records: Sequence[tuple[str, bytes]], tail: bytes, *, with_tail: bool) -> bytes | None:
    """The COPY text of ``records`` in a few C-level passes, or None when a value holds a
    tab, a newline or a carriage return (then each value is escaped on its own, above).

    Compact JSON (what the SDK writes) never holds those raw, so the only character left to
    escape is the backslash, and it is doubled in the whole text at once."""
    keys = "\n".join(key for key, _ in records)
    if "\t" in keys or "\r" in keys or keys.count("\n") != len(records) - 1:
        return None
    docs = [doc for _, doc in records]
    joined = b"".join(docs) + tail
    if b"\t" in joined or b"\n" in joined or b"\r" in joined:
        return None
    end = (b"\t" + tail if with_tail else b"") + b"\n"
    columns = zip(keys.encode().split(b"\n"), itertools.repeat(b"\t"), docs, itertools.repeat(end))
    text = b"".join(itertools.chain.from_iterable(columns))
    return text.replace(b"\\", b"\\\\") if b"\\" in text else text


class PostgresStore:
    """One tenant's schema, reached with the tenant's own role. ``open()`` connects."""

    overlaps_writes = True  # the server parses and indexes while the client goes on

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self.where = f"coredms {mask_url(url)}"
        self._conn: psycopg.Connection[Any] | None = None
        self._schema = ""
        self._tables: set[str] = set()

    def open(self) -> None:
        conn = _connect(self.url, self.where, self.connect_timeout_s)
        try:
            with _errors(self.where, lost=self._lost):
                row = conn.execute("SELECT current_schema()").fetchone()
                if row is None or row[0] is None:
                    raise StoreError(f"{self.where}: no usable schema on the search path; provision the tenant first")
                conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {LOAD_TABLE} (key text, doc text) ON COMMIT DELETE ROWS")
        except BaseException:
            conn.close()
            raise
        self._schema = str(row[0])
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _lost(self) -> None:
        """Drop a connection that can write no more (see ``pgadmin.LOST``): the next use
        reconnects, to the new primary of a multi-host URL after a failover."""
        conn, self._conn = self._conn, None
        self._tables.clear()
        if conn is not None:
            conn.close()

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is not None and self._conn.closed:
            self._conn = None
            self._tables.clear()
        if self._conn is None:
            self.open()
        assert self._conn is not None
        return self._conn

    def _table(self, dataset: str) -> tuple[str, sql.Composed]:
        table = table_name(dataset)
        return table, sql.SQL("{}.{}").format(sql.Identifier(self._schema), sql.Identifier(table))

    def _exists(self, conn: psycopg.Connection[Any], table: str, qualified: sql.Composed) -> bool:
        if table in self._tables:
            return True
        row = conn.execute("SELECT to_regclass(%s)", (qualified.as_string(conn),)).fetchone()
        if row is None or row[0] is None:
            return False
        if self._seq_state(conn, table) != (True, True):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self._schema}.{table}",))
                self._ensure_seq(conn, table)
        self._tables.add(table)
        return True

    def _seq_state(self, conn: psycopg.Connection[Any], table: str) -> tuple[bool, bool]:
        """Whether ``table`` has ``seq``, and its index (read from the catalog: no lock taken)."""
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'seq'"
            " AND NOT attisdropped), to_regclass(%s) IS NOT NULL",
            (self._qualified(table).as_string(conn), self._qualified(f"sq_{table}"[:63]).as_string(conn)),
        ).fetchone()
        return (bool(row[0]), bool(row[1])) if row else (False, False)

    def _ensure_seq(self, conn: psycopg.Connection[Any], table: str) -> None:
        """``seq`` and its index on ``table`` (a table made before ``seq`` gets the column).
        DDL only when one is missing: a ``CREATE INDEX IF NOT EXISTS`` would wait for the
        writers of the table (its SHARE lock), and readers call this too."""
        column, index = self._seq_state(conn, table)
        if not column:
            conn.execute(pgsql.add_seq_sql(self._qualified(table)))
        if not index:
            conn.execute(pgsql.seq_index_sql(self._schema, table))

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
        with _errors(self.where, dataset, lost=self._lost):
            conn = self._db()
            qualified = self._qualified(table)
            if table not in self._tables:
                self._create(conn, table, spec)
            if self._copy_new(conn, qualified, records, source):
                return len(records)
            rounds = merge_rounds(records) if spec.mode is WriteMode.MERGE else [records]
            insert = pgsql.insert_sql(qualified, sql.Identifier(LOAD_TABLE), spec)
            written = 0
            with conn.transaction(), conn.cursor() as cur:
                for n, batch in enumerate(rounds):
                    if n:
                        cur.execute(f"TRUNCATE pg_temp.{LOAD_TABLE}")
                    with cur.copy(f"COPY pg_temp.{LOAD_TABLE} (key, doc) FROM STDIN") as copy:
                        for chunk in _copy_chunks(batch):
                            copy.write(chunk)
                    cur.execute(insert, (source,))
                    written += cur.rowcount
            return written

    def _qualified(self, table: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self._schema), sql.Identifier(table))

    def _create(self, conn: psycopg.Connection[Any], table: str, spec: WriteSpec) -> None:
        """The table (and ``spec``'s indexes) if not there, one creator at a time."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self._schema}.{table}",))
            conn.execute(pgsql.create_sql(self._qualified(table)))
            self._ensure_seq(conn, table)
            for fields in spec.indexes:
                conn.execute(pgsql.index_sql(self._schema, table, fields))
        self._tables.add(table)

    def stage(self, dataset: str, generation: str) -> None:
        with _errors(self.where, dataset, lost=self._lost):
            self._create(self._db(), generation_table(dataset, generation), APPEND)

    def replace(self, dataset: str, generation: str, spec: WriteSpec = APPEND) -> int | None:
        table, staged = table_name(dataset), generation_table(dataset, generation)
        with _errors(self.where, dataset, lost=self._lost):
            conn = self._db()
            with conn.transaction():  # DDL is transactional: readers see the old table until COMMIT
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self._schema}.{table}",))
                found = conn.execute("SELECT to_regclass(%s)", (self._qualified(staged).as_string(conn),)).fetchone()
                if found is None or found[0] is None:
                    return None
                self._ensure_seq(conn, staged)
                # the new content is written now, in the change feed's order: after what came before
                conn.execute(sql.SQL("UPDATE {} SET seq = pg_current_xact_id()").format(self._qualified(staged)))
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._qualified(table)))
                conn.execute(
                    sql.SQL("ALTER TABLE {} RENAME TO {}").format(self._qualified(staged), sql.Identifier(table))
                )
                conn.execute(
                    sql.SQL("DROP INDEX IF EXISTS {}.{}").format(
                        sql.Identifier(self._schema), sql.Identifier(f"sq_{staged}"[:63])
                    )
                )
                conn.execute(pgsql.seq_index_sql(self._schema, table))
                for fields in spec.indexes:
                    conn.execute(pgsql.index_sql(self._schema, table, fields))
                row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._qualified(table))).fetchone()
            self._tables.discard(staged)
            self._tables.add(table)
        return int(row[0]) if row else 0

    def discard(self, dataset: str, generation: str) -> None:
        staged = generation_table(dataset, generation)
        with _errors(self.where, dataset, lost=self._lost):
            self._db().execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._qualified(staged)))
            self._tables.discard(staged)

    @staticmethod
    def _copy_new(
        conn: psycopg.Connection[Any], qualified: sql.Composable, records: Sequence[tuple[str, bytes]], source: str
    ) -> bool:
        """Optimistic fast path: one COPY straight into the dataset, its own transaction.

        Right for a file's first ingestion, where no key is stored yet: no staging table, no
        second write, one round trip. When a key exists (a re-run, a replay, a duplicate in
        the batch) the COPY fails on the primary key and leaves nothing behind; the caller
        then takes the idempotent path, and such a batch costs one failed COPY more."""
        try:
            with conn.cursor() as cur:
                copy_sql = sql.SQL("COPY {} (key, doc, source) FROM STDIN").format(qualified)
                with cur.copy(copy_sql) as copy:
                    for chunk in _copy_chunks(records, source):
                        copy.write(chunk)
        except psycopg.errors.UniqueViolation:
            return False
        return True

    def count(self, dataset: str, where: Node = MATCH_ALL) -> int:
        with _errors(self.where, dataset, lost=self._lost):
            conn = self._db()
            table, qualified = self._table(dataset)
            if not self._exists(conn, table, qualified):
                return 0
            return reads.count(conn, "postgres", qualified.as_string(conn), where)

    def query(
        self,
        dataset: str,
        *,
        where: Node = MATCH_ALL,
        sort: SortSpec = BY_KEY,
        after: Sequence[Any] | None = None,
        fields: Sequence[Path] = (),
        limit: int,
        offset: int = 0,
    ) -> list[StoredRow]:
        with _errors(self.where, dataset, lost=self._lost):
            conn = self._db()
            table, qualified = self._table(dataset)
            if not self._exists(conn, table, qualified):
                return []
            name = qualified.as_string(conn)
            return reads.page(
                conn, "postgres", name, where=where, sort=sort, after=after, fields=fields, limit=limit, offset=offset
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
        with _errors(self.where, dataset, lost=self._lost):
            conn = self._db()
            table, qualified = self._table(dataset)
            if not self._exists(conn, table, qualified):
                return StoredTexts([], None)
            name = qualified.as_string(conn)
            return reads.page_texts(
                conn, "postgres", name, where=where, sort=sort, after=after, limit=limit, offset=offset
            )

    def changes(
        self,
        dataset: str,
        *,
        where: Node = MATCH_ALL,
        after: Sequence[Any] | None = None,
        fields: Sequence[Path] = (),
        limit: int,
    ) -> list[StoredRow]:
        with _errors(self.where, dataset, lost=self._lost):
            conn = self._db()
            table, qualified = self._table(dataset)
            if not self._exists(conn, table, qualified):
                return []
            name = qualified.as_string(conn)
            return reads.changes(conn, "postgres", name, where=where, after=after, fields=fields, limit=limit)

    def stats(self) -> list[DatasetStats]:
        """Documents, the table's size on disk (``pg_total_relation_size``: with its indexes
        and TOAST) and the latest ``ingested_at`` per dataset, in one snapshot."""
        out = []
        with _errors(self.where, lost=self._lost):
            conn = self._db()
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                for name in self.datasets():
                    qualified = self._qualified(f"ds_{name}")
                    row = conn.execute(
                        sql.SQL(
                            "SELECT count(*), pg_total_relation_size(%s::regclass),"
                            """ to_char(max(ingested_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') FROM {}"""
                        ).format(qualified),
                        (qualified.as_string(conn),),
                    ).fetchone()
                    assert row is not None
                    out.append(DatasetStats(name, int(row[0]), int(row[1]), row[2] or ""))
        return out

    def documents(self, dataset: str, *, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        with _errors(self.where, dataset, lost=self._lost):
            conn = self._db()
            table, qualified = self._table(dataset)
            if not self._exists(conn, table, qualified):
                return []
            rows = conn.execute(
                sql.SQL("SELECT doc::text FROM {} ORDER BY key LIMIT %s OFFSET %s").format(qualified),
                (limit, offset),
            ).fetchall()
        return [loads_for_output(doc) for (doc,) in rows]

    def datasets(self) -> list[str]:
        with _errors(self.where, lost=self._lost):
            conn = self._db()
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s ORDER BY tablename",
                (self._schema, "ds\\_%"),
            ).fetchall()
        return [str(name)[3:] for (name,) in rows]


def open_store(scoped_url: str, *, busy_timeout_s: float) -> PostgresStore:
    """The tenant's schema, connected as its role (``busy_timeout_s``: the connect timeout)."""
    store = PostgresStore(scoped_url, connect_timeout_s=busy_timeout_s)
    store.open()
    return store


def open_admin(url: str, *, pg_prefix: str) -> PostgresAdmin:
    """The admin for ``url``, naming schemas and roles ``<pg_prefix>_<tenant>``."""
    return PostgresAdmin(url, pg_prefix=pg_prefix)
