"""A remote worker's task: read back from the claim's JSON as it was written, refused when it
is malformed or names ranges outside the file; fetched bytes checked by size and sha256; the
ranges a worker reads merged."""

from __future__ import annotations

import hashlib

import pytest

from mysimbdp.domain.remotetask import ByteRange, RemoteTask, check_bytes, merge_ranges
from mysimbdp.errors import ChunkFetchRefused

SHA = hashlib.sha256(b"x").hexdigest()


def _task(**changes: object) -> RemoteTask:
    values: dict[str, object] = {
        "task": "r0123456789abcdef0123",
        "tenant": "acme",
        "file_id": "f1",
        "file_name": "big.csv",
        "index": 1,
        "chunks": 3,
        "attempt": 1,
        "app": "app",
        "start": 100,
        "end": 200,
        "first_line": 9,
        "size_bytes": 300,
        "ranges": (ByteRange(0, 50, SHA), ByteRange(100, 200, SHA)),
        "bundle_version": SHA,
        "lease_ttl_s": 3.0,
        "env": {"MYSIMBDP_TENANT": "acme"},
    }
    values.update(changes)
    return RemoteTask(**values)  # type: ignore[arg-type]


def test_a_task_reads_back_from_its_json() -> None:
    task = _task()
    assert RemoteTask.from_json(task.to_json()) == task


def test_a_malformed_task_is_refused_without_showing_its_env() -> None:
    body = _task(env={"MYSIMBDP_COREDMS_URL": "postgresql://acme:secret@db/x"}).to_json()
    del body["ranges"]
    with pytest.raises(ChunkFetchRefused, match="malformed") as refused:
        RemoteTask.from_json(body)
    assert "secret" not in str(refused.value)


def test_a_task_naming_a_range_beyond_the_file_or_a_bad_digest_is_refused() -> None:
    beyond = _task(ranges=(ByteRange(100, 400, SHA),)).to_json()
    with pytest.raises(ChunkFetchRefused, match="range 100-400"):
        RemoteTask.from_json(beyond)
    with pytest.raises(ChunkFetchRefused, match="sha256 'nope'"):
        RemoteTask.from_json(_task(bundle_version="nope").to_json())


def test_fetched_bytes_are_checked_by_size_then_sha256() -> None:
    check_bytes("chunk", SHA, 1, SHA, 1)
    with pytest.raises(ChunkFetchRefused, match="got 2 bytes, the task announced 1"):
        check_bytes("chunk", SHA, 2, SHA, 1)
    other = hashlib.sha256(b"y").hexdigest()
    with pytest.raises(ChunkFetchRefused, match=f"chunk: sha256 {other} is not the announced {SHA}"):
        check_bytes("chunk", other, 1, SHA, 1)


def test_ranges_are_sorted_and_overlapping_or_touching_ones_merged() -> None:
    assert merge_ranges([(100, 200), (0, 4), (150, 300), (300, 310), (50, 50)]) == [(0, 4), (100, 310)]
    assert merge_ranges([]) == []
