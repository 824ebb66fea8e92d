"""The chunk ledger on SQLite and PostgreSQL: planning is idempotent, a chunk is claimed by
one worker at a time, only its own run can finish it, a dead worker's chunk is queued again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from mysimbdp.adapters.metastore import MetaStore
from mysimbdp.adapters.metastore.chunks import ChunkCounts, ChunkStatus, chunks_summary

SPANS = [(0, 100, 1), (100, 250, 8), (250, 400, 15)]


@pytest.fixture
def meta(meta_url: str) -> Iterator[MetaStore]:
    store = MetaStore(meta_url)
    store.start()
    yield store
    store.close()


def test_planning_twice_keeps_the_first_plan_and_its_states(meta: MetaStore) -> None:
    meta.chunks.plan("acme", "f1", SPANS)
    claimed = meta.chunks.claim("f1", 1, "w1", 30, "r1")
    assert claimed is not None
    meta.chunks.plan("acme", "f1", [(0, 400, 1)])  # a restarted manager plans again
    chunks = meta.chunks.of_file("f1")
    assert [(c.start, c.end, c.first_line) for c in chunks] == SPANS
    assert [c.status for c in chunks] == [ChunkStatus.QUEUED, ChunkStatus.RUNNING, ChunkStatus.QUEUED]
    assert meta.chunks.tenants_with_queued() == ["acme"]


def test_a_chunk_is_claimed_once_and_finished_only_by_its_own_run(meta: MetaStore) -> None:
    meta.chunks.plan("acme", "f1", SPANS)
    first = meta.chunks.claim("f1", 0, "w1", 30, "r1")
    assert first is not None and first.attempts == 1 and first.worker == "w1"
    again = meta.chunks.claim("f1", 0, "w1", 30, "r1")  # sent again after a lost answer: its own run's
    assert again is not None and again.attempts == 1 and again.run_id == "r1"
    assert meta.chunks.claim("f1", 0, "w1", 30, "r9") is None  # the same worker, another run
    assert meta.chunks.claim("f1", 0, "w2", 30, "r2") is None  # a duplicate task
    assert not meta.chunks.finish(replace(first, run_id="r-other"), ChunkStatus.DONE, ChunkCounts(rows_written=5))
    assert meta.chunks.finish(first, ChunkStatus.DONE, ChunkCounts(rows_written=7, rows_rejected=1, bytes_read=100))
    done = meta.chunks.get("f1", 0)
    assert done is not None and done.status is ChunkStatus.DONE and done.rows_written == 7 and done.worker == ""
    assert meta.chunks.claim("f1", 0, "w2", 30, "r3") is None  # done for good


def test_a_dead_workers_chunk_and_a_due_retry_are_queued_again(meta: MetaStore) -> None:
    meta.chunks.plan("acme", "f1", SPANS)
    dead = meta.chunks.claim("f1", 0, "w-dead", 0.01, "r1")
    slow = meta.chunks.claim("f1", 1, "w-alive", 60, "r2")
    retried = meta.chunks.claim("f1", 2, "w-alive", 60, "r3")
    assert dead and slow and retried
    assert meta.chunks.finish(retried, ChunkStatus.RETRY, ChunkCounts(), error="store busy", next_attempt_at=0.0)
    time.sleep(0.05)
    due = meta.chunks.requeue_due("f1", time.time())
    assert sorted(c.index for c in due) == [0, 2]
    states = {c.index: c.status for c in meta.chunks.of_file("f1")}
    assert states == {0: ChunkStatus.QUEUED, 1: ChunkStatus.RUNNING, 2: ChunkStatus.QUEUED}
    assert not meta.chunks.finish(dead, ChunkStatus.DONE, ChunkCounts())  # the dead run comes back too late
    again = meta.chunks.claim("f1", 0, "w-new", 60, "r4")
    assert again is not None and again.attempts == 2
    assert meta.chunks.requeue_due("f1", time.time()) == []  # nothing twice


def test_the_summary_counts_chunks_by_state(meta: MetaStore) -> None:
    assert chunks_summary(meta.chunks.of_file("nothing")) is None
    meta.chunks.plan("acme", "f1", SPANS)
    meta.chunks.claim("f1", 0, "w1", 30, "r1")
    summary = chunks_summary(meta.chunks.of_file("f1"))
    assert summary is not None
    assert (summary["total"], summary["queued"], summary["running"], summary["done"]) == (3, 2, 1, 0)
    assert summary["items"][0]["bytes"] == [0, 100]  # type: ignore[index]
