"""The SQL of SQLite's write modes and indexes (``coredms.sqlite`` runs it).

A batch is one JSON object ``{key: document text}`` read by ``json_each``. A document field
is ``json_extract(doc, '$.name')`` (nested: ``'$.a.b'``); the indexes are made on exactly
these expressions, so a query that uses them (the read API) can use the index.
"""

from __future__ import annotations

import orjson

from mysimbdp.adapters.coredms.base import index_name
from mysimbdp.domain.writespec import APPEND, WriteMode, WriteSpec, field_path_problem
from mysimbdp.errors import StoreError

__all__ = ["create_sql", "index_sql", "insert_sql", "json_field", "json_objects"]


def insert_sql(table: str, spec: WriteSpec = APPEND) -> str:
    insert = (
        f'INSERT INTO "{table}" (key, doc, source, ingested_at) SELECT key, value, ?, ? FROM json_each(?) '
        "WHERE true ON CONFLICT (key) DO "  # WHERE: else SQLite reads ON as a join constraint
    )
    if spec.mode is not WriteMode.MERGE:
        return insert + "NOTHING"
    # merge: an identical document changes nothing (a re-run writes no row); with order_by,
    # an older one neither (a stored document without the field is always replaced).
    when = f'"{table}".doc IS NOT excluded.doc'
    if spec.order_by is not None:
        old, new = json_field(f'"{table}".doc', spec.order_by), json_field("excluded.doc", spec.order_by)
        when += f" AND ({old} IS NULL OR {new} >= {old})"
    return insert + (
        f"UPDATE SET doc = excluded.doc, source = excluded.source, ingested_at = excluded.ingested_at WHERE {when}"
    )


def json_field(doc: str, path: str) -> str:
    """The SQL expression of the document field ``path`` (checked: letters, digits, '_', '.')
    of the column ``doc``, as expression indexes are made on it (``json_extract``)."""
    if problem := field_path_problem(path):
        raise StoreError(problem)
    return f"json_extract({doc}, '$.{path}')"


def index_sql(table: str, fields: tuple[str, ...]) -> str:
    columns = ", ".join(json_field("doc", path) for path in fields)
    return f'CREATE INDEX IF NOT EXISTS "{index_name(table, fields)}" ON "{table}" ({columns})'


def json_objects(pairs: dict[str, str], max_bytes: int) -> list[bytes]:
    """``pairs`` as JSON objects of at most ``max_bytes`` each (SQLite's length limit):
    one, unless the batch is huge; halved until each fits (a single pair may not)."""
    text = orjson.dumps(pairs)
    if len(text) <= max_bytes or len(pairs) == 1:
        return [text]
    items = list(pairs.items())
    mid = len(items) // 2
    return json_objects(dict(items[:mid]), max_bytes) + json_objects(dict(items[mid:]), max_bytes)


def create_sql(table: str) -> str:
    return (
        f'CREATE TABLE IF NOT EXISTS "{table}" ('
        "key TEXT PRIMARY KEY, doc TEXT NOT NULL, source TEXT NOT NULL, ingested_at TEXT NOT NULL) "
        "WITHOUT ROWID"  # rows live in the key's b-tree: one index to maintain, not two
    )
