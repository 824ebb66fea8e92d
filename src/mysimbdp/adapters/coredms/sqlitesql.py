"""The SQL of SQLite's write modes and indexes (``coredms.sqlite`` runs it).

A batch is one JSON object ``{key: document text}`` read by ``json_each``. A document field
is ``json_extract(doc, '$.name')`` (nested: ``'$.a.b'``); the indexes are made on exactly
these expressions, so a query that uses them (the read API) can use the index.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from mysimbdp.adapters.coredms.base import DocumentInvalid, index_name
from mysimbdp.domain.writespec import APPEND, WriteMode, WriteSpec, field_path_problem
from mysimbdp.errors import StoreError

__all__ = [
    "SEQ_TABLE",
    "add_seq_sql",
    "create_sql",
    "index_sql",
    "insert_sql",
    "json_field",
    "json_objects",
    "next_seq_sql",
    "seq_sql",
    "swap_seq_sql",
    "text_pairs",
]


SEQ_TABLE = "_mysimbdp_seq"  # per table, the write order's high-water mark kept over a replace's swap


def next_seq_sql(table: str, *, exists: bool = True) -> str:
    """The last write-order number given in ``table`` (its rows', or the one kept at a swap;
    ``exists=False``: the table is not there, only the kept one counts)."""
    kept = f"coalesce((SELECT last FROM {SEQ_TABLE} WHERE tbl = '{table}'), 0)"
    return f'max(coalesce((SELECT max(seq) FROM "{table}"), 0), {kept})' if exists else kept


def insert_sql(table: str, spec: WriteSpec = APPEND) -> str:
    """The batch's insert: each row numbered in write order (``seq``) after the table's last
    number, inside the one statement, so under SQLite's write lock (writes are serialized):
    numbers grow in commit order. A skipped row leaves a gap, which is harmless."""
    insert = (
        f'INSERT INTO "{table}" (key, doc, source, ingested_at, seq) SELECT key, value, ?, ?,'
        f" {next_seq_sql(table)} + row_number() OVER () FROM json_each(?) "
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
        "UPDATE SET doc = excluded.doc, source = excluded.source, ingested_at = excluded.ingested_at,"
        f" seq = excluded.seq WHERE {when}"
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
        "key TEXT PRIMARY KEY, doc TEXT NOT NULL, source TEXT NOT NULL, ingested_at TEXT NOT NULL, seq INTEGER) "
        "WITHOUT ROWID"  # rows live in the key's b-tree: one index to maintain, not two
    )


def seq_sql(table: str) -> list[str]:
    """The write-order index (``seq``, then the key: a WITHOUT ROWID index holds it) and the
    high-water table."""
    return [
        f'CREATE INDEX IF NOT EXISTS "sq_{table}" ON "{table}" (seq)',
        f"CREATE TABLE IF NOT EXISTS {SEQ_TABLE} (tbl TEXT PRIMARY KEY, last INTEGER NOT NULL) WITHOUT ROWID",
    ]


def add_seq_sql(table: str) -> list[str]:
    """A table made before ``seq``: the column, numbered by (ingested_at, key), then its index."""
    return [
        f'ALTER TABLE "{table}" ADD COLUMN seq INTEGER',
        f'UPDATE "{table}" SET seq = r.n FROM (SELECT key, row_number() OVER (ORDER BY ingested_at, key) AS n'
        f' FROM "{table}") AS r WHERE r.key = "{table}".key',
        *seq_sql(table),
    ]


def swap_seq_sql(staged: str, table: str, *, exists: bool) -> list[str]:
    """At a replace's swap: the staged rows renumbered after ``table``'s last number, and the
    new last number kept (an empty generation must not restart the numbering)."""
    last = next_seq_sql(table, exists=exists)
    return [
        f'UPDATE "{staged}" SET seq = seq + {last}',
        f"INSERT INTO {SEQ_TABLE} (tbl, last) VALUES ('{table}', max({last},"
        f' coalesce((SELECT max(seq) FROM "{staged}"), 0))) ON CONFLICT (tbl) DO UPDATE SET last = excluded.last',
    ]


def text_pairs(where: str, dataset: str, records: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """``{key: document text}``; a key repeated in the batch keeps its first document,
    as inserting row by row would (merge splits a batch into rounds of distinct keys
    first). Raises :class:`DocumentInvalid` for a document that is not UTF-8 and for a
    NUL character (SQLite's JSON functions cut a text there)."""
    keys = [key for key, _ in records]
    try:
        texts = [doc.decode() for _, doc in records]
    except UnicodeDecodeError as exc:
        raise DocumentInvalid(f"{where}: dataset {dataset!r}: a document is not UTF-8 JSON: {exc}") from exc
    if "\0" in "".join(keys) or "\0" in "".join(texts):
        key = next(key for key, text in zip(keys, texts, strict=True) if "\0" in key or "\0" in text)
        raise DocumentInvalid(
            f"{where}: dataset {dataset!r}: key {key!r}: the key or its document holds a NUL"
            " character, which coredms does not store"
        )
    pairs = dict(zip(keys, texts, strict=True))
    if len(pairs) < len(keys):  # a repeated key: the dict kept its last document
        pairs = {}
        for key, text in zip(keys, texts, strict=True):
            pairs.setdefault(key, text)
    return pairs
