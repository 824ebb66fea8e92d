"""The meta store's chunk records: a big file's line-aligned byte ranges and what became of each.

The meta store, not the broker, is the truth about a chunk. A chunk task on the broker only
says "look at chunk i of file f"; a worker runs it only if it can move the chunk from
``queued`` to ``running`` here (a compare-and-set), so a task delivered twice, or published
again after its worker died, runs the chunk once at a time. States::

    queued --claim--> running --finish--> done | failed
                         |  \\--finish (transient)--> retry --requeue--> queued
                         \\--lease expired--requeue--> queued
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from mysimbdp.adapters.metastore.sql import SqlConnection


class ChunkStatus(StrEnum):
    QUEUED = "queued"  # a task for it is (or is about to be) on the broker
    RUNNING = "running"  # a worker holds it under a lease
    RETRY = "retry"  # failed transiently; queued again after ``next_attempt_at``
    DONE = "done"
    FAILED = "failed"  # for good


FINAL_CHUNK_STATES = frozenset({ChunkStatus.DONE, ChunkStatus.FAILED})


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    file_id: str
    index: int
    tenant: str
    start: int  # byte offsets [start, end)
    end: int
    first_line: int  # the line number of the chunk's first record in the whole file
    status: ChunkStatus
    attempts: int = 0
    next_attempt_at: float = 0.0
    worker: str = ""
    lease_expires_at: float = 0.0
    run_id: str = ""
    rows_written: int = 0
    rows_rejected: int = 0
    rows_skipped: int = 0
    bytes_read: int = 0
    started_at: float = 0.0
    ended_at: float = 0.0
    error: str = ""


_COLUMNS = (
    "file_id, idx, tenant, start_byte, end_byte, first_line, status, attempts, next_attempt_at, worker, "
    "lease_expires_at, run_id, rows_written, rows_rejected, rows_skipped, bytes_read, started_at, ended_at, error"
)


def _chunk(row: Sequence[object]) -> ChunkRecord:
    values = list(row)
    values[6] = ChunkStatus(str(values[6]))
    return ChunkRecord(*values)  # type: ignore[arg-type]  # the columns are the fields, typed by the schema


@dataclass(frozen=True, slots=True)
class ChunkCounts:
    rows_written: int = 0
    rows_rejected: int = 0
    rows_skipped: int = 0
    bytes_read: int = 0


class ChunkRegistry:
    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    def plan(self, tenant: str, file_id: str, spans: Sequence[tuple[int, int, int]]) -> None:
        """Record the file's chunks ``(start, end, first_line)`` as queued; a file planned
        before (a manager restarted) keeps its chunks and their states."""
        self._db.executemany(
            "INSERT INTO file_chunks (file_id, idx, tenant, start_byte, end_byte, first_line, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (file_id, idx) DO NOTHING",
            [
                (file_id, index, tenant, start, end, first_line, ChunkStatus.QUEUED)
                for index, (start, end, first_line) in enumerate(spans)
            ],
        )

    def of_file(self, file_id: str) -> list[ChunkRecord]:
        rows = self._db.query(f"SELECT {_COLUMNS} FROM file_chunks WHERE file_id = ? ORDER BY idx", (file_id,))
        return [_chunk(row) for row in rows]

    def get(self, file_id: str, index: int) -> ChunkRecord | None:
        row = self._db.one(f"SELECT {_COLUMNS} FROM file_chunks WHERE file_id = ? AND idx = ?", (file_id, index))
        return _chunk(row) if row else None

    def claim(self, file_id: str, index: int, worker: str, ttl_s: float, run_id: str) -> ChunkRecord | None:
        """Take a queued chunk under a lease; None if it is not queued (running elsewhere,
        done, waiting for a retry) or another worker was faster. Idempotent by ``run_id``: a
        claim sent again after its answer was lost finds the chunk this worker's run holds."""
        now = time.time()
        changed = self._db.execute(
            "UPDATE file_chunks SET status = ?, worker = ?, lease_expires_at = ?, run_id = ?, "
            "attempts = attempts + 1, started_at = ?, error = '' WHERE file_id = ? AND idx = ? AND status = ?",
            (ChunkStatus.RUNNING, worker, now + ttl_s, run_id, now, file_id, index, ChunkStatus.QUEUED),
        )
        held = self.get(file_id, index)
        if changed or (
            held is not None and (held.status, held.worker, held.run_id) == (ChunkStatus.RUNNING, worker, run_id)
        ):
            return held
        return None

    def renew(self, worker: str, ttl_s: float) -> None:
        self._db.execute(
            "UPDATE file_chunks SET lease_expires_at = ? WHERE worker = ? AND status = ?",
            (time.time() + ttl_s, worker, ChunkStatus.RUNNING),
        )

    def finish(
        self,
        chunk: ChunkRecord,
        status: ChunkStatus,
        counts: ChunkCounts,
        *,
        error: str = "",
        next_attempt_at: float = 0.0,
    ) -> bool:
        """Record the end of the run that claimed ``chunk``; False if the chunk was taken from
        it meanwhile (its lease expired and it was queued again)."""
        return (
            self._db.execute(
                "UPDATE file_chunks SET status = ?, rows_written = ?, rows_rejected = ?, rows_skipped = ?, "
                "bytes_read = ?, ended_at = ?, error = ?, next_attempt_at = ?, worker = '' "
                "WHERE file_id = ? AND idx = ? AND run_id = ? AND status = ?",
                (
                    status,
                    counts.rows_written,
                    counts.rows_rejected,
                    counts.rows_skipped,
                    counts.bytes_read,
                    time.time(),
                    error,
                    next_attempt_at,
                    chunk.file_id,
                    chunk.index,
                    chunk.run_id,
                    ChunkStatus.RUNNING,
                ),
            )
            > 0
        )

    def requeue_due(self, file_id: str, now: float) -> list[ChunkRecord]:
        """Queue again the chunks whose retry is due or whose worker's lease expired (it died);
        return them, for their tasks to be published again."""
        due: list[ChunkRecord] = []
        for chunk in self.of_file(file_id):
            stale = chunk.status is ChunkStatus.RUNNING and chunk.lease_expires_at < now
            retry = chunk.status is ChunkStatus.RETRY and chunk.next_attempt_at <= now
            if (stale or retry) and self._db.execute(
                "UPDATE file_chunks SET status = ?, worker = '' WHERE file_id = ? AND idx = ? AND status = ? "
                "AND run_id = ?",
                (ChunkStatus.QUEUED, file_id, chunk.index, chunk.status, chunk.run_id),
            ):
                due.append(chunk)
        return due

    def tenants_with_queued(self) -> list[str]:
        rows = self._db.query("SELECT DISTINCT tenant FROM file_chunks WHERE status = ?", (ChunkStatus.QUEUED,))
        return sorted(str(row[0]) for row in rows)


def chunks_summary(chunks: Sequence[ChunkRecord]) -> dict[str, object] | None:
    """A file's chunks for the CLI's and the API's file views (None: the file was not chunked)."""
    if not chunks:
        return None
    counts = {str(status): 0 for status in ChunkStatus}
    for chunk in chunks:
        counts[str(chunk.status)] += 1
    return {
        "total": len(chunks),
        **counts,
        "items": [
            {
                "index": c.index,
                "status": str(c.status),
                "bytes": [c.start, c.end],
                "first_line": c.first_line,
                "attempts": c.attempts,
                "rows_written": c.rows_written,
                "rows_rejected": c.rows_rejected,
                "worker": c.worker,
                "error": c.error,
            }
            for c in chunks
        ],
    }
