"""The SQL of PostgreSQL's write modes and indexes (``coredms.postgres`` runs it).

A document field is ``(doc -> 'name')`` or, nested, ``(doc #> '{a,b}')``: a ``jsonb`` value,
compared by jsonb's order (numbers as numbers, strings as text). The indexes are made on
exactly these expressions, so a query that uses them (the read API) can use the index.
"""

from __future__ import annotations

from psycopg import sql

from mysimbdp.adapters.coredms.base import index_name
from mysimbdp.domain.writespec import WriteMode, WriteSpec, field_path_problem
from mysimbdp.errors import StoreError

__all__ = ["SEQ_COLUMN", "add_seq_sql", "create_sql", "index_sql", "insert_sql", "json_field", "seq_index_sql"]


def json_field(doc: str, path: str) -> sql.Composable:
    """The jsonb expression of the document field ``path`` of column ``doc`` (a plain
    identifier of ours: ``doc``, ``t.doc``, ``EXCLUDED.doc``)."""
    if problem := field_path_problem(path):
        raise StoreError(problem)
    parts = path.split(".")
    if len(parts) == 1:
        return sql.SQL("({} -> {})").format(sql.SQL(doc), sql.Literal(path))
    return sql.SQL("({} #> {})").format(sql.SQL(doc), sql.Literal("{" + ",".join(parts) + "}"))


SEQ_COLUMN = "seq xid8 NOT NULL DEFAULT pg_current_xact_id()"


def create_sql(qualified: sql.Composable) -> sql.Composed:
    """The dataset's table. ``seq`` is the writing transaction's id (``xid8``: 64 bits, never
    wrapping), the write order of the change feed (see ``coredms.reads.changes``)."""
    return sql.SQL(
        'CREATE TABLE IF NOT EXISTS {} (key text COLLATE "C" PRIMARY KEY, doc jsonb NOT NULL,'
        " source text NOT NULL, ingested_at timestamptz NOT NULL DEFAULT now(), " + SEQ_COLUMN + ")"
    ).format(qualified)


def add_seq_sql(qualified: sql.Composable) -> sql.Composed:
    """``seq`` on a table made before it: existing rows get this transaction's id."""
    return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS " + SEQ_COLUMN).format(qualified)


def seq_index_sql(schema: str, table: str) -> sql.Composed:
    """The change feed's index: (seq, key), the order it reads in."""
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} (seq, key)").format(
        sql.Identifier(f"sq_{table}"[:63]), sql.Identifier(schema), sql.Identifier(table)
    )


def index_sql(schema: str, table: str, fields: tuple[str, ...]) -> sql.Composed:
    """``CREATE INDEX IF NOT EXISTS`` on the jsonb expressions of ``fields``, in order."""
    columns = sql.SQL(", ").join(json_field("doc", path) for path in fields)
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} ({})").format(
        sql.Identifier(index_name(table, fields)), sql.Identifier(schema), sql.Identifier(table), columns
    )


def insert_sql(qualified: sql.Composable, load: sql.Identifier, spec: WriteSpec) -> sql.Composed:
    """From the load table into the dataset: append ``DO NOTHING``; merge ``DO UPDATE`` of a
    document that differs and, with ``order_by``, is not older (one ``%s``: the source)."""
    insert = sql.SQL("INSERT INTO {} AS t (key, doc, source) SELECT key, doc::jsonb, %s FROM pg_temp.{}").format(
        qualified, load
    )
    if spec.mode is not WriteMode.MERGE:
        return sql.SQL("{} ON CONFLICT (key) DO NOTHING").format(insert)
    when: sql.Composable = sql.SQL("t.doc IS DISTINCT FROM EXCLUDED.doc")
    if spec.order_by is not None:
        old, new = json_field("t.doc", spec.order_by), json_field("EXCLUDED.doc", spec.order_by)
        when = sql.SQL("{} AND ({} IS NULL OR {} >= {})").format(when, old, new, old)
    return sql.SQL(
        "{} ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc, source = EXCLUDED.source, ingested_at = now(),"
        " seq = pg_current_xact_id() WHERE {}"
    ).format(insert, when)
