"""coredms.filtersql on real SQLite and PostgreSQL, in a table shaped like coredms's: every
filter returns exactly the documents a pure-Python reference evaluator of the same filter
returns (hand-picked filters and random ones), keyset paging visits every document once while
new ones arrive, projections and counts agree, and SQL in a field name or value does nothing."""

from __future__ import annotations

import operator
import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mysimbdp.adapters.coredms import filtersql, sqlitesql
from mysimbdp.adapters.coredms.filtersql import Dialect, Fragment
from mysimbdp.domain.cursor import CursorCodec, CursorScope, cursor_key
from mysimbdp.domain.docfilter import And, Node, Op, Or, filter_digest, parse_filter
from mysimbdp.domain.readparams import SortKind, SortSpec, assemble, parse_fields, parse_sort
from mysimbdp.errors import FilterError

_GONE = object()  # a missing field, in the reference evaluator and the documents' recipe
POOL: list[Any] = [0, 1, 1.0, -3, 2.5, 10, 1e20, "1", "a", "B", "é", "", "zz", True, False, None, [1, 2], {"x": 1}]
PATHS = [("a",), ("m", "t"), ("m", "s"), ("m",), ("name",), ("nope",), ("we'ird [key]",), ("m", "deep", "er")]


def documents(n: int, seed: int, prefix: str = "k") -> dict[str, dict[str, Any]]:
    """``n`` documents with nested fields, mixed types and missing fields, by key."""
    rng = random.Random(seed)
    docs: dict[str, dict[str, Any]] = {}
    for i in range(n):
        doc: dict[str, Any] = {"name": rng.choice(["Oslo", "oslo", "Łódź", "Zürich", "", "a'b", "😀"])}
        for field, value in (("a", rng.choice([*POOL, _GONE])), ("we'ird [key]", rng.choice([1, "x", _GONE, _GONE]))):
            if value is not _GONE:
                doc[field] = value
        kind = rng.random()
        if kind < 0.7:
            doc["m"] = {k: v for k in ("t", "s") if (v := rng.choice([*POOL, _GONE])) is not _GONE}
            if rng.random() < 0.3:
                doc["m"]["deep"] = {"er": rng.choice(POOL)}
        elif kind < 0.85:
            doc["m"] = rng.choice([5, "m", [1], None])
        docs[f"{prefix}{i:03d}"] = doc
    return docs


# -- the reference evaluator --------------------------------------------------------------------
def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for segment in path:
        if not isinstance(doc, dict) or segment not in doc:
            return _GONE
        doc = doc[segment]
    return doc


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _eq(v: Any, target: Any) -> bool:
    if target is None:
        return v is _GONE or v is None
    if isinstance(target, bool):
        return isinstance(v, bool) and v == target
    if _num(target):
        return _num(v) and v == target
    return isinstance(v, str) and v == target


_RANGE: dict[Op, Callable[[Any, Any], bool]] = {Op.GT: operator.gt, Op.GTE: operator.ge, Op.LT: operator.lt}
_RANGE[Op.LTE] = operator.le


def matches(node: Node, doc: dict[str, Any]) -> bool:
    if isinstance(node, And):
        return all(matches(c, doc) for c in node.clauses)
    if isinstance(node, Or):
        return any(matches(c, doc) for c in node.clauses)
    v = _get(doc, node.path)
    if node.op is Op.EXISTS:
        return (v is not _GONE) is node.value
    if node.op in (Op.EQ, Op.NE):
        return _eq(v, node.value) is (node.op is Op.EQ)
    if node.op in (Op.IN, Op.NIN):
        return any(_eq(v, t) for t in node.value) is (node.op is Op.IN)
    same = (_num(v) and _num(node.value)) or (isinstance(v, str) and isinstance(node.value, str))
    return bool(same and _RANGE[node.op](v, node.value))


# -- the two backends --------------------------------------------------------------------------
class Db:
    def __init__(self, dialect: Dialect, conn: Any, table: str) -> None:
        self.dialect, self.conn, self.table = dialect, conn, table
        self.docs: dict[str, dict[str, Any]] = {}

    def rows(self, fragment: Fragment) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.conn.execute(fragment.sql, fragment.params).fetchall()]

    def insert(self, docs: dict[str, dict[str, Any]], ingested_at: str = "2026-12-04T10:00:00.000+00:00") -> None:
        rows = [(key, orjson.dumps(doc).decode(), "test", ingested_at) for key, doc in docs.items()]
        if self.dialect == "sqlite":
            self.conn.executemany(f"INSERT INTO {self.table} VALUES (?, ?, ?, ?)", rows)
        else:
            with self.conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {self.table} VALUES (%s, %s::jsonb, %s, %s::timestamptz)", rows)
        self.docs.update(docs)

    def keys(self, node: Node) -> set[str]:
        return {
            row[0]
            for row in self.rows(
                filtersql.page_sql(self.dialect, self.table, where=node, sort=SortSpec(), limit=10_000)
            )
        }


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
        conn.execute(
            'CREATE TABLE "ds_t" (key TEXT PRIMARY KEY, doc TEXT NOT NULL, source TEXT NOT NULL,'
            " ingested_at TEXT NOT NULL) WITHOUT ROWID"
        )
        for path in ("a", "m.t"):  # the expression indexes coredms makes (coredms.sqlitesql.index_sql)
            conn.execute(f'CREATE INDEX "ix_{path}" ON "ds_t" (json_extract(doc, \'$.{path}\'))')
        handle = Db("sqlite", conn, '"ds_t"')
        try:
            yield handle
        finally:
            conn.close()
        return
    url, prefix = request.getfixturevalue("postgres_admin_url"), request.getfixturevalue("pg_prefix")
    schema = f"{prefix}_f"
    pg = psycopg.connect(url, autocommit=True)
    pg.execute(f'CREATE SCHEMA "{schema}"')
    pg.execute(
        f'CREATE TABLE "{schema}"."ds_t" (key text COLLATE "C" PRIMARY KEY, doc jsonb NOT NULL,'
        " source text NOT NULL, ingested_at timestamptz NOT NULL DEFAULT now())"
    )
    pg.execute(f'CREATE INDEX ON "{schema}"."ds_t" ((doc -> \'a\'))')
    pg.execute(f'CREATE INDEX ON "{schema}"."ds_t" ((doc #> \'{{m,t}}\'))')
    handle = Db("postgres", pg, f'"{schema}"."ds_t"')
    try:
        yield handle
    finally:
        pg.execute(f'DROP SCHEMA "{schema}" CASCADE')
        pg.close()


@pytest.fixture
def loaded(db: Db) -> Db:
    db.insert(documents(30, seed=15), "2026-12-04T10:00:00.000+00:00")
    db.insert(documents(25, seed=16, prefix="j"), "2026-12-04T11:00:00.000+00:00")
    return db


def expected(db: Db, node: Node) -> set[str]:
    return {key for key, doc in db.docs.items() if matches(node, doc)}


HAND_PICKED: list[dict[str, Any]] = [
    {},
    *({"a": v} for v in POOL if not isinstance(v, list | dict)),
    *({"a": {"$ne": v}} for v in (1, "a", None, True)),
    *({"m.t": {op: v}} for op in ("$gt", "$gte", "$lt", "$lte") for v in (0, 1, 2.5, "", "a", "B", "é")),
    {"a": {"$in": [1, "a", True, None]}},
    {"a": {"$in": []}},
    {"a": {"$nin": [1, "a", True, None]}},
    {"a": {"$nin": []}},
    {"a": {"$exists": True}},
    {"m.t": {"$exists": False}},
    {"m": None},
    {"m.deep.er": {"$gte": 0}},
    {"name": {"$gte": "Z"}},
    {"name": "Łódź"},
    {"we'ird [key]": 1},
    {"m.t": {"$gt": 0, "$lt": 10}},
    {"$or": [{"a": {"$lt": 1}}, {"m.s": {"$gte": "a"}}]},
    {"$and": [{"a": {"$exists": True}}, {"$or": [{"m.t": None}, {"name": "Oslo"}]}]},
    {"a": {"$gt": 1e19}},
]


@pytest.mark.parametrize("source", HAND_PICKED, ids=[orjson.dumps(f).decode() for f in HAND_PICKED])
def test_each_operator_matches_the_reference(loaded: Db, source: dict[str, Any]) -> None:
    """Each operator on numbers, strings, booleans, null, nested and missing fields: the SQL
    returns exactly the documents the reference evaluator does, and count agrees."""
    node = parse_filter(source)
    want = expected(loaded, node)
    assert loaded.keys(node) == want
    assert loaded.rows(filtersql.count_sql(loaded.dialect, loaded.table, node)) == [(len(want),)]


_scalars = st.sampled_from([v for v in POOL if not isinstance(v, list | dict)])
_paths = st.sampled_from([".".join(p) for p in PATHS])
_leaf = st.one_of(
    st.builds(lambda p, v: {p: v}, _paths, _scalars),
    st.builds(lambda p, o, v: {p: {o: v}}, _paths, st.sampled_from(["$eq", "$ne"]), _scalars),
    st.builds(
        lambda p, o, v: {p: {o: v}},
        _paths,
        st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
        st.sampled_from([0, 1, 2.5, -3, "", "a", "B", "zz"]),
    ),
    st.builds(lambda p, o, v: {p: {o: v}}, _paths, st.sampled_from(["$in", "$nin"]), st.lists(_scalars, max_size=4)),
    st.builds(lambda p, v: {p: {"$exists": v}}, _paths, st.booleans()),
)
_filters = st.recursive(
    _leaf,
    lambda inner: st.builds(
        lambda o, xs: {o: xs}, st.sampled_from(["$and", "$or"]), st.lists(inner, min_size=1, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=_filters)
def test_random_filters_match_the_reference(loaded: Db, source: dict[str, Any]) -> None:
    """Random filters of every operator, nested in $and/$or: SQL and reference agree."""
    node = parse_filter(source)
    assert loaded.keys(node) == expected(loaded, node)


def test_a_filter_on_nothing_but_shapes_compiles_to_the_same_sql() -> None:
    """Paths that are no plain field paths are bound: other values and such paths, same text."""
    for dialect in ("sqlite", "postgres"):
        one = filtersql.where_sql(parse_filter({"a-1": {"$gt": 1}, "b.c d": {"$in": [1, 2]}}), dialect)
        two = filtersql.where_sql(parse_filter({"x; DROP": {"$gt": 5}, "y.'z": {"$in": [3, 4]}}), dialect)
        assert one.sql == two.sql and one.params != two.params


def test_a_filter_on_an_indexed_field_uses_its_index() -> None:
    """A plain field path is compared as the index's own expression, so the index serves it."""
    assert "json_extract(doc, '$.a.b')" in filtersql.where_sql(parse_filter({"a.b": 1}), "sqlite").sql
    assert "(doc -> 'a')" in filtersql.where_sql(parse_filter({"a": 1}), "postgres").sql
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (key TEXT PRIMARY KEY, doc TEXT)")
    conn.execute(f"CREATE INDEX t_a ON t ({sqlitesql.json_field('doc', 'a')})")
    where = filtersql.where_sql(parse_filter({"a": "x"}), "sqlite")
    plan = conn.execute(f"EXPLAIN QUERY PLAN SELECT doc FROM t WHERE {where.sql}", where.params).fetchall()
    conn.close()
    assert any("USING INDEX t_a" in row[-1] for row in plan), plan


def test_sql_in_field_names_and_values_does_nothing(loaded: Db) -> None:
    """A field name or a value holding SQL is a bound parameter: no match, the table intact."""
    for source in (
        {"a'); DROP TABLE ds_t; --": 1},
        {"a') OR 1=1 --": {"$exists": False}},
        {"name": "x' OR '1'='1"},
        {"name": {"$in": ["') OR true --", "Oslo"]}},
        {"m.t') OR ('1'='1": {"$gt": "a"}},
    ):
        node = parse_filter(source)
        assert loaded.keys(node) == expected(loaded, node)
    assert loaded.rows(filtersql.count_sql(loaded.dialect, loaded.table, parse_filter({})))[0][0] == len(loaded.docs)
    with pytest.raises(FilterError, match="holds a quote"):  # a '"' would end SQLite's quoted path label
        parse_filter({'a") OR 1=1 --': 1})


def test_projection_returns_the_fields_asked_for(loaded: Db) -> None:
    """fields=name,m.t,nope: each document with those fields only, nested as stored; missing ones absent."""
    fields = parse_fields("name,m.t,nope")
    rows = loaded.rows(
        filtersql.page_sql(
            loaded.dialect, loaded.table, where=parse_filter({}), sort=SortSpec(), fields=fields, limit=1000
        )
    )
    for key, _, *texts in rows:
        want: dict[str, Any] = {}
        doc = loaded.docs[key]
        want["name"] = doc["name"]
        if (t := _get(doc, ("m", "t"))) is not _GONE:
            want["m"] = {"t": t}
        # orjson again: an integer beyond 64 bits (PostgreSQL keeps 1e20 as digits) comes as a Fragment
        assert orjson.loads(orjson.dumps(assemble(fields, tuple(texts)))) == want


CODEC = CursorCodec([cursor_key("test secret")])


def _page_through(db: Db, sort: SortSpec, node: Node, limit: int, between: Callable[[int], None]) -> list[str]:
    """Every page's keys, each next page after the last row's position, sent through a cursor."""
    scope = CursorScope("acme", "t", sort.text, filter_digest(node))
    seen: list[str] = []
    after: tuple[Any, ...] | None = None
    for n in range(1000):
        rows = db.rows(filtersql.page_sql(db.dialect, db.table, where=node, sort=sort, after=after, limit=limit))
        seen += [row[0] for row in rows]
        if len(rows) < limit:
            return seen
        last = rows[-1]
        token = CODEC.encode(scope, (last[0],) if sort.kind is SortKind.KEY else (last[1], last[0]))
        after = CODEC.decode(token, scope)
        between(n)
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("sort_text", ["key", "-key", "ingested_at", "-ingested_at", "a", "-a", "m.t", "-m.t"])
@pytest.mark.parametrize("source", [{}, {"a": {"$ne": None}}])
def test_keyset_paging_visits_each_document_once_while_others_arrive(
    loaded: Db, sort_text: str, source: dict[str, Any]
) -> None:
    """Pages of 7 by each sort (mixed types, missing values, ties on ingested_at), new documents
    inserted between pages: every document there at the start comes exactly once, in the order
    of one query over all, and none twice."""
    sort, node = parse_sort(sort_text, indexed={"a", "m.t"}), parse_filter(source)
    whole = filtersql.page_sql(loaded.dialect, loaded.table, where=node, sort=sort, limit=100_000)
    before = [row[0] for row in loaded.rows(whole)]
    assert set(before) == expected(loaded, node)

    def arrive(n: int) -> None:
        loaded.insert(
            documents(4, seed=100 + n, prefix=f"{chr(ord('a') + n % 26)}{n}_"), f"2026-12-04T1{n % 10}:30:00.000+00:00"
        )

    seen = _page_through(loaded, sort, node, 7, arrive)
    assert len(seen) == len(set(seen))
    assert [key for key in seen if key in set(before)] == before


def test_sort_field_is_the_index_expression_and_sqlite_uses_the_index(loaded: Db) -> None:
    """A sort field is written as coredms's index expression (sqlitesql/pgsql.json_field), so
    the index can serve it: SQLite's plan orders by the index, no temporary B-tree."""
    sort = parse_sort("m.t", indexed={"m.t"})
    value_sql = filtersql.sort_value_sql(sort, loaded.dialect)
    if loaded.dialect == "sqlite":
        from mysimbdp.adapters.coredms import sqlitesql

        assert value_sql == sqlitesql.json_field("doc", "m.t")
        page = filtersql.page_sql("sqlite", loaded.table, where=parse_filter({}), sort=sort, limit=5)
        plan = " ".join(str(row[-1]) for row in loaded.rows(Fragment("EXPLAIN QUERY PLAN " + page.sql, page.params)))
        assert "ix_m.t" in plan and "TEMP B-TREE" not in plan
    else:
        from mysimbdp.adapters.coredms import pgsql

        assert value_sql == pgsql.json_field("doc", "m.t").as_string(loaded.conn)


@pytest.mark.parametrize("db", ["postgres"], indirect=True)  # DateStyle and TimeZone are PostgreSQL's
def test_ingested_at_cursors_do_not_depend_on_the_session_date_style(loaded: Db) -> None:
    """PostgreSQL: a cursor made in one session's DateStyle and TimeZone seeks right in another's."""
    sort, node = parse_sort("-ingested_at"), parse_filter({})
    before = [
        row[0] for row in loaded.rows(filtersql.page_sql("postgres", loaded.table, where=node, sort=sort, limit=999))
    ]
    styles = iter(["SQL, DMY", "German", "Postgres, MDY", "ISO"] * 10)

    def restyle(n: int) -> None:
        loaded.conn.execute(f"SET DateStyle = '{next(styles)}'")
        loaded.conn.execute("SET TimeZone = 'Asia/Tokyo'" if n % 2 else "SET TimeZone = 'America/New_York'")

    assert _page_through(loaded, sort, node, 4, restyle) == before
