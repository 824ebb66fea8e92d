"""The read API's SQL: a filter's WHERE, a page's ORDER BY and keyset ("seek") condition, a
projection, on SQLite and PostgreSQL (``coredms.reads`` runs them for the stores).

A dataset's table (``coredms.base``) holds ``key`` (primary key), ``doc`` (JSON: text on
SQLite, ``jsonb`` on PostgreSQL), ``source`` and ``ingested_at``.

Nothing a request sends is spliced into SQL text: filter values are bound parameters, and so
are field paths (SQLite: a JSON path ``$."a"."b"`` for ``json_extract`` / ``json_type``, its
segments free of quotes by ``domain.docfilter.parse_path``; PostgreSQL: a ``text[]`` for
``#>``), except a compared value's path that is a plain field path (letters, digits, '_',
'.': ``domain.writespec.field_path_problem``, nothing that could be quoted): that one is
written as the index expression itself (``sqlitesql.json_field`` / ``pgsql.json_field``), so
that an index on the field serves the filter (an expression index only matches its very
expression; a bound path never does). A sort field is written so too, and only a field of
the dataset's indexes (the profile's, the request merely picks one), so that the index serves
the ORDER BY and the seek.

Types, as ``domain.docfilter`` defines them: each comparison checks the JSON type first
(SQLite ``json_type``, PostgreSQL ``jsonb_typeof``), so numbers compare as numbers, strings
as strings (SQLite: BINARY; PostgreSQL: ``COLLATE "C"``; both UTF-8 byte order = code point
order), and a value of another type never matches a range. An integer outside SQLite's 64
bits is compared as a float there (SQLite holds such a stored number as a float too).

Sorting by a field orders values of mixed types as the backend does: SQLite null < numbers
(booleans are 0 and 1) < text (objects and arrays as their JSON text); PostgreSQL jsonb's
null < strings < numbers < booleans < arrays < objects. A missing field sorts first
ascending, last descending, on both. Each backend's seek condition uses the same order as
its ORDER BY, so paging visits every document once whatever the types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import orjson

from mysimbdp.adapters.coredms import sqlitesql
from mysimbdp.domain.docfilter import RANGE_OPS, And, Compare, Node, Op, Path
from mysimbdp.domain.readparams import SortKind, SortSpec
from mysimbdp.domain.writespec import field_path_problem
from mysimbdp.errors import StoreError

__all__ = [
    "Dialect",
    "Fragment",
    "changes_sql",
    "count_sql",
    "order_sql",
    "page_sql",
    "projection_sql",
    "seek_sql",
    "sort_value_sql",
    "where_sql",
]

Dialect: TypeAlias = Literal["sqlite", "postgres"]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_SQL_OP = {Op.GT: ">", Op.GTE: ">=", Op.LT: "<", Op.LTE: "<="}


@dataclass(frozen=True, slots=True)
class Fragment:
    """SQL text and its parameters, in order (``?`` on SQLite, ``%s`` on PostgreSQL)."""

    sql: str
    params: tuple[Any, ...] = ()


def _join(parts: Sequence[Fragment], sep: str) -> Fragment:
    return Fragment(sep.join(f"({p.sql})" for p in parts), tuple(x for p in parts for x in p.params))


def _sqlite_path(path: Path) -> str:
    return "$" + "".join(f'."{segment}"' for segment in path)


def _indexable(path: Path) -> bool:
    """Whether ``path`` can be written into SQL text as an index expression: a field path of
    ``domain.writespec.FIELD_PATH_RE`` (letters, digits, '_' and '.', nothing to quote), as the
    profile's indexes are; any other path stays a bound parameter."""
    return field_path_problem(".".join(path)) is None


def _sqlite_number(value: int | float) -> int | float:
    return value if isinstance(value, float) or INT64_MIN <= value <= INT64_MAX else float(value)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


class _Sqlite:
    ph = "?"

    def typ(self, path: Path) -> Fragment:
        return Fragment("json_type(doc, ?)", (_sqlite_path(path),))

    def val(self, path: Path) -> Fragment:
        if _indexable(path):  # the index's own expression, so that an index on the field serves the filter
            return Fragment(sqlitesql.json_field("doc", ".".join(path)))
        return Fragment("json_extract(doc, ?)", (_sqlite_path(path),))

    def is_null(self, path: Path) -> Fragment:
        t = self.typ(path)
        return Fragment(f"coalesce({t.sql}, 'null') = 'null'", t.params)

    def exists(self, path: Path) -> Fragment:
        t = self.typ(path)
        return Fragment(f"{t.sql} IS NOT NULL", t.params)

    def typed(self, path: Path, value: Any, cond: str, params: tuple[Any, ...]) -> Fragment:
        """``cond`` (on ``json_extract``, as ``{v}``) for values of ``value``'s JSON type only."""
        t, v = self.typ(path), self.val(path)
        types = "'text'" if isinstance(value, str) else "'integer', 'real'"
        return Fragment(f"{t.sql} IN ({types}) AND {cond.format(v=v.sql)}", t.params + v.params + params)

    def eq(self, path: Path, value: Any) -> Fragment:
        if value is None:
            return self.is_null(path)
        if isinstance(value, bool):
            t = self.typ(path)
            return Fragment(f"{t.sql} = ?", (*t.params, "true" if value else "false"))
        scalar = value if isinstance(value, str) else _sqlite_number(value)
        return self.typed(path, value, "{v} = ?", (scalar,))

    def range(self, path: Path, op: Op, value: Any) -> Fragment:
        scalar = value if isinstance(value, str) else _sqlite_number(value)
        return self.typed(path, value, f"{{v}} {_SQL_OP[op]} ?", (scalar,))

    def any_of(self, path: Path, values: tuple[Any, ...]) -> Fragment:
        parts: list[Fragment] = []
        if any(v is None for v in values):
            parts.append(self.is_null(path))
        bools = sorted({("true" if v else "false") for v in values if isinstance(v, bool)})
        if bools:
            t = self.typ(path)
            parts.append(Fragment(f"{t.sql} IN ({', '.join('?' * len(bools))})", (*t.params, *bools)))
        numbers = [_sqlite_number(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        strings = [v for v in values if isinstance(v, str)]
        for group, sample in ((numbers, 0), (strings, "")):
            if group:
                in_list = "{v} IN (SELECT value FROM json_each(?))"
                parts.append(self.typed(path, sample, in_list, (_json_text(group),)))
        return _join(parts, " OR ") if parts else Fragment("1 = 0")


class _Postgres:
    ph = "%s"

    def val(self, path: Path) -> Fragment:
        if _indexable(path):  # the index's own expression, so that an index on the field serves the filter
            from mysimbdp.adapters.coredms import pgsql  # psycopg: on PostgreSQL only

            return Fragment(pgsql.json_field("doc", ".".join(path)).as_string(None))
        return Fragment("(doc #> %s::text[])", (list(path),))

    def is_null(self, path: Path) -> Fragment:
        v = self.val(path)
        return Fragment(f"coalesce({v.sql}, 'null'::jsonb) = 'null'::jsonb", v.params)

    def exists(self, path: Path) -> Fragment:
        v = self.val(path)
        return Fragment(f"{v.sql} IS NOT NULL", v.params)

    def eq(self, path: Path, value: Any) -> Fragment:
        if value is None:
            return self.is_null(path)
        v = self.val(path)  # jsonb equality: same type and value, numbers as numbers
        return Fragment(f"{v.sql} = %s::jsonb", (*v.params, _json_text(value)))

    def range(self, path: Path, op: Op, value: Any) -> Fragment:
        v = self.val(path)
        if isinstance(value, str):
            return Fragment(
                f"jsonb_typeof({v.sql}) = 'string' AND (doc #>> %s::text[]) COLLATE \"C\" {_SQL_OP[op]} %s",
                (*v.params, list(path), value),
            )
        return Fragment(
            f"jsonb_typeof({v.sql}) = 'number' AND {v.sql} {_SQL_OP[op]} %s::jsonb",
            (*v.params, *v.params, _json_text(value)),
        )

    def any_of(self, path: Path, values: tuple[Any, ...]) -> Fragment:
        parts: list[Fragment] = []
        if any(v is None for v in values):
            parts.append(self.is_null(path))
        texts = [_json_text(v) for v in values if v is not None]
        if texts:
            v = self.val(path)
            parts.append(Fragment(f"{v.sql} = ANY(%s::text[]::jsonb[])", (*v.params, texts)))
        return _join(parts, " OR ") if parts else Fragment("1 = 0")


_DIALECTS: dict[str, _Sqlite | _Postgres] = {"sqlite": _Sqlite(), "postgres": _Postgres()}


def _dialect(dialect: Dialect) -> _Sqlite | _Postgres:
    try:
        return _DIALECTS[dialect]
    except KeyError:
        raise StoreError(f"filtersql: unknown dialect {dialect!r}; use sqlite or postgres") from None


def _leaf(d: _Sqlite | _Postgres, node: Compare) -> Fragment:
    if node.op is Op.EXISTS:
        f = d.exists(node.path)
        return f if node.value else Fragment(f"NOT ({f.sql})", f.params)
    if node.op in (Op.EQ, Op.NE):
        f = d.eq(node.path, node.value)
    elif node.op in (Op.IN, Op.NIN):
        f = d.any_of(node.path, node.value)
    elif node.op in RANGE_OPS:
        return d.range(node.path, node.op, node.value)
    else:  # pragma: no cover - every Op is handled above
        raise StoreError(f"filtersql: operator {node.op} has no SQL")
    if node.op in (Op.NE, Op.NIN):  # coalesce: a NULL (a missing field) is "not equal"
        return Fragment(f"NOT coalesce(({f.sql}), false)", f.params)
    return f


def where_sql(node: Node, dialect: Dialect) -> Fragment:
    """The WHERE condition of ``node`` on the table's ``doc`` column (``1 = 1`` for none)."""
    d = _dialect(dialect)

    def walk(n: Node) -> Fragment:
        if isinstance(n, Compare):
            return _leaf(d, n)
        if not n.clauses:
            return Fragment("1 = 1" if isinstance(n, And) else "1 = 0")
        return _join([walk(c) for c in n.clauses], " AND " if isinstance(n, And) else " OR ")

    return walk(node)


def _index_expr(path: Path, dialect: Dialect) -> str:
    """A sort field as its index's expression: coredms's own (``sqlitesql.json_field`` /
    ``pgsql.json_field``), the expressions its indexes are made on."""
    name = ".".join(path)
    if problem := field_path_problem(name):
        raise StoreError(f"sort: {problem}")
    if dialect == "sqlite":
        return sqlitesql.json_field("doc", name)
    from mysimbdp.adapters.coredms import pgsql  # psycopg: on PostgreSQL only, never in a SQLite app

    return pgsql.json_field("doc", name).as_string(None)


def sort_value_sql(sort: SortSpec, dialect: Dialect) -> str:
    """The expression of a row's sort value (the key for ``sort=key``)."""
    if sort.kind is SortKind.KEY:
        return "key"
    if sort.kind is SortKind.INGESTED_AT:
        return "ingested_at"
    return _index_expr(sort.path, dialect)


def _cursor_value_sql(sort: SortSpec, dialect: Dialect) -> str:
    """The sort value as selected for a cursor: SQLite's SQL value as it is; PostgreSQL's as
    text read back by ``_cast``: jsonb's exact JSON text, a timestamp in ISO 8601 UTC to the
    microsecond (read alike whatever a session's DateStyle and TimeZone)."""
    expr = sort_value_sql(sort, dialect)
    if dialect == "sqlite":
        return expr
    if sort.kind is SortKind.INGESTED_AT:
        return f"""to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
    return f"({expr})::text"


def _cast(sort: SortSpec, dialect: Dialect) -> str:
    if dialect == "sqlite" or sort.kind is SortKind.KEY:
        return _dialect(dialect).ph
    return "%s::timestamptz" if sort.kind is SortKind.INGESTED_AT else "%s::jsonb"


def order_sql(sort: SortSpec, dialect: Dialect) -> str:
    """``ORDER BY`` text (without the keywords): the sort value, then the key."""
    direction = "DESC" if sort.descending else "ASC"
    if sort.kind is SortKind.KEY:
        return f"key {direction}"
    nulls = "" if dialect == "sqlite" else (" NULLS LAST" if sort.descending else " NULLS FIRST")
    return f"{sort_value_sql(sort, dialect)} {direction}{nulls}, key {direction}"


def seek_sql(sort: SortSpec, dialect: Dialect, after: Sequence[Any]) -> Fragment:
    """The rows after the position ``after`` (a cursor's ``(sort value, key)``; ``(key,)``
    for ``sort=key``) in :func:`order_sql`'s order; a missing sort value (NULL) comes first
    ascending, last descending."""
    ph = _dialect(dialect).ph
    gt = "<" if sort.descending else ">"
    if sort.kind is SortKind.KEY:
        return Fragment(f"key {gt} {ph}", (after[0],))
    value, key = after
    s, cast = sort_value_sql(sort, dialect), _cast(sort, dialect)
    if value is None:
        if sort.descending:
            return Fragment(f"{s} IS NULL AND key < {ph}", (key,))
        return Fragment(f"({s} IS NULL AND key > {ph}) OR {s} IS NOT NULL", (key,))
    tail = f" OR {s} IS NULL" if sort.descending else ""
    return Fragment(f"{s} {gt} {cast} OR ({s} = {cast} AND key {gt} {ph}){tail}", (value, value, key))


def projection_sql(fields: Sequence[Path], dialect: Dialect) -> Fragment:
    """One column per field: its JSON text, NULL when the document lacks it (assemble
    them with ``domain.readparams.assemble``)."""
    if dialect == "sqlite":
        return Fragment(", ".join("doc -> ?" for _ in fields), tuple(_sqlite_path(p) for p in fields))
    _dialect(dialect)
    return Fragment(", ".join("(doc #> %s::text[])::text" for _ in fields), tuple(list(p) for p in fields))


def page_sql(
    dialect: Dialect,
    table: str,
    *,
    where: Node,
    sort: SortSpec,
    after: Sequence[Any] | None = None,
    fields: Sequence[Path] = (),
    limit: int,
    offset: int = 0,
) -> Fragment:
    """One page: ``SELECT key, <cursor value>, <doc text | projection columns> FROM table``
    under the filter, after the cursor's position, in order, at most ``limit`` rows.
    ``table`` is the quoted (schema-qualified) table name, made by coredms from the
    dataset's checked name. The second column is the row's cursor value (the key again
    for ``sort=key``): a next page's ``after`` is ``(value, key)`` of the last row
    (``(key,)`` for ``sort=key``). ``offset`` skips that many rows first (offset paging)."""
    d = _dialect(dialect)
    cond = where_sql(where, dialect)
    if after is not None:
        seek = seek_sql(sort, dialect, after)
        cond = Fragment(f"({cond.sql}) AND ({seek.sql})", cond.params + seek.params)
    docs = projection_sql(fields, dialect) if fields else Fragment("doc" if dialect == "sqlite" else "doc::text")
    select = f"SELECT key, {_cursor_value_sql(sort, dialect)}, {docs.sql} FROM {table}"
    text = f"{select} WHERE {cond.sql} ORDER BY {order_sql(sort, dialect)} LIMIT {d.ph}"
    if offset:
        return Fragment(f"{text} OFFSET {d.ph}", docs.params + cond.params + (limit, offset))
    return Fragment(text, docs.params + cond.params + (limit,))


def changes_sql(
    dialect: Dialect,
    table: str,
    *,
    where: Node,
    after: Sequence[Any] | None = None,
    fields: Sequence[Path] = (),
    limit: int,
) -> Fragment:
    """The change feed's page: ``SELECT key, seq, <doc | projection>`` in write order
    (``seq``, then key) after the position ``(seq, key)``. On PostgreSQL ``seq`` is the
    writing transaction's id, and only rows below the snapshot's ``xmin`` are read: every
    transaction below it has ended, so no row can later appear before the ones read (run it
    in a REPEATABLE READ transaction, where the snapshot is the query's own)."""
    d = _dialect(dialect)
    cond = where_sql(where, dialect)
    parts = [cond]
    seq, cast = ("seq", "?") if dialect == "sqlite" else ("seq", "%s::xid8")
    if dialect == "postgres":
        parts.append(Fragment("seq < pg_snapshot_xmin(pg_current_snapshot())"))
    if after is not None:
        parts.append(Fragment(f"{seq} > {cast} OR ({seq} = {cast} AND key > {d.ph})", (after[0], after[0], after[1])))
    joined = _join(parts, " AND ")
    docs = projection_sql(fields, dialect) if fields else Fragment("doc" if dialect == "sqlite" else "doc::text")
    value = "seq" if dialect == "sqlite" else "seq::text"
    text = f"SELECT key, {value}, {docs.sql} FROM {table} WHERE {joined.sql} ORDER BY seq, key LIMIT {d.ph}"
    return Fragment(text, docs.params + joined.params + (limit,))


def count_sql(dialect: Dialect, table: str, where: Node) -> Fragment:
    """``SELECT count(*)`` of the documents the filter matches."""
    cond = where_sql(where, dialect)
    return Fragment(f"SELECT count(*) FROM {table} WHERE {cond.sql}", cond.params)
