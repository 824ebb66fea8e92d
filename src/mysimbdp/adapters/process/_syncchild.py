"""Helpers of :func:`mysimbdp.adapters.process.runner.run_sync` for a child it started; private to the runner.

Nothing here starts a process: the runner does. What lives here is how a blocking caller
stops a started child's process group without reaping it first (so its group id cannot be
reused meanwhile), and samples its memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import psutil

__all__ = ["SYNC_POLL_S", "rss_bytes", "stop_group_now"]

SYNC_POLL_S = 0.1  # how often run_sync looks at its deadline and its cancel event
_EXIT_POLL_S = 0.02


def stop_group_now(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM ``proc``'s group, wait up to ``grace_s`` for it to exit (unreaped), then SIGKILL
    the group; ``grace_s`` 0 sends SIGKILL at once. ``proc`` must not have been reaped yet."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
    end = time.monotonic() + grace_s
    while grace_s > 0 and time.monotonic() < end:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            break
        time.sleep(_EXIT_POLL_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def rss_bytes(pid: int) -> int:
    """The resident memory of ``pid`` now; 0 once it is gone."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.Error, OSError):
        return 0
