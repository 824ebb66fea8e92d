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

__all__ = ["create_sql", "index_sql", "insert_sql", "json_field"]


def json_field(doc: str, path: str) -> sql.Composable:
    """The jsonb expression of the document field ``path`` of column ``doc`` (a plain
    identifier of ours: ``doc``, ``t.doc``, ``EXCLUDED.doc``)."""
    if problem := field_path_problem(path):
        raise StoreError(problem)
    parts = path.split(".")
    if len(parts) == 1:
        return sql.SQL("({} -> {})").format(sql.SQL(doc), sql.Literal(path))
    return sql.SQL("({} #> {})").format(sql.SQL(doc), sql.Literal("{" + ",".join(parts) + "}"))


def create_sql(qualified: sql.Composable) -> sql.Composed:
    return sql.SQL(
        'CREATE TABLE IF NOT EXISTS {} (key text COLLATE "C" PRIMARY KEY, doc jsonb NOT NULL,'
        " source text NOT NULL, ingested_at timestamptz NOT NULL DEFAULT now())"
    ).format(qualified)


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
        "{} ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc, source = EXCLUDED.source, ingested_at = now() WHERE {}"
    ).format(insert, when)
