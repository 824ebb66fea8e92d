"""The parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG)``), shared by the platform's
runner (for tenant apps) and the SDK (for an app's parallel parts): a child set up this way
is killed when the process that started it dies, so nothing keeps writing on its own."""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@functools.cache
def prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux, loaded once (call it before forking); None elsewhere."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
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
