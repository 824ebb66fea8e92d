"""Process-level mechanics of the subprocess runner; private to :mod:`mysimbdp.adapters.process.runner`.

Nothing but ``runner.py`` imports this module: callers start apps through
:func:`mysimbdp.adapters.process.runner.run`, which stays the one subprocess runner. What lives
here is how one started process is handled, not what a run is:

* :func:`child_setup` builds the function the child runs between ``fork`` and ``exec``
  (rlimits clamped to the platform's own hard limits, ``PR_SET_PDEATHSIG`` on Linux, then the
  sandbox's confinement);
* :class:`Child` owns a started app: its exit watch (a pidfd, or a poll of ``waitid`` with
  ``WNOWAIT`` where there is none, so the app is not reaped and its process group id stays
  reserved), process-group signalling, memory sampling and the final reap;
* :class:`Tail` counts every byte of one pipe and keeps only a bounded tail of it;
* :func:`decode_status` turns a raw wait status into (exit code, signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from typing import IO

import psutil

from mysimbdp._libc import die_with_parent, prctl
from mysimbdp.adapters.process._confine import Confinement, confine_self

__all__ = ["Child", "Tail", "child_setup", "decode_status"]

SAMPLE_INTERVAL_S = 0.2  # how often the process tree's memory is sampled
EXIT_POLL_S = 0.05  # exit poll interval where pidfds are not available


class Tail(asyncio.Protocol):
    """Counts every byte of one pipe and keeps only the last ``limit`` of them."""

    def __init__(self, limit: int, closed: asyncio.Future[None]) -> None:
        self.limit = max(limit, 0)
        self.total = 0
        self.closed = closed
        self._chunks: deque[bytes] = deque()
        self._kept = 0

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        if self.limit == 0:
            return
        self._chunks.append(data)
        self._kept += len(data)
        while self._kept - len(self._chunks[0]) >= self.limit:
            self._kept -= len(self._chunks.popleft())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def text(self) -> str:
        if self.limit == 0:
            return ""
        return b"".join(self._chunks)[-self.limit :].decode("utf-8", errors="replace")


class Child:
    """A started app: its pipes, its exit watch and its memory samples, released by close()."""

    def __init__(self, proc: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop, tail_bytes: int) -> None:
        self.proc = proc
        self.loop = loop
        self.exited: asyncio.Future[None] = loop.create_future()
        self.exited_at: float | None = None
        self.peak_rss_bytes = 0
        self.stdout = Tail(tail_bytes, loop.create_future())
        self.stderr = Tail(tail_bytes, loop.create_future())
        self._transports: list[asyncio.BaseTransport] = []
        self._pidfd: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._poll: asyncio.TimerHandle | None = None
        self._ps: psutil.Process | None = None

    @classmethod
    async def attach(cls, proc: subprocess.Popen[bytes], tail_bytes: int) -> Child:
        loop = asyncio.get_running_loop()
        child = cls(proc, loop, tail_bytes)
        try:
            await child._connect(proc.stdout, child.stdout)
            await child._connect(proc.stderr, child.stderr)
            child._watch_exit()
            child._sample()
        except BaseException:
            child.signal_group(signal.SIGKILL)
            child.close()
            raise
        return child

    async def _connect(self, pipe: IO[bytes] | None, tail: Tail) -> None:
        transport, _ = await self.loop.connect_read_pipe(lambda: tail, pipe)
        self._transports.append(transport)

    def signal_group(self, sig: signal.Signals) -> None:
        # Safe while the leader is unreaped: its pid, hence the group id, cannot be reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for both pipes to reach end of file, so the tails are complete."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(self.stdout.closed, self.stderr.closed), timeout_s)

    def close(self) -> int | None:
        """Kill what is left, reap the app, release the pipes; return the raw wait status."""
        self._stop_watching()
        if self._timer is not None:
            self._timer.cancel()
        if not self.exited.done():
            self.signal_group(signal.SIGKILL)
        status: int | None = None
        try:
            _, status = os.waitpid(self.proc.pid, 0)  # at once: it has exited or was SIGKILLed
        except ChildProcessError:
            status = None  # someone else reaped it; the status is lost
        self.proc.returncode = os.waitstatus_to_exitcode(status) if status is not None else -1
        for transport in self._transports:
            transport.close()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        for tail in (self.stdout, self.stderr):
            if not tail.closed.done():
                tail.closed.cancel()
        if not self.exited.done():
            self.exited.cancel()
        return status

    def _watch_exit(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            self._poll = self.loop.call_later(EXIT_POLL_S, self._poll_exit)
            return
        self.loop.add_reader(self._pidfd, self._on_exit)

    def _poll_exit(self) -> None:
        # WNOWAIT: notice the exit without reaping, so the group id stays reserved.
        if os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            self._poll = self.loop.call_later(EXIT_POLL_S, self._poll_exit)
        else:
            self._on_exit()

    def _on_exit(self) -> None:
        self._stop_watching()
        if not self.exited.done():
            self.exited_at = time.monotonic()
            self.exited.set_result(None)

    def _stop_watching(self) -> None:
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None

    def _sample(self) -> None:
        """Record the tree's summed RSS and the app's own high-water mark; reschedule."""
        if self.exited.done():
            return
        try:
            if self._ps is None:
                self._ps = psutil.Process(self.proc.pid)
            tree = [self._ps, *self._ps.children(recursive=True)]
            total = 0
            for proc in tree:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.peak_rss_bytes = max(self.peak_rss_bytes, total, _vm_hwm_bytes(self.proc.pid))
        except psutil.Error:
            pass
        self._timer = self.loop.call_later(SAMPLE_INTERVAL_S, self._sample)


def _vm_hwm_bytes(pid: int) -> int:
    """The peak RSS of one process since its exec (Linux ``VmHWM``); 0 where unknown."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def child_setup(
    *,
    open_files: int,
    memory_bytes: int | None,
    cpu_s: int | None,
    file_size_bytes: int | None,
    confinement: Confinement | None = None,
) -> Callable[[], None]:
    """The function the child runs between fork and exec: rlimits, the parent-death signal,
    then the sandbox (``confinement``, see :mod:`mysimbdp.adapters.process.sandbox`), last, so that
    nothing after it needs more than the app is granted.

    ``None`` leaves that resource at the platform's own limit. Everything is computed here,
    in the parent, so the child only makes system calls.
    """
    rlimits: list[tuple[int, tuple[int, int]]] = [
        (resource.RLIMIT_NOFILE, _clamped(resource.RLIMIT_NOFILE, open_files))
    ]
    if memory_bytes is not None:
        rlimits.append((resource.RLIMIT_AS, _clamped(resource.RLIMIT_AS, memory_bytes)))
    if cpu_s is not None:
        rlimits.append((resource.RLIMIT_CPU, _clamped(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)))
    if file_size_bytes is not None:
        rlimits.append((resource.RLIMIT_FSIZE, _clamped(resource.RLIMIT_FSIZE, file_size_bytes)))
    prctl_fn = prctl()
    parent_pid = os.getpid()

    def setup() -> None:
        for which, values in rlimits:
            resource.setrlimit(which, values)
        die_with_parent(parent_pid, prctl_fn)
        if confinement is not None:
            confine_self(confinement)

    return setup


def _clamped(which: int, soft: int, hard: int | None = None) -> tuple[int, int]:
    """(soft, hard) no higher than the platform's own hard limit, which a child cannot raise."""
    hard = soft if hard is None else hard
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    return soft, hard


def decode_status(status: int | None) -> tuple[int | None, int | None]:
    """(exit code, signal) from a raw wait status; (None, None) when the status was lost."""
    if status is None:
        return None, None
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None
