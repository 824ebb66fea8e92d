"""coredms against real SQLite files and a real PostgreSQL, through the same two ports."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from mysimbdp.adapters.coredms import (
    CoreDmsAdmin,
    DocumentInvalid,
    DocumentStore,
    open_admin,
    open_store,
    sqlite_path,
)
from mysimbdp.adapters.coredms.sqlite import SqliteStore
from mysimbdp.domain.keys import record_key
from mysimbdp.errors import KeyFieldMissing, StoreError, StoreUnavailable
from tests.conftest import POSTGRES_URL


@pytest.fixture
def admin(backend: str, tmp_path: Path, pg_prefix: str) -> Iterator[CoreDmsAdmin]:
    url = f"sqlite:///{tmp_path / 'coredms'}" if backend == "sqlite" else POSTGRES_URL
    admin = open_admin(url, pg_prefix=pg_prefix)
    yield admin
    admin.close()


def _docs(start: int, stop: int) -> list[tuple[str, bytes]]:
    return [(f"k{i:06d}", orjson.dumps({"i": i, "name": f"row {i}", "tab": "a\tb\\c\n"})) for i in range(start, stop)]


def test_write_then_read_back(admin: CoreDmsAdmin) -> None:
    """Written documents come back counted, ordered by key, pageable, in a listed dataset."""
    store = open_store(admin.provision("acme"))
    try:
        assert store.write("things", list(reversed(_docs(0, 5))), source="f1") == 5
        assert store.count("things") == 5
        assert store.datasets() == ["things"]
        docs = store.documents("things", limit=2, offset=1)
        assert docs == [{"i": 1, "name": "row 1", "tab": "a\tb\\c\n"}, {"i": 2, "name": "row 2", "tab": "a\tb\\c\n"}]
        assert [d["i"] for d in store.documents("things", limit=10)] == [0, 1, 2, 3, 4]
    finally:
        store.close()


def test_unknown_dataset_is_empty(admin: CoreDmsAdmin) -> None:
    """A dataset never written counts 0 and has no documents, and is not created by reading."""
    store = open_store(admin.provision("acme"))
    try:
        assert store.count("nothing") == 0
        assert store.documents("nothing", limit=5) == []
        assert store.datasets() == []
    finally:
        store.close()


def test_bad_dataset_name_is_refused(admin: CoreDmsAdmin) -> None:
    """A dataset name that is not an identifier never reaches SQL."""
    store = open_store(admin.provision("acme"))
    try:
        with pytest.raises(StoreError, match="not valid"):
            store.write('x"; DROP TABLE y; --', _docs(0, 1), source="f")
    finally:
        store.close()


def test_writing_the_same_keys_twice_inserts_nothing(admin: CoreDmsAdmin) -> None:
    """Writes are insert-if-absent: a replay inserts 0 rows and keeps the first version."""
    store = open_store(admin.provision("acme"))
    try:
        assert store.write("things", _docs(0, 10), source="run1") == 10
        assert store.write("things", _docs(0, 10), source="run2") == 0
        changed = [("k000003", orjson.dumps({"i": -1}))]
        assert store.write("things", changed + _docs(10, 12), source="run3") == 2
        assert store.count("things") == 12
        assert store.documents("things", limit=1, offset=3) == [{"i": 3, "name": "row 3", "tab": "a\tb\\c\n"}]
    finally:
        store.close()


def test_a_key_repeated_inside_one_new_batch_is_stored_once(admin: CoreDmsAdmin) -> None:
    """A batch of new keys that repeats a key (PostgreSQL: the direct COPY fails on it and the
    batch falls back to the idempotent insert) stores each key once."""
    store = open_store(admin.provision("acme"))
    try:
        twice = [("k1", orjson.dumps({"v": 1})), ("k2", orjson.dumps({"v": 2})), ("k1", orjson.dumps({"v": 3}))]
        assert store.write("things", twice, source="run1") == 2
        assert store.count("things") == 2
    finally:
        store.close()


def test_100k_rows_in_batches(admin: CoreDmsAdmin) -> None:
    """100,000 small documents written in batches of 5,000 are all stored exactly once."""
    store = open_store(admin.provision("acme"))
    try:
        inserted = sum(store.write("big", _docs(i, i + 5000), source="f") for i in range(0, 100_000, 5000))
        assert inserted == 100_000
        assert store.count("big") == 100_000
        assert store.documents("big", limit=1, offset=99_999) == [
            {"i": 99_999, "name": "row 99999", "tab": "a\tb\\c\n"}
        ]
    finally:
        store.close()


def test_tenants_are_isolated(admin: CoreDmsAdmin, backend: str, pg_prefix: str) -> None:
    """Each tenant sees only its own data; on PostgreSQL a tenant's role cannot read another
    tenant's schema nor create tables in public."""
    url_a, url_b = admin.provision("alpha"), admin.provision("beta")
    a, b = open_store(url_a), open_store(url_b)
    try:
        a.write("things", _docs(0, 3), source="f")
        b.write("things", _docs(0, 1), source="f")
        assert (a.count("things"), b.count("things")) == (3, 1)
    finally:
        a.close()
        b.close()
    if backend == "sqlite":
        assert sqlite_path(url_a) != sqlite_path(url_b)
        # a directory of its own each: the only part of the home the tenant's sandboxed apps may write
        a_dir, b_dir = Path(sqlite_path(url_a)).parent, Path(sqlite_path(url_b)).parent
        assert (a_dir.name, b_dir.name) == ("alpha", "beta") and a_dir.parent == b_dir.parent
        return
    with psycopg.connect(url_a, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f'SELECT * FROM "{pg_prefix}_beta".ds_things')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.stolen (x int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f'CREATE TABLE "{pg_prefix}_beta".planted (x int)')


def test_provision_is_idempotent(admin: CoreDmsAdmin) -> None:
    """Provisioning an existing tenant again keeps its data and returns a working URL."""
    first = open_store(admin.provision("acme"))
    try:
        first.write("things", _docs(0, 4), source="f")
    finally:
        first.close()
    again = open_store(admin.provision("acme"))
    try:
        assert again.count("things") == 4
    finally:
        again.close()


def test_deprovision_drops_the_data(admin: CoreDmsAdmin) -> None:
    """After deprovision the tenant's URL no longer opens, and a new namespace starts empty."""
    url = admin.provision("acme")
    store = open_store(url)
    try:
        store.write("things", _docs(0, 4), source="f")
    finally:
        store.close()
    admin.deprovision("acme")
    admin.deprovision("acme")  # idempotent
    with pytest.raises(StoreError):
        open_store(url).close()
    fresh = open_store(admin.provision("acme"))
    try:
        assert fresh.count("things") == 0
        assert fresh.datasets() == []
    finally:
        fresh.close()


def test_unreachable_postgres_is_unavailable() -> None:
    """A PostgreSQL nobody listens for is a transient StoreUnavailable, not a data error."""
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        open_store("postgresql://someone:secret@127.0.0.1:1/test?options=-csearch_path%3Dx", busy_timeout_s=2)


def test_locked_sqlite_is_unavailable(tmp_path: Path) -> None:
    """A write that waits past the busy timeout for another writer's lock is StoreUnavailable,
    naming the dataset; once the lock is gone the same store writes."""
    admin = open_admin(f"sqlite:///{tmp_path}")
    url = admin.provision("acme")
    store = open_store(url, busy_timeout_s=0.2)
    holder = sqlite3.connect(sqlite_path(url), isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreUnavailable, match=r"'things'.*locked"):
            store.write("things", _docs(0, 2), source="f")
        holder.execute("ROLLBACK")
        assert store.write("things", _docs(0, 2), source="f") == 2
    finally:
        holder.close()
        store.close()


def test_unprovisioned_sqlite_tenant_is_an_error(tmp_path: Path) -> None:
    """Opening a tenant database that was never provisioned fails and creates no file."""
    with pytest.raises(StoreError, match="provision"):
        open_store(f"sqlite:///{tmp_path / 'ghost.db'}")
    assert not (tmp_path / "ghost.db").exists()


def test_postgres_refused_document_is_document_invalid(postgres_admin_url: str, pg_prefix: str) -> None:
    """A document jsonb cannot hold (a NUL character) raises DocumentInvalid and writes nothing."""
    admin = open_admin(postgres_admin_url, pg_prefix=pg_prefix)
    store = open_store(admin.provision("acme"))
    try:
        with pytest.raises(DocumentInvalid, match="'things'"):
            store.write("things", [("a", b'{"x": 1}'), ("b", b'{"x": "\\u0000"}')], source="f")
        assert store.count("things") == 0
        assert store.write("things", [("a", b'{"x": 1}')], source="f") == 1
    finally:
        store.close()
        admin.close()


def test_record_key_is_deterministic() -> None:
    """Keys are the canonical JSON of the key fields, else the file hash and zero-padded line."""
    assert record_key({"sku": "a1", "n": 3, "x": 0}, ["sku", "n"], "abc", 7) == '["a1",3]'
    assert record_key({"sku": "a1"}, [], "abc", 7) == "abc:0000000007"
    assert record_key({}, [], "abc", 10) > record_key({}, [], "abc", 9)
    with pytest.raises(KeyFieldMissing, match="'sku'"):
        record_key({"n": 3}, ["sku"], "abc", 1)


def test_concurrent_writers_insert_each_key_once(admin: CoreDmsAdmin) -> None:
    """Two connections writing overlapping keys into a new dataset at once create it once and
    together insert every key exactly once."""
    url = admin.provision("acme")
    stores = [open_store(url) for _ in range(4)]  # a store is one connection: one per thread
    inserted: list[int] = []

    def work(store: DocumentStore, start: int) -> None:
        inserted.append(sum(store.write("shared", _docs(i, i + 500), source="f") for i in range(start, 6000, 1000)))

    try:
        starts = (0, 0, 500, 500)
        threads = [threading.Thread(target=work, args=(s, n)) for s, n in zip(stores, starts, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(inserted) == 6000
        assert stores[0].count("shared") == 6000
    finally:
        for store in stores:
            store.close()


# -- what a batch write keeps, whatever each backend's bulk path ----------------------------------
def _nested(depth: int) -> dict[str, object]:
    doc: dict[str, object] = {"leaf": [1, "x", None]}
    for level in range(depth):
        doc = {"level": level, "child": doc}
    return doc


TRICKY_DOCS = [
    b'{"big":123456789012345678901234567890,"neg":-9223372036854775809,"u64":18446744073709551615,"f":1.5e300}',
    '{"text":"é 中文 😀 \u2028 \\u00e9 \\ud83d\\ude00","ctl":"\\u0001\\t\\n\\r\\"\\\\/","empty":""}'.encode(),
    orjson.dumps(_nested(60)),
    b'{"spaced" : [ 1 , 2 ] ,\n "order": {"b": 1, "a": 2}}',
    b"[1,2,3]",
]


def test_a_repeated_key_keeps_its_first_document(admin: CoreDmsAdmin) -> None:
    """Inside one batch a repeated key stores its first document, a key already stored keeps
    its stored one, and the count returned is of the keys newly stored."""
    store = open_store(admin.provision("acme"))
    try:
        assert store.write("things", [("k1", b'{"v":"old"}')], source="run1") == 1
        batch = [
            ("k2", b'{"v":"first"}'),
            ("k1", b'{"v":"new"}'),
            ("k3", b'{"v":3}'),
            ("k2", b'{"v":"second"}'),
            ("k3", b'{"v":33}'),
        ]
        assert store.write("things", batch, source="run2") == 2
        assert store.write("things", batch, source="run3") == 0
        assert store.documents("things", limit=10) == [{"v": "old"}, {"v": "first"}, {"v": 3}]
    finally:
        store.close()


def _numbers_exact(text: bytes) -> Any:
    """JSON with every number a Decimal: 1.5e300 and PostgreSQL's 15000...0 are equal."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def test_documents_come_back_as_written(admin: CoreDmsAdmin) -> None:
    """Big integers (every digit), unicode and emoji (raw and escaped), control characters, deep
    nesting and non-compact JSON are read back as the same values, under keys with quotes,
    backslashes, tabs and emoji."""
    keys = ['["a1",3]', 'quote " back \\ tab \t nl \n', "é😀", "k4", "k5"]
    store = open_store(admin.provision("acme"))
    try:
        assert store.write("things", list(zip(keys, TRICKY_DOCS, strict=True)), source="f") == 5
        by_key = dict(zip(keys, TRICKY_DOCS, strict=True))
        read = orjson.dumps(store.documents("things", limit=10))  # as the documents API writes them
        assert _numbers_exact(read) == [_numbers_exact(by_key[key]) for key in sorted(keys)]
        assert b"123456789012345678901234567890" in read and b"-9223372036854775809" in read
    finally:
        store.close()


def test_a_nul_character_is_refused(admin: CoreDmsAdmin) -> None:
    """A key or a document holding a NUL character is refused as DocumentInvalid and its batch
    writes nothing (PostgreSQL cannot store it; SQLite's JSON functions would cut it)."""
    store = open_store(admin.provision("acme"))
    try:
        for bad in [("a\x00b", b'{"x":2}'), ("k2", b'{"x":"a\x00b"}')]:
            with pytest.raises(DocumentInvalid, match="'things'"):
                store.write("things", [("k1", b'{"x":1}'), bad], source="f")
        assert store.count("things") == 0
        assert store.write("things", [("k1", b'{"x":1}')], source="f") == 1
    finally:
        store.close()


def test_sqlite_stores_keys_and_documents_byte_for_byte(tmp_path: Path) -> None:
    """On SQLite the stored key and document texts are exactly those given, whitespace, key
    order, escapes (``\\u0000`` included) and big integers untouched."""
    url = open_admin(f"sqlite:///{tmp_path}").provision("acme")
    keys = ['["a1",3]', 'quote " back \\ tab \t nl \n', "é😀", "k4", "k5", "nul"]
    docs = [*TRICKY_DOCS, orjson.dumps({"nul": "a\x00b"})]
    store = open_store(url)
    try:
        assert store.write("things", list(zip(keys, docs, strict=True)), source="f") == 6
        assert {"nul": "a\x00b"} in store.documents("things", limit=10)
    finally:
        store.close()
    with sqlite3.connect(sqlite_path(url)) as conn:
        stored = dict(conn.execute("SELECT key, doc FROM ds_things").fetchall())
    assert stored == {key: doc.decode() for key, doc in zip(keys, docs, strict=True)}


def test_sqlite_batch_over_the_length_limit_is_written_in_parts(tmp_path: Path) -> None:
    """A batch whose JSON text is over SQLite's length limit is written in several statements
    of one transaction: counts and first-document-wins hold across the parts, and a document
    over the limit by itself is refused with nothing of its batch written."""
    store = SqliteStore(sqlite_path(open_admin(f"sqlite:///{tmp_path}").provision("acme")))
    store.open()
    try:
        assert store._conn is not None
        store._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 20_000)  # the 2,000 rows below are ~140 kB of JSON
        assert store.write("big", _docs(1000, 1001), source="run1") == 1
        batch = [*_docs(0, 2000), ("k000000", orjson.dumps({"i": -1})), ("k001999", orjson.dumps({"i": -2}))]
        assert store.write("big", batch, source="run2") == 1999
        assert store.count("big") == 2000
        assert [d["i"] for d in store.documents("big", limit=2000)] == list(range(2000))
        huge = [*_docs(2000, 2500), ("huge", orjson.dumps({"text": "x" * 30_000}))]
        with pytest.raises(DocumentInvalid, match=r"'big'.*too big"):
            store.write("big", huge, source="run3")
        assert store.count("big") == 2000
    finally:
        store.close()


def test_sqlite_key_that_is_no_valid_text_is_refused(tmp_path: Path) -> None:
    """A key holding a lone surrogate (no UTF-8 text) is DocumentInvalid, not a crash."""
    store = open_store(open_admin(f"sqlite:///{tmp_path}").provision("acme"))
    try:
        with pytest.raises(DocumentInvalid, match="'things'"):
            store.write("things", [("k\ud800", b'{"x":1}')], source="f")
        assert store.count("things") == 0
    finally:
        store.close()


def _hold_writers_lock(url: str) -> int:
    """Take the SQLite writers' lock as another writer would; returns its descriptor."""
    fd = os.open(f"{sqlite_path(url)}-lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_sqlite_writers_take_turns_on_the_writers_lock(tmp_path: Path) -> None:
    """A write waits while another writer holds the tenant's writers' lock, and goes in as
    soon as it is released, whole."""
    url = open_admin(f"sqlite:///{tmp_path}").provision("acme")
    store, reader = open_store(url), open_store(url)
    fd = _hold_writers_lock(url)
    done: list[int] = []
    writer = threading.Thread(target=lambda: done.append(store.write("things", _docs(0, 500), source="f")))
    try:
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and reader.count("things") == 0  # waiting for its turn
        fcntl.flock(fd, fcntl.LOCK_UN)
        writer.join(10)
        assert done == [500] and reader.count("things") == 500
    finally:
        os.close(fd)
        writer.join(10)
        store.close()
        reader.close()


def test_a_writers_lock_held_past_the_busy_timeout_does_not_stop_writes(tmp_path: Path) -> None:
    """A writer stuck holding the lock (e.g. stopped by a signal) delays the others by the
    busy timeout at most; SQLite's own locking still keeps each write whole."""
    url = open_admin(f"sqlite:///{tmp_path}").provision("acme")
    store = open_store(url, busy_timeout_s=0.2)
    fd = _hold_writers_lock(url)
    try:
        assert store.write("things", _docs(0, 10), source="f") == 10
        assert store.write("things", _docs(5, 20), source="f") == 10
        assert store.count("things") == 20
    finally:
        os.close(fd)
        store.close()


def test_deprovision_removes_the_writers_lock_file(tmp_path: Path) -> None:
    admin = open_admin(f"sqlite:///{tmp_path}")
    url = admin.provision("acme")
    store = open_store(url)
    store.write("things", _docs(0, 1), source="f")
    store.close()
    assert Path(f"{sqlite_path(url)}-lock").exists()
    admin.deprovision("acme")
    assert not any(tmp_path.iterdir())
