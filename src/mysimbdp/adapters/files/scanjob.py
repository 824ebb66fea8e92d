"""A file's scan in a process of its own: tenant data never hangs, crashes or fills fetchdata.

:func:`mysimbdp.adapters.files.scanner.scan_file` reads everything a tenant sends (format, header,
every row against the profile's rules). Run inside fetchdata, one poison file stopped ``up``
for every tenant: a line nested 100,000 deep raised ``RecursionError`` out of the scan, and a
catastrophic pattern held it at 100 % CPU so that ``/healthz`` and SIGTERM went unanswered.
Here the scan runs as ``python -m mysimbdp.adapters.files.scanchild`` through the one runner
(:func:`mysimbdp.adapters.process.runner.run_sync`): a wall-clock timeout, a CPU limit following it,
an address-space limit, its own process group, and the kernel's sandbox where the machine
has one (it may read the file and the runtime, write nothing, connect nowhere).

The parent writes the request (the file, its name, the profile's limits and quality rules)
as JSON to the child's stdin; the child writes the :class:`FileFacts` as JSON to its stdout.
How it ended becomes either those facts or a :class:`ScanFailure` naming the rule
(``scan.timeout``, ``scan.out_of_memory``, ``scan.crashed``) and what happened, which the
caller rejects the file with.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from mysimbdp.adapters.files.scanchild import EXIT_NO_MEMORY
from mysimbdp.adapters.files.scanner import ScanRules
from mysimbdp.adapters.process.runner import Limits, Outcome, build_env, run_sync
from mysimbdp.adapters.process.sandbox import Sandbox
from mysimbdp.domain.facts import FileFacts, facts_from_json

if TYPE_CHECKING:
    from mysimbdp.domain.profile import Profile

__all__ = [
    "SCAN_CRASHED",
    "SCAN_OUT_OF_MEMORY",
    "SCAN_TIMEOUT",
    "ScanFailure",
    "ScanLimits",
    "result_of",
    "scan_contained",
]

SCAN_TIMEOUT = "scan.timeout"
SCAN_OUT_OF_MEMORY = "scan.out_of_memory"
SCAN_CRASHED = "scan.crashed"
_STDERR_LINE_CHARS = 300


@dataclass(frozen=True)
class ScanLimits:
    """What one scan may use (``MYSIMBDP_SCAN_TIMEOUT_S``, ``MYSIMBDP_SCAN_MEMORY_BYTES``)."""

    timeout_s: float
    memory_bytes: int

    def limits(self) -> Limits:
        # The CPU limit is a backstop one second after the wall clock: a scan is one thread.
        # It writes no file (1 byte: RLIMIT_FSIZE needs a positive value) and opens a few.
        return Limits(
            timeout_s=self.timeout_s,
            memory_bytes=self.memory_bytes,
            cpu_s=math.ceil(self.timeout_s) + 1,
            file_size_bytes=1,
            open_files=64,
            grace_s=0.5,
        )


@dataclass(frozen=True)
class ScanFailure:
    """Why a scan gave no facts: the rule and the value for the rejection."""

    rule: str  # scan.timeout | scan.out_of_memory | scan.crashed
    value: str  # what the scan did, e.g. "took longer than the limit of 300 s and was stopped"
    remedy: str  # what the tenant (or the operator) can do


def scan_contained(
    path: Path,
    name: str,
    profile: Profile,
    *,
    limits: ScanLimits,
    sandbox: Sandbox | None,
    parent_env: Mapping[str, str],
    cancel: threading.Event | None = None,
    sha256: str = "",
) -> FileFacts | ScanFailure:
    """Scan ``path`` (the tenant called it ``name``) in a limited process; see the module doc.
    ``sha256``: the content's hash when already known (an upload's receiver computed it): the
    scan reads and checks every byte but does not hash them again.

    Raises :class:`~mysimbdp.errors.RunCancelled` when ``cancel`` is set meanwhile, and the
    ``OSError`` when the process cannot be started (the platform's fault: retry later)."""
    request = {
        "path": str(path),
        "name": name,
        "rules": ScanRules.of(profile).to_json(),
    }
    if sha256:
        request["sha256"] = sha256
    outcome = run_sync(
        [sys.executable, "-P", "-m", "mysimbdp.adapters.files.scanchild"],
        env=build_env({}, parent_env),
        cwd=path.parent,
        limits=limits.limits(),
        sandbox=sandbox,
        stdin_bytes=orjson.dumps(request),
        cancel=cancel,
    )
    return result_of(outcome, limits)


def result_of(outcome: Outcome, limits: ScanLimits) -> FileFacts | ScanFailure:
    """The facts a scan printed, or why it gave none (pure: from the run's outcome)."""
    if outcome.ok:
        try:
            return facts_from_json(outcome.stdout_tail)
        except (ValueError, KeyError, TypeError) as exc:
            return ScanFailure(SCAN_CRASHED, f"gave a result that could not be read ({exc})", _REPORT)
    last = _last_line(outcome.stderr_tail)
    if outcome.timed_out or outcome.signal == signal.SIGXCPU:
        return ScanFailure(
            SCAN_TIMEOUT,
            f"took longer than the limit of {limits.timeout_s:g} s and was stopped",
            "split the file into smaller files, or ask the operator to raise MYSIMBDP_SCAN_TIMEOUT_S",
        )
    if outcome.exit_code == EXIT_NO_MEMORY or "MemoryError" in last or "bad_alloc" in outcome.stderr_tail:
        return ScanFailure(
            SCAN_OUT_OF_MEMORY,
            f"needed more memory than the limit of {limits.memory_bytes // 2**20} MiB and was stopped",
            "split the file or shorten its lines, or ask the operator to raise MYSIMBDP_SCAN_MEMORY_BYTES",
        )
    detail = f"; last error: {last}" if last else ""
    return ScanFailure(SCAN_CRASHED, f"crashed ({outcome.describe()}{detail})", _REPORT)


_REPORT = "check the file's format; if it is valid, report it to the operator with the file id"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:_STDERR_LINE_CHARS] if lines else ""
