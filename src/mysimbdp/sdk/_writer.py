"""The SDK's write side: documents queued into batches, each batch written on a background
thread while the app prepares the next one.

A PostgreSQL write spends most of its time waiting for the server to parse and index the
batch. With the write on its own thread that time overlaps the app's reading and
converting, so one app process keeps two cores busy (``docs/performance.md``). At most
one batch is in flight: memory stays bounded and a failed batch is known before the one
after it is sent. A store whose writes would not overlap by themselves
(``DocumentStore.overlaps_writes``: SQLite) is written on that thread too when the process may
run on more than one core: SQLite's one-statement batch insert runs in C with the GIL released,
so the next batch is read and converted meanwhile (an app that reads its file alone, e.g. a
Parquet file, would otherwise leave the second core idle: ``docs/performance.md``, "Compressed
and Parquet files"). On one core it is written in the caller's thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from operator import itemgetter
from typing import TypeVar

from mysimbdp.adapters.coredms import DocumentInvalid, DocumentStore, open_store
from mysimbdp.domain.writespec import APPEND, WriteMode, WriteSpec
from mysimbdp.formats.readers import Record

MAX_BATCH_BYTES = 32 * 1024 * 1024
_DOCUMENT = itemgetter(1)


def spare_core() -> bool:
    """Whether this process may run on more than one core (its CPU affinity, else the count)."""
    try:
        return len(os.sched_getaffinity(0)) > 1
    except (AttributeError, OSError):  # no affinity on this platform
        return (os.cpu_count() or 1) > 1


Rows = list[tuple[str, bytes]]
T = TypeVar("T")


class StoreWriter:
    """Batches of ``(key, document)`` for one dataset; counts what the store took.

    ``reject(record, reason)`` is called for a document the store refuses (found by halving
    the batch it was in). Errors of a write (e.g. ``StoreUnavailable``) surface from the next
    :meth:`add`, :meth:`add_batch` or :meth:`flush`."""

    def __init__(
        self,
        url: str,
        dataset: str,
        source: str,
        reject: Callable[[Record, str], None],
        *,
        batch_size: int,
        busy_timeout_s: float,
        spec: WriteSpec = APPEND,
        generation: str = "",
        overlap: bool | None = None,
    ) -> None:
        self.url, self.dataset, self.source = url, dataset, source
        # the background thread: always (True), never (False), or (None) when the store
        # overlaps writes by itself or this process has a spare core
        self.overlap = overlap
        self.spec, self.generation = spec, generation  # how the dataset is written (replace: into generation)
        self.batch_size = batch_size
        self.busy_timeout_s = busy_timeout_s
        self.rows_written = 0  # inserted by this run
        self.rows_stored = 0  # now in the store: inserted, or already there (a re-run)
        self._reject = reject
        self._store: DocumentStore | None = None
        self._pending: Rows = []
        self._pending_records: list[Record] = []
        self._pending_bytes = 0
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: tuple[Future[int], Rows, Sequence[Record]] | None = None

    def open(self) -> None:
        """Connect (raises ``StoreUnavailable`` / ``StoreError``); in mode replace, make the
        generation this run writes (kept if there: a retry or another chunk goes on with it)."""
        if self._store is None:
            self._store = open_store(self.url, busy_timeout_s=self.busy_timeout_s)
            if self.spec.mode is WriteMode.REPLACE:
                self._store.stage(self.dataset, self.generation)

    def add(self, key: str, data: bytes, record: Record) -> None:
        """Queue one document; a full batch is sent."""
        self._pending.append((key, data))
        self._pending_records.append(record)
        self._pending_bytes += len(data)
        if len(self._pending) >= self.batch_size or self._pending_bytes >= MAX_BATCH_BYTES:
            self._send_pending()

    def add_batch(self, rows: Rows, records: Sequence[Record]) -> None:
        """Send a ready batch (``records[i]`` is ``rows[i]``'s row), split if over the size cap."""
        if len(rows) > 1 and sum(map(len, map(_DOCUMENT, rows))) > MAX_BATCH_BYTES:
            mid = len(rows) // 2
            self.add_batch(rows[:mid], records[:mid])
            self.add_batch(rows[mid:], records[mid:])
            return
        self._send(rows, records)

    def flush(self) -> None:
        """Write everything queued and wait until the store has it (in mode replace, a file
        without rows still has its generation: it replaces the dataset by nothing)."""
        if self.spec.mode is WriteMode.REPLACE:
            self.open()
        self._send_pending()
        self._settle()

    def close(self) -> None:
        """Wait for a batch in flight (its outcome no longer matters), then disconnect."""
        if self._inflight is not None:
            future, _, _ = self._inflight
            self._inflight = None
            future.exception()  # waits; an error was reported, or is moot after one
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- internals --------------------------------------------------------------------------
    def _send_pending(self) -> None:
        if self._pending:
            rows, records = self._pending, self._pending_records
            self._pending, self._pending_records, self._pending_bytes = [], [], 0
            self._send(rows, records)

    def _send(self, rows: Rows, records: Sequence[Record]) -> None:
        self._settle()
        self.open()
        assert self._store is not None
        overlap = self.overlap
        if overlap is None:
            overlap = self.overlap = self._store.overlaps_writes or spare_core()
        if not overlap:
            self._write_finding_bad(rows, records)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mysimbdp-store")
        write = self._store.write
        future = self._pool.submit(write, self.dataset, rows, self.source, self.spec, generation=self.generation)
        self._inflight = (future, rows, records)

    def _settle(self) -> None:
        """Account for the batch in flight, raising its error."""
        if self._inflight is None:
            return
        future, rows, records = self._inflight
        self._inflight = None
        try:
            written = future.result()
        except DocumentInvalid:
            self._write_finding_bad(rows, records)
            return
        self.rows_written += written
        self.rows_stored += len(rows)

    def _write_finding_bad(self, rows: Rows, records: Sequence[Record]) -> None:
        assert self._store is not None
        written, stored = write_finding_bad(
            self._store, self.dataset, self.source, rows, records, self._reject, self.spec, self.generation
        )
        self.rows_written += written
        self.rows_stored += stored


def write_finding_bad(
    store: DocumentStore,
    dataset: str,
    source: str,
    rows: Rows,
    origins: Sequence[T],
    reject: Callable[[T, str], None],
    spec: WriteSpec = APPEND,
    generation: str = "",
) -> tuple[int, int]:
    """Write ``rows`` (``origins[i]`` is where row i came from); when the store refuses a
    document, halve the batch until it is found and ``reject`` it alone, so one bad document
    never sinks its batch. Returns (rows inserted, rows now stored)."""
    try:
        return store.write(dataset, rows, source, spec, generation=generation), len(rows)
    except DocumentInvalid as exc:
        if len(rows) == 1:
            reject(origins[0], f"the store refused the document: {exc}")
            return 0, 0
        mid = len(rows) // 2
        first = write_finding_bad(store, dataset, source, rows[:mid], origins[:mid], reject, spec, generation)
        second = write_finding_bad(store, dataset, source, rows[mid:], origins[mid:], reject, spec, generation)
        return first[0] + second[0], first[1] + second[1]
