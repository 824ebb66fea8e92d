"""Two libc calls through ctypes, shared by the platform and the SDK (Linux; no-ops elsewhere).

- The parent-death signal (``prctl(PR_SET_PDEATHSIG)``) for the runner's tenant apps and the
  SDK's parallel parts: a child set up this way is killed when the process that started it
  dies, so nothing keeps writing on its own.
- ``keep_freed_memory()``: glibc's malloc tuned for streaming work. By default glibc hands
  freed memory back to the kernel (trim) as soon as 128 KiB are free at the top of the heap,
  and serves larger blocks with fresh ``mmap`` calls; a loop that builds and drops a batch of
  thousands of rows then pays page faults for the same memory again and again. On the VMs
  this platform is measured on, that was up to half of an app's time (``docs/performance.md``).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# mallopt parameters, from <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD_BYTES = 64 << 20  # free memory kept at the top of the heap before trimming
TOP_PAD_BYTES = 16 << 20  # extra heap asked for on each growth
MMAP_THRESHOLD_BYTES = 4 << 20  # blocks below this come from the heap (1 MiB read chunks do)


@functools.cache
def _libc() -> Any:
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux, loaded once (call it before forking); None elsewhere."""
    function: Callable[..., int] | None = getattr(_libc(), "prctl", None)
    return function


def die_with_parent(parent_pid: int, prctl_fn: Callable[..., int] | None) -> None:
    """In a child: get SIGKILL when the parent dies, and die now if it already has.

    Only system calls, so it is safe between fork and exec; ``prctl_fn`` comes from
    :func:`prctl`, loaded in the parent."""
    if prctl_fn is None:
        return
    prctl_fn(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's malloc to keep freed memory for reuse (see the module doc), once per
    process. Memory stays bounded by the process's own peak. False where there is no glibc
    ``mallopt`` (musl, macOS): nothing changes there."""
    mallopt: Callable[[int, int], int] | None = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    done = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    done = mallopt(_M_TOP_PAD, TOP_PAD_BYTES) == 1 and done
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and done
