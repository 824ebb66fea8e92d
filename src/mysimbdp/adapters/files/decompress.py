"""A compressed file's decompression in a process of its own, like its scan.

gzip cannot be cut at arbitrary offsets, so a compressed file is decompressed whole before
its scan, into a plain file beside the staged ones (``staging/<tenant>/<claim name>``, hidden
until staged): the scan, the checks, the tenant's app and the chunker then read a plain
file. The decompression is tenant data running through platform code, so it gets what a scan
gets (:mod:`mysimbdp.adapters.files.scanjob`): the wall-clock timeout and the memory limit of
``MYSIMBDP_SCAN_TIMEOUT_S`` / ``MYSIMBDP_SCAN_MEMORY_BYTES``, its own process group, and the
kernel's sandbox where the machine has one (it reads the claimed file, writes only its
output, connects nowhere); the kernel's file size limit is the profile's
``max_uncompressed_bytes``, behind the child's own check. The child stops before it writes
past ``max_uncompressed_bytes`` or ``max_expansion_ratio`` times the compressed size; on any
failure the output is removed here, so nothing of a bomb stays in staging.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import orjson

from mysimbdp.adapters.files.decompresschild import EXIT_NO_MEMORY
from mysimbdp.adapters.files.scanjob import ScanFailure, ScanLimits
from mysimbdp.adapters.process.runner import Limits, Outcome, build_env, run_sync
from mysimbdp.adapters.process.sandbox import Grant, Sandbox
from mysimbdp.formats.compression import Compression

__all__ = [
    "DECOMPRESS_CRASHED",
    "DECOMPRESS_OUT_OF_MEMORY",
    "DECOMPRESS_TIMEOUT",
    "Unpacked",
    "decompress_contained",
    "decompress_grant",
    "decompress_limits",
    "decompress_result",
]

DECOMPRESS_TIMEOUT = "decompress.timeout"
DECOMPRESS_OUT_OF_MEMORY = "decompress.out_of_memory"
DECOMPRESS_CRASHED = "decompress.crashed"
_COMPRESSION_REMEDY = {
    "uncompressed_size": "split the file into smaller files, or ask for a higher max_uncompressed_bytes",
    "expansion_ratio": "split the file, or ask for a higher max_expansion_ratio",
    "compression": "check the file with gzip -t / bzip2 -t / zstd -t and send it again",
}


@dataclass(frozen=True)
class Unpacked:
    """A claimed file's decompressed copy and what was read to make it."""

    path: Path  # the plain file
    compression: Compression
    bytes_in: int  # the compressed size: the bytes the tenant sent
    bytes_out: int
    sha256: str  # of the compressed bytes


def decompress_grant(tenant: str, home: Path, path: Path, out: Path) -> Grant:
    """What the child may reach beyond the runtime, in the sandbox: read ``path`` (the claimed
    file), write ``out`` (that one file, which must exist), connect nowhere."""
    return Grant(tenant, home, read=(path,), write=(out,), network="none")


def decompress_limits(limits: ScanLimits, max_bytes: int) -> Limits:
    """The child's rlimits: the scan's wall clock, CPU and address space; files up to
    ``max_bytes`` + 1 (the kernel's backstop behind the child's own check); 64 open files."""
    return Limits(
        timeout_s=limits.timeout_s,
        memory_bytes=limits.memory_bytes,
        cpu_s=math.ceil(limits.timeout_s) + 1,
        file_size_bytes=max_bytes + 1,
        open_files=64,
        grace_s=0.5,
    )


def decompress_contained(
    path: Path,
    out: Path,
    kind: Compression,
    *,
    max_bytes: int,
    max_ratio: float,
    limits: ScanLimits,
    sandbox: Sandbox | None,
    parent_env: Mapping[str, str],
    cancel: threading.Event | None = None,
) -> Unpacked | ScanFailure:
    """Decompress ``path`` into ``out`` (created empty by the caller, so that the sandbox can
    grant it) in a limited process; ``out`` is removed unless this returns :class:`Unpacked`.

    Raises :class:`~mysimbdp.errors.RunCancelled` when ``cancel`` is set meanwhile, and the
    ``OSError`` when the process cannot be started."""
    request = {
        "path": str(path),
        "out": str(out),
        "compression": str(kind),
        "size": path.stat().st_size,
        "max_bytes": max_bytes,
        "max_ratio": max_ratio,
    }
    result: Unpacked | ScanFailure | None = None
    try:
        outcome = run_sync(
            [sys.executable, "-P", "-m", "mysimbdp.adapters.files.decompresschild"],
            env=build_env({}, parent_env),
            cwd=out.parent,
            limits=decompress_limits(limits, max_bytes),
            sandbox=sandbox,
            stdin_bytes=orjson.dumps(request),
            cancel=cancel,
        )
        result = decompress_result(outcome, out, kind, limits)
        return result
    finally:
        if not isinstance(result, Unpacked):
            with suppress(FileNotFoundError):
                out.unlink()


def decompress_result(outcome: Outcome, out: Path, kind: Compression, limits: ScanLimits) -> Unpacked | ScanFailure:
    """What the child printed, or why it gave nothing (pure but for ``out``'s name)."""
    if outcome.ok:
        try:
            doc = orjson.loads(outcome.stdout_tail)
            if doc["ok"]:
                return Unpacked(out, kind, int(doc["bytes_in"]), int(doc["bytes_out"]), str(doc["sha256"]))
            rule = str(doc["rule"])
            return ScanFailure(rule, str(doc["value"]), _COMPRESSION_REMEDY.get(rule, _REPORT))
        except (ValueError, KeyError, TypeError) as exc:
            return ScanFailure(DECOMPRESS_CRASHED, f"its decompression gave an unreadable result ({exc})", _REPORT)
    if outcome.timed_out or outcome.signal == signal.SIGXCPU:
        return ScanFailure(
            DECOMPRESS_TIMEOUT,
            f"its decompression took longer than the limit of {limits.timeout_s:g} s and was stopped",
            "split the file into smaller files, or ask the operator to raise MYSIMBDP_SCAN_TIMEOUT_S",
        )
    if outcome.exit_code == EXIT_NO_MEMORY or "MemoryError" in outcome.stderr_tail:
        return ScanFailure(
            DECOMPRESS_OUT_OF_MEMORY,
            f"its decompression needed more memory than the limit of {limits.memory_bytes // 2**20} MiB",
            "compress it with a smaller window (e.g. zstd without --long), or ask the operator to raise "
            "MYSIMBDP_SCAN_MEMORY_BYTES",
        )
    if outcome.signal == signal.SIGXFSZ:
        return ScanFailure("uncompressed_size", "it decompresses past the file size limit and was stopped", _REPORT)
    return ScanFailure(DECOMPRESS_CRASHED, f"its decompression crashed ({outcome.describe()})", _REPORT)


_REPORT = "check the file; if it is valid, report it to the operator with the file id"
