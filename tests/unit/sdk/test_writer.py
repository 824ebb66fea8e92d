"""The SDK's store writer on SQLite: with a spare core a batch is written on the background
thread while the next one is prepared, with the same outcome as in the caller's thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from mysimbdp.adapters.coredms import open_admin, open_store
from mysimbdp.adapters.coredms.sqlite import SqliteStore
from mysimbdp.formats.readers import Record, good_record
from mysimbdp.sdk import _writer
from mysimbdp.sdk._writer import StoreWriter, spare_core


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    admin = open_admin(f"sqlite:///{tmp_path / 'coredms'}")
    try:
        yield admin.provision("acme")
    finally:
        admin.close()


def _batch(first: int, n: int, bad: int | None = None) -> tuple[list[tuple[str, bytes]], list[Record]]:
    rows = [(f"k{i}", b'{"v": "\xff"}' if i == bad else orjson.dumps({"id": i})) for i in range(first, first + n)]
    return rows, [good_record(i + 1, {"id": i}) for i in range(first, first + n)]


def _write(url: str, overlap: bool | None, monkeypatch: pytest.MonkeyPatch) -> tuple[StoreWriter, set[str], list[int]]:
    threads: set[str] = set()
    original = SqliteStore.write

    def write(self: SqliteStore, *args: object, **kwargs: object) -> int:
        threads.add(threading.current_thread().name)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SqliteStore, "write", write)
    rejected: list[int] = []
    reject = lambda record, _: rejected.append(record.line)  # noqa: E731
    writer = StoreWriter(url, "things", "f1", reject, batch_size=10, busy_timeout_s=5, overlap=overlap)
    try:
        writer.open()
        for first in (0, 10, 20):
            writer.add_batch(*_batch(first, 10, bad=15))
        writer.flush()
    finally:
        writer.close()
    return writer, threads, rejected


@pytest.mark.parametrize("overlap", [True, False])
def test_a_batch_is_written_on_the_background_thread_or_not_with_the_same_outcome(
    url: str, overlap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every good document stored once, the refused one (not UTF-8) rejected alone under its row,
    in either thread."""
    writer, threads, rejected = _write(url, overlap, monkeypatch)
    assert (writer.rows_written, writer.rows_stored, rejected) == (29, 29, [16])
    background = {name for name in threads if name.startswith("mysimbdp-store")}
    assert bool(background) is overlap
    store = open_store(url)
    try:
        assert store.count("things") == 29
    finally:
        store.close()


def test_by_default_sqlite_is_written_on_the_background_thread_with_a_spare_core_only(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_writer, "spare_core", lambda: True)
    _, threads, _ = _write(url, None, monkeypatch)
    assert any(name.startswith("mysimbdp-store") for name in threads)
    monkeypatch.setattr(_writer, "spare_core", lambda: False)
    _, threads, _ = _write(url, None, monkeypatch)
    assert threads == {threading.current_thread().name}


def test_a_spare_core_is_one_the_process_may_run_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_writer.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert spare_core() is False
    monkeypatch.setattr(_writer.os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    assert spare_core() is True
