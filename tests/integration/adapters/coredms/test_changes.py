"""The change feed (``DocumentStore.changes``, the read API's ``since=``) on SQLite and
PostgreSQL: write order in every write mode, tables made before ``seq``, and concurrent
writers on PostgreSQL whose commits come out of transaction-id order."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from mysimbdp.adapters.coredms import CoreDmsAdmin, DocumentStore, open_admin, open_store, sqlite_path
from mysimbdp.domain.docfilter import parse_filter
from mysimbdp.domain.writespec import WriteMode, WriteSpec
from tests.conftest import POSTGRES_URL

MERGE = WriteSpec(WriteMode.MERGE)
REPLACE = WriteSpec(WriteMode.REPLACE)


@pytest.fixture
def url(backend: str, tmp_path: Path, pg_prefix: str) -> Iterator[str]:
    admin_url = f"sqlite:///{tmp_path / 'coredms'}" if backend == "sqlite" else POSTGRES_URL
    admin: CoreDmsAdmin = open_admin(admin_url, pg_prefix=pg_prefix)
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


def _rows(*pairs: tuple[str, Any]) -> list[tuple[str, bytes]]:
    return [(key, orjson.dumps(doc)) for key, doc in pairs]


def _follow(store: DocumentStore, after: Any = None, want: int = 0) -> tuple[list[tuple[str, Any]], Any]:
    """The changes after ``after``, 3 a page, until ``want`` came (PostgreSQL's feed shows a
    commit once the cluster's older transactions ended: another test's may run a moment) and
    none more: (key, document) pairs and the last position."""
    seen: list[tuple[str, Any]] = []
    deadline = time.monotonic() + 10
    while True:
        rows = store.changes("t", after=after, limit=3)
        seen += [(row.position[1], row.doc) for row in rows]
        after = rows[-1].position if rows else after
        if not rows and (len(seen) >= want or time.monotonic() > deadline):
            return seen, after
        if not rows:
            time.sleep(0.02)


def test_changes_come_in_write_order_in_every_mode(store: DocumentStore) -> None:
    """Appends in order, a merge's update comes again after them, a replace's swap brings the
    whole new content after everything before; a consumer's position carries on."""
    store.write("t", _rows(("b", {"v": 1}), ("a", {"v": 1})), "f1", MERGE)
    store.write("t", _rows(("c", {"v": 1})), "f2", MERGE)
    first, at = _follow(store, want=3)
    keys = [key for key, _ in first]  # in a batch: its order on SQLite, the key's on PostgreSQL
    assert sorted(keys[:2]) == ["a", "b"] and keys[2] == "c"
    store.write("t", _rows(("a", {"v": 2}), ("c", {"v": 1})), "f3", MERGE)  # c: unchanged, no change
    again, at = _follow(store, at, want=1)
    assert again == [("a", {"v": 2})]
    store.write("t", _rows(("x", {"v": 9}), ("y", {"v": 9})), "f4", REPLACE, generation="g1")
    assert _follow(store, at)[0] == []  # staged, not yet the dataset
    assert store.replace("t", "g1") == 2
    swapped, at = _follow(store, at, want=2)
    assert swapped == [("x", {"v": 9}), ("y", {"v": 9})]
    store.stage("t", "g2")
    assert store.replace("t", "g2") == 0  # an empty generation: the numbering goes on
    store.write("t", _rows(("z", {"v": 1})), "f5")
    assert _follow(store, at, want=1)[0] == [("z", {"v": 1})]


def test_changes_take_a_filter_and_fields(store: DocumentStore) -> None:
    """A filter and a projection apply to the feed as to pages; an unknown dataset has none."""
    store.write("t", _rows(("a", {"v": 1, "w": 1}), ("b", {"v": 2, "w": 2})), "f1")
    deadline = time.monotonic() + 10
    while not (rows := store.changes("t", where=parse_filter({"v": 2}), fields=(("w",),), limit=10)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert [(row.position[1], row.doc) for row in rows] == [("b", {"w": 2})]
    assert store.changes("nothing", limit=5) == []


def test_a_table_made_before_seq_gets_it_numbered_on_first_open(url: str, backend: str) -> None:
    """A dataset table of the old layout (no seq) gets the column, every row numbered, at the
    first read, and writes after it come after them."""
    if backend == "sqlite":
        with sqlite3.connect(sqlite_path(url)) as conn:
            conn.execute(
                'CREATE TABLE "ds_t" (key TEXT PRIMARY KEY, doc TEXT NOT NULL, source TEXT NOT NULL,'
                " ingested_at TEXT NOT NULL) WITHOUT ROWID"
            )
            conn.executemany(
                'INSERT INTO "ds_t" VALUES (?, ?, ?, ?)',
                [
                    ("b", '{"v":1}', "f", "2026-01-01T00:00:00.000+00:00"),
                    ("a", '{"v":2}', "f", "2026-01-02T00:00:00.000+00:00"),
                ],
            )
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                'CREATE TABLE ds_t (key text COLLATE "C" PRIMARY KEY, doc jsonb NOT NULL, source text NOT NULL,'
                " ingested_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute("""INSERT INTO ds_t (key, doc, source) VALUES ('b', '{"v":1}', 'f'), ('a', '{"v":2}', 'f')""")
    store = open_store(url)
    try:
        seen, at = _follow(store, want=2)
        assert sorted(key for key, _ in seen) == ["a", "b"]
        store.write("t", _rows(("c", {"v": 3})), "f2")
        assert _follow(store, at, want=1)[0] == [("c", {"v": 3})]
    finally:
        store.close()


# PostgreSQL only: SQLite serializes its writers, so its numbers are in commit order by construction
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_concurrent_writers_on_postgres_are_followed_exactly_once(url: str, backend: str) -> None:
    """Writers commit out of transaction-id order (one holds its transaction open while
    others commit); a consumer following the feed all along sees every document exactly
    once: a late commit with a smaller id is never skipped."""
    setup = open_store(url)
    setup.write("t", _rows(("seed", {"v": 0})), "f0")
    setup.close()
    keys = {"seed"}
    errors: list[BaseException] = []

    def slow_writer(n: int) -> None:
        try:
            with psycopg.connect(url) as conn:  # one transaction: its id is taken first, it commits last
                for i in range(3):
                    conn.execute("INSERT INTO ds_t (key, doc, source) VALUES (%s, '{}', 'slow')", (f"slow{n}-{i}",))
                    time.sleep(0.05)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def fast_writer(n: int) -> None:
        try:
            store = open_store(url)
            try:
                for batch in range(10):
                    store.write("t", _rows(*((f"w{n}-{batch}-{i}", {"i": i}) for i in range(20))), "fast")
            finally:
                store.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=slow_writer, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=fast_writer, args=(n,)) for n in range(3)]
    keys |= {f"slow{n}-{i}" for n in range(3) for i in range(3)}
    keys |= {f"w{n}-{b}-{i}" for n in range(3) for b in range(10) for i in range(20)}
    consumer = open_store(url)
    seen: list[str] = []
    after = None
    try:
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            rows = consumer.changes("t", after=after, limit=17)
            seen += [row.position[1] for row in rows]
            if rows:
                after = rows[-1].position
        deadline = time.monotonic() + 30  # the horizon is the cluster's oldest running transaction
        while set(seen) != keys and time.monotonic() < deadline:
            rows = consumer.changes("t", after=after, limit=17)
            seen += [row.position[1] for row in rows]
            after = rows[-1].position if rows else after
            if not rows:
                time.sleep(0.05)
    finally:
        for thread in threads:
            thread.join()
        consumer.close()
    assert not errors
    assert len(seen) == len(set(seen)) and set(seen) == keys
