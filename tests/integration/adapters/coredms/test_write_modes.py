"""coredms write modes and indexes on real SQLite and PostgreSQL: append keeps the first
write, merge upserts (by arrival, or by an order field that a late older record cannot
beat), replace swaps a generation in atomically, and the profile's indexes exist."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest

from mysimbdp.adapters.coredms import DocumentStore, open_admin, open_store, sqlite_path
from mysimbdp.domain.writespec import APPEND, WriteMode, WriteSpec

MERGE = WriteSpec(WriteMode.MERGE)
MERGE_BY_TS = WriteSpec(WriteMode.MERGE, "ts")
REPLACE = WriteSpec(WriteMode.REPLACE, indexes=(("city",),))


@pytest.fixture
def url(coredms_url: str, pg_prefix: str) -> Iterator[str]:
    admin = open_admin(coredms_url, pg_prefix=pg_prefix)
    try:
        yield admin.provision("acme")
    finally:
        admin.close()


@pytest.fixture
def store(url: str) -> Iterator[DocumentStore]:
    handle = open_store(url)
    try:
        yield handle
    finally:
        handle.close()


def _rows(*docs: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [(str(doc["id"]), orjson.dumps(doc)) for doc in docs]


def _docs(store: DocumentStore, dataset: str = "t") -> dict[str, Any]:
    return {str(doc["id"]): doc for doc in store.documents(dataset, limit=100)}


def test_append_keeps_the_first_write(store: DocumentStore) -> None:
    """Append (the default) ignores a correction under a stored key: re-runs are no-ops."""
    assert store.write("t", _rows({"id": 1, "v": "a"}), "f1", APPEND) == 1
    assert store.write("t", _rows({"id": 1, "v": "b"}, {"id": 2, "v": "c"}), "f2") == 1
    assert _docs(store) == {"1": {"id": 1, "v": "a"}, "2": {"id": 2, "v": "c"}}


def test_merge_without_order_by_last_arrival_wins(store: DocumentStore) -> None:
    """Merge without order_by: a correction replaces the stored record; the same again changes nothing."""
    assert store.write("t", _rows({"id": 1, "v": "a"}, {"id": 2, "v": "x"}), "f1", MERGE) == 2
    assert store.write("t", _rows({"id": 1, "v": "b"}, {"id": 2, "v": "x"}), "f2", MERGE) == 1
    assert store.write("t", _rows({"id": 1, "v": "b"}, {"id": 2, "v": "x"}), "f2", MERGE) == 0  # a re-run
    assert _docs(store) == {"1": {"id": 1, "v": "b"}, "2": {"id": 2, "v": "x"}}


def test_merge_by_order_a_late_older_record_does_not_overwrite(store: DocumentStore) -> None:
    """Merge with order_by: newer (or equal) order values win, a late older one is ignored,
    a stored record without the field is replaced, and a re-run changes nothing."""
    store.write("t", _rows({"id": 1, "ts": 10, "v": "a"}, {"id": 2, "v": "old"}, {"id": 3, "ts": 5}), "f1")
    batch = _rows({"id": 1, "ts": 20, "v": "new"}, {"id": 2, "ts": 1, "v": "has ts"}, {"id": 3, "v": "no ts"})
    assert store.write("t", batch, "f2", MERGE_BY_TS) == 2
    late = _rows({"id": 1, "ts": 15, "v": "late"}, {"id": 2, "ts": 1, "v": "has ts"})
    assert store.write("t", late, "f3", MERGE_BY_TS) == 0
    assert store.write("t", batch, "f2", MERGE_BY_TS) == 0  # the same file again
    assert _docs(store) == {
        "1": {"id": 1, "ts": 20, "v": "new"},
        "2": {"id": 2, "ts": 1, "v": "has ts"},
        "3": {"id": 3, "ts": 5},
    }


def test_merge_applies_a_keys_versions_within_one_batch_in_order(store: DocumentStore) -> None:
    """A key twice in one batch: without order_by the later version wins; with it, the newer."""
    store.write("t", _rows({"id": 1, "v": "a"}, {"id": 1, "v": "b"}), "f1", MERGE)
    assert _docs(store)["1"] == {"id": 1, "v": "b"}
    store.write("t", _rows({"id": 2, "ts": 9, "v": "new"}, {"id": 2, "ts": 3, "v": "old"}), "f1", MERGE_BY_TS)
    assert _docs(store)["2"] == {"id": 2, "ts": 9, "v": "new"}


def test_merge_compares_iso_times_and_nested_fields(store: DocumentStore) -> None:
    """order_by may be a nested path; ISO 8601 times compare as text."""
    spec = WriteSpec(WriteMode.MERGE, "meta.at")
    store.write("t", _rows({"id": 1, "meta": {"at": "2026-01-02T00:00:00Z"}, "v": 1}), "f1", spec)
    store.write("t", _rows({"id": 1, "meta": {"at": "2026-01-01T00:00:00Z"}, "v": 0}), "f2", spec)
    store.write("t", _rows({"id": 1, "meta": {"at": "2026-01-03T00:00:00Z"}, "v": 2}), "f3", spec)
    assert _docs(store)["1"]["v"] == 2


def _indexes(url: str, table: str) -> list[str]:
    """The index definitions of ``table`` (its primary key and write-order index ``sq_`` aside)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(url)) as conn:
            rows = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,))
            return sorted(sql for (sql,) in rows if sql and '"sq_' not in sql)
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,)).fetchall()
        return sorted(str(d) for (d,) in found if "_pkey" not in str(d) and " sq_" not in str(d))


def test_indexes_are_made_with_the_table_and_when_added_later(store: DocumentStore, url: str) -> None:
    """The spec's expression indexes exist once the dataset is written; one added later is made at the next write."""
    store.write("t", _rows({"id": 1, "city": "Oslo", "meta": {"at": 1}}), "f1", WriteSpec(indexes=(("city",),)))
    assert len(_indexes(url, "ds_t")) == 1
    later = open_store(url)  # a new connection (a next run) with one more index in the profile
    try:
        spec = WriteSpec(indexes=(("city",), ("meta.at", "city")))
        later.write("t", _rows({"id": 2, "city": "Rome", "meta": {"at": 2}}), "f2", spec)
    finally:
        later.close()
    defs = _indexes(url, "ds_t")
    assert len(defs) == 2
    expected = ["city", "meta.at"] if url.startswith("sqlite") else ["'city'", "'{meta,at}'"]
    assert all(any(part in d for d in defs) for part in expected), defs


def test_replace_swaps_the_generation_in_atomically(store: DocumentStore, url: str) -> None:
    """A reader during the run sees the old content whole; after the swap only the new, with its indexes;
    a second swap of the same generation changes nothing."""
    store.write("t", _rows(*({"id": i, "city": "old"} for i in range(50))), "f0")
    store.stage("t", "file1")
    stop = threading.Event()
    seen: set[tuple[int, str]] = set()

    def read() -> None:
        reader = open_store(url)
        try:
            while not stop.is_set():
                docs = reader.documents("t", limit=1000)
                seen.add((len(docs), ",".join(sorted({d["city"] for d in docs}))))
        finally:
            reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for first in range(0, 30, 10):  # the run's batches
            rows = _rows(*({"id": i, "city": "new"} for i in range(first, first + 10)))
            store.write("t", rows, "file1", REPLACE, generation="file1")
            assert store.count("t") == 50  # not yet
        assert store.replace("t", "file1", REPLACE) == 30
        assert store.count("t") == 30
    finally:
        stop.set()
        thread.join()
    assert seen <= {(50, "old"), (30, "new")}, seen
    assert store.replace("t", "file1", REPLACE) is None and store.count("t") == 30
    assert store.datasets() == ["t"] and len(_indexes(url, "ds_t")) == 1


def test_a_discarded_generation_changes_nothing(store: DocumentStore) -> None:
    """A failed file's generation is dropped; the dataset keeps its content."""
    store.write("t", _rows({"id": 1}), "f0")
    store.stage("t", "bad")
    store.write("t", _rows({"id": 2}), "bad", REPLACE, generation="bad")
    store.discard("t", "bad")
    assert store.replace("t", "bad", REPLACE) is None
    assert _docs(store) == {"1": {"id": 1}}
