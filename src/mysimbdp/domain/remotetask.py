"""What a remote chunk worker (``mysimbdp worker --api URL``) is given for one chunk, and how it
checks what it fetches. Pure: no IO.

The API's claim hands a :class:`RemoteTask`: the chunk (its byte span and first line), the byte
ranges of the staged file the worker may read (the chunk's, plus what the format needs besides:
a CSV's header, a Parquet file's magic and footer), each with its sha256, the tenant's bundle
version (the sha256 of the bundle's archive) and the app's contract environment without the
paths, which the worker fills in with its own (:data:`LOCAL_ENV`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mysimbdp import contract
from mysimbdp.errors import ChunkFetchRefused

__all__ = [
    "LOCAL_ENV",
    "SHA256_HEX",
    "WORKER_LABEL",
    "ByteRange",
    "RemoteTask",
    "check_bytes",
    "merge_ranges",
]

LOCAL_ENV = (contract.INPUT, contract.RESULT, contract.REJECTS, contract.PROGRESS)  # the worker's own paths
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
WORKER_LABEL = re.compile(r"^[A-Za-z0-9._:@-]{1,120}$")  # how a worker process names itself


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int  # [start, end) of the staged file
    end: int
    sha256: str

    @property
    def size_bytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class RemoteTask:
    task: str  # the chunk run's id: the worker routes' {task}
    tenant: str
    file_id: str
    file_name: str
    index: int
    chunks: int  # how many the file has
    attempt: int
    app: str
    start: int
    end: int
    first_line: int
    size_bytes: int  # the whole staged file's
    ranges: tuple[ByteRange, ...]
    bundle_version: str
    lease_ttl_s: float
    env: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"tenant {self.tenant!r}: file {self.file_name!r} ({self.file_id}): chunk {self.index + 1}/{self.chunks} "
            f"(bytes {self.start}-{self.end}, task {self.task})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "tenant": self.tenant,
            "file_id": self.file_id,
            "file_name": self.file_name,
            "index": self.index,
            "chunks": self.chunks,
            "attempt": self.attempt,
            "app": self.app,
            "start": self.start,
            "end": self.end,
            "first_line": self.first_line,
            "size_bytes": self.size_bytes,
            "ranges": [{"start": r.start, "end": r.end, "sha256": r.sha256} for r in self.ranges],
            "bundle_version": self.bundle_version,
            "lease_ttl_s": self.lease_ttl_s,
            "env": dict(self.env),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> RemoteTask:
        """The task from the claim's answer; raises :class:`ChunkFetchRefused` if it is malformed."""
        try:
            ranges = tuple(ByteRange(int(r["start"]), int(r["end"]), str(r["sha256"])) for r in value["ranges"])
            task = cls(
                str(value["task"]), str(value["tenant"]), str(value["file_id"]), str(value["file_name"]),
                int(value["index"]), int(value["chunks"]), int(value["attempt"]), str(value["app"]),
                int(value["start"]), int(value["end"]), int(value["first_line"]), int(value["size_bytes"]),
                ranges, str(value["bundle_version"]), float(value["lease_ttl_s"]),
                {str(k): str(v) for k, v in dict(value["env"]).items()},
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ChunkFetchRefused(f"the API's chunk task is malformed: {exc!r}") from exc  # never the env
        problems = [f"range {r.start}-{r.end}" for r in ranges if not 0 <= r.start <= r.end <= task.size_bytes]
        problems += [
            f"sha256 {h!r}" for h in [task.bundle_version, *(r.sha256 for r in ranges)] if not SHA256_HEX.match(h)
        ]
        if problems:
            raise ChunkFetchRefused(f"{task.describe()}: the API's task is not valid: {', '.join(problems)}")
        return task


def merge_ranges(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` sorted, without empty ones, overlapping or touching ones merged."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def check_bytes(what: str, data_sha256: str, size_bytes: int, want_sha256: str, want_size: int) -> None:
    """Refuse fetched bytes whose size or sha256 is not the announced one (:class:`ChunkFetchRefused`)."""
    if size_bytes != want_size:
        raise ChunkFetchRefused(f"{what}: got {size_bytes} bytes, the task announced {want_size}; refused")
    if data_sha256 != want_sha256:
        raise ChunkFetchRefused(
            f"{what}: sha256 {data_sha256} is not the announced {want_sha256} (changed or tampered with); refused"
        )
