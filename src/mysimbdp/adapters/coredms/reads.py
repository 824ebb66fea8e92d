"""The read API's queries, run alike on SQLite and PostgreSQL (``coredms.sqlite`` and
``coredms.postgres`` call these with their connection).

Both drivers answer ``conn.execute(sql, params).fetchall()``, and ``coredms.filtersql``
writes each dialect's SQL with its placeholders, so one function serves both. A page's rows
come as :class:`StoredRow`: the position a cursor resumes after, and the document (whole,
or the projection assembled from its fields) with exact numbers as ``orjson.Fragment``
(``domain.exactjson``); :func:`page_texts` gives the same page's whole documents as their
stored JSON text (:class:`StoredTexts`), parsed by nobody.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mysimbdp.adapters.coredms import filtersql
from mysimbdp.adapters.coredms.filtersql import Dialect
from mysimbdp.adapters.coredms.rows import StoredRow, StoredTexts
from mysimbdp.domain.docfilter import MATCH_ALL, Node, Path
from mysimbdp.domain.exactjson import loads_for_output
from mysimbdp.domain.readparams import BY_KEY, SortKind, SortSpec, assemble

__all__ = ["changes", "count", "page", "page_texts"]


def page(
    conn: Any,
    dialect: Dialect,
    table: str,
    *,
    where: Node = MATCH_ALL,
    sort: SortSpec = BY_KEY,
    after: Sequence[Any] | None = None,
    fields: Sequence[Path] = (),
    limit: int,
    offset: int = 0,
) -> list[StoredRow]:
    """At most ``limit`` documents of ``table`` (quoted, schema-qualified on PostgreSQL)
    that ``where`` matches, in ``sort``'s order, after the position ``after``."""
    query = filtersql.page_sql(
        dialect, table, where=where, sort=sort, after=after, fields=fields, limit=limit, offset=offset
    )
    paths = tuple(fields)
    rows: list[StoredRow] = []
    for key, value, *texts in conn.execute(query.sql, query.params).fetchall():
        position = (key,) if sort.kind is SortKind.KEY else (value, key)
        doc = assemble(paths, tuple(texts)) if paths else loads_for_output(texts[0])
        rows.append(StoredRow(position, doc))
    return rows


def page_texts(
    conn: Any,
    dialect: Dialect,
    table: str,
    *,
    where: Node = MATCH_ALL,
    sort: SortSpec = BY_KEY,
    after: Sequence[Any] | None = None,
    limit: int,
    offset: int = 0,
) -> StoredTexts:
    """:func:`page`'s whole documents (no projection) as their stored JSON text: the same
    SQL, the same positions, nothing parsed (SQLite ``doc``, PostgreSQL ``doc::text``)."""
    query = filtersql.page_sql(dialect, table, where=where, sort=sort, after=after, limit=limit, offset=offset)
    found = conn.execute(query.sql, query.params).fetchall()
    if not found:
        return StoredTexts([], None)
    key, value, _ = found[-1]
    last = (key,) if sort.kind is SortKind.KEY else (value, key)
    return StoredTexts([text for _, _, text in found], last)


def changes(
    conn: Any,
    dialect: Dialect,
    table: str,
    *,
    where: Node = MATCH_ALL,
    after: Sequence[Any] | None = None,
    fields: Sequence[Path] = (),
    limit: int,
) -> list[StoredRow]:
    """The documents written after the position ``after`` (``(seq, key)``), in write order:
    the change feed (``since=``). ``seq`` numbers writes in commit order: on SQLite the
    table's last number plus one, given under SQLite's write lock; on PostgreSQL the
    writing transaction's id, read only below the snapshot's ``xmin`` (see
    ``filtersql.changes_sql``), so a transaction that commits late, with a smaller id, is
    still read later, never skipped. A merge's update and a replace's swap give the rows new
    numbers: the consumer sees them again, as changes."""
    query = filtersql.changes_sql(dialect, table, where=where, after=after, fields=fields, limit=limit)
    paths = tuple(fields)
    if dialect == "postgres":
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            found = conn.execute(query.sql, query.params).fetchall()
    else:
        found = conn.execute(query.sql, query.params).fetchall()
    return [
        StoredRow((seq, key), assemble(paths, tuple(texts)) if paths else loads_for_output(texts[0]))
        for key, seq, *texts in found
    ]


def count(conn: Any, dialect: Dialect, table: str, where: Node = MATCH_ALL) -> int:
    """How many documents of ``table`` ``where`` matches."""
    query = filtersql.count_sql(dialect, table, where)
    row = conn.execute(query.sql, query.params).fetchone()
    return int(row[0]) if row else 0
