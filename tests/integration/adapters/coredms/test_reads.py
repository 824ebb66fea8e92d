"""The stores' read API (query, a filtered count, stats) on real SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from mysimbdp.adapters.coredms import CoreDmsAdmin, DocumentStore, open_admin, open_store
from mysimbdp.domain.docfilter import parse_filter
from mysimbdp.domain.readparams import parse_fields, parse_sort
from mysimbdp.domain.writespec import WriteSpec
from tests.conftest import POSTGRES_URL

BIG = "123456789012345678901234567890"
INDEXED = WriteSpec(indexes=(("n",), ("m.t",)))


@pytest.fixture
def store(backend: str, tmp_path: Path, pg_prefix: str) -> Iterator[DocumentStore]:
    url = f"sqlite:///{tmp_path / 'coredms'}" if backend == "sqlite" else POSTGRES_URL
    admin: CoreDmsAdmin = open_admin(url, pg_prefix=pg_prefix)
    handle = open_store(admin.provision("acme"))
    try:
        yield handle
    finally:
        handle.close()
        admin.close()


def _write(store: DocumentStore, n: int, dataset: str = "things") -> None:
    docs = [(f"k{i:03d}", orjson.dumps({"n": i % 7, "m": {"t": f"v{i % 3}"}, "i": i})) for i in range(n)]
    store.write(dataset, docs, source="f1", spec=INDEXED)


def test_query_filters_projects_and_sorts(store: DocumentStore) -> None:
    """A filter on a nested field, a projection and a sort on an indexed field."""
    _write(store, 30)
    where = parse_filter({"m.t": "v1", "n": {"$gte": 3}})
    rows = store.query("things", where=where, sort=parse_sort("-n", {"n"}), fields=parse_fields("i,m.t"), limit=100)
    expected = sorted(((i % 7, f"k{i:03d}", i) for i in range(30) if i % 3 == 1 and i % 7 >= 3), reverse=True)
    assert [row.doc for row in rows] == [{"i": i, "m": {"t": "v1"}} for _, _, i in expected]
    assert store.count("things", where) == len(expected) and store.count("things") == 30


def test_keyset_pages_visit_every_document_once(store: DocumentStore) -> None:
    """Paging with each page's last position sees each document once, in order."""
    _write(store, 25)
    sort = parse_sort("n", {"n"})
    seen: list[int] = []
    after = None
    while rows := store.query("things", sort=sort, after=after, limit=4):
        seen += [row.doc["i"] for row in rows]
        after = rows[-1].position
    assert sorted(seen) == list(range(25)) and len(seen) == 25
    assert [r.position for r in store.query("things", limit=2)] == [("k000",), ("k001",)]


def test_unknown_dataset_reads_empty(store: DocumentStore) -> None:
    """A dataset never written has no rows and counts 0 under any filter."""
    assert store.query("nothing", limit=5) == [] and store.count("nothing", parse_filter({"a": 1})) == 0


def test_big_integers_come_back_exact(store: DocumentStore) -> None:
    """A 30-digit number survives a whole-document read and a projection."""
    store.write("nums", [("k1", f'{{"big":{BIG},"x":1}}'.encode())], source="f")
    whole = store.query("nums", limit=1)[0].doc
    projected = store.query("nums", fields=parse_fields("big"), limit=1)[0].doc
    assert orjson.dumps(whole, option=orjson.OPT_SORT_KEYS) == f'{{"big":{BIG},"x":1}}'.encode()
    assert orjson.dumps(projected) == f'{{"big":{BIG}}}'.encode()


def test_stats_count_bytes_and_last_write(store: DocumentStore) -> None:
    """Each dataset with its documents, a size and the latest write, in UTC."""
    _write(store, 10)
    _write(store, 3, "other")
    stats = {s.dataset: s for s in store.stats()}
    assert set(stats) == {"things", "other"}
    assert (stats["things"].count, stats["other"].count) == (10, 3)
    assert stats["things"].size_bytes > 0
    assert stats["things"].last_write.endswith("Z")
    datetime.fromisoformat(stats["things"].last_write)
