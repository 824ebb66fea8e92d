"""Three libc calls through ctypes, shared by the platform and the SDK (Linux; no-ops elsewhere).

- The parent-death signal (``prctl(PR_SET_PDEATHSIG)``) for the runner's tenant apps and the
  SDK's parallel parts: a child set up this way is killed when the process that started it
  dies, so nothing keeps writing on its own.
- ``keep_freed_memory()``: glibc's malloc tuned for streaming work. By default glibc hands
  freed memory back to the kernel (trim) as soon as 128 KiB are free at the top of the heap,
  and serves larger blocks with fresh ``mmap`` calls; a loop that builds and drops a batch of
  thousands of rows then pays page faults for the same memory again and again. On the VMs
  this platform is measured on, that was up to half of an app's time (``docs/performance.md``).
- ``exchange_paths(a, b)``: ``renameat2(RENAME_EXCHANGE)``, two directories swapped in one
  atomic step (a tenant's new bundle for its old one: no moment without a bundle).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_AT_FDCWD = -100  # from <fcntl.h>
_RENAME_EXCHANGE = 2  # from <linux/fs.h>
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


def exchange_paths(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Swap the paths ``a`` and ``b`` (both must exist) in one atomic ``renameat2`` call.
    False where it is not available (not Linux or glibc, a kernel or filesystem without
    ``RENAME_EXCHANGE``): the caller falls back to two renames. Raises :class:`OSError` else."""
    renameat2: Any = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code), os.fspath(a), None, os.fspath(b))
