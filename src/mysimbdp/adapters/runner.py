"""The one subprocess runner: every tenant app the platform starts goes through :func:`run`.

An app is started from an argv list (never a shell) in a fresh working directory, with an
allow-listed environment (:func:`build_env`), stdin at ``/dev/null`` and resource limits
set in the child before ``exec``. It leads its own process group, so a timeout or the
cancellation of the awaiting task kills everything it spawned: ``SIGTERM`` to the group,
``grace_s`` to exit, then ``SIGKILL``. Leftovers in the group are killed when the app exits,
too: a run never outlives :func:`run`. On Linux the app also gets ``PR_SET_PDEATHSIG``
(``SIGKILL``), so a ``SIGKILL``-ed platform does not leave its app running; that signal
fires when the thread that started the app exits, so await :func:`run` from a long-lived
event loop thread.

stdout and stderr are drained concurrently and kept as bounded tails while their total
size is counted: an app writing hundreds of MB does not grow the platform's memory.

The app's exit is watched through a pidfd (a poll of ``waitid`` where there is none) without
reaping it, so its process group id stays reserved until the group has been killed. Peak
memory is sampled (the tree's summed RSS and the app's own ``VmHWM``), not taken from
``wait4``: after a ``fork`` from a large platform process, ``ru_maxrss`` reports the
platform's size rather than the app's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import resource
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

from mysimbdp.logs import get_logger

__all__ = ["ENV_ALLOWLIST", "Limits", "Outcome", "build_env", "run"]

log = get_logger("runner")

# Parent variables an app may see: the executable search path, locale and time zone (so
# text and timestamps behave as on the host) and the temp directory. Nothing else of the
# platform's environment (settings, database URLs and passwords, tokens) reaches an app.
# SYSTEMROOT (Windows-only) is left out: the runner is POSIX-only (process groups, rlimits).
ENV_ALLOWLIST: tuple[str, ...] = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")

SAMPLE_INTERVAL_S = 0.2  # how often the process tree's memory is sampled
EXIT_POLL_S = 0.05  # exit poll interval where pidfds are not available
EXIT_NOT_FOUND = 127  # shell convention: the command was not found
EXIT_NOT_EXECUTABLE = 126  # shell convention: found but could not be executed

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass(frozen=True)
class Limits:
    """What one app run may use; ``None`` leaves that resource at the platform's own limit."""

    timeout_s: float  # wall clock; on expiry the whole process group is killed
    memory_bytes: int | None = None  # RLIMIT_AS (address space)
    cpu_s: int | None = None  # RLIMIT_CPU: SIGXCPU at cpu_s, SIGKILL one second later
    file_size_bytes: int | None = None  # RLIMIT_FSIZE: largest file the app may write
    open_files: int = 1024  # RLIMIT_NOFILE
    grace_s: float = 2.0  # between SIGTERM and SIGKILL

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.grace_s < 0:
            raise ValueError(f"timeout_s must be > 0 and grace_s >= 0, got {self.timeout_s}, {self.grace_s}")
        for name in ("memory_bytes", "cpu_s", "file_size_bytes", "open_files"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class Outcome:
    """How one app run ended."""

    exit_code: int | None  # None when killed by a signal
    signal: int | None  # the signal number that ended it, if any
    timed_out: bool
    duration_s: float
    peak_rss_bytes: int  # largest RSS of the process tree seen while it ran
    stdout_tail: str  # last tail_bytes of stdout, undecodable bytes replaced
    stderr_tail: str
    stdout_bytes: int  # total bytes the app wrote to stdout
    stderr_bytes: int
    timeout_s: float | None = None  # the wall-clock limit the run had

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """One line saying how the run ended, for run records and logs."""
        if self.timed_out:
            limit_s = self.timeout_s if self.timeout_s is not None else self.duration_s
            return f"timed out after {limit_s:.1f} s (process group killed)"
        if self.signal is not None:
            name = _signal_name(self.signal)
            if self.signal == signal.SIGXCPU:
                return f"exceeded the CPU time limit (killed by {name})"
            if self.signal == signal.SIGXFSZ:
                return f"exceeded the file size limit (killed by {name})"
            return f"killed by {name}"
        if self.exit_code is None:
            return "ended with an unknown status"
        if self.exit_code == EXIT_NOT_FOUND:
            return f"exit {self.exit_code} (command not found)"
        if self.exit_code == EXIT_NOT_EXECUTABLE:
            return f"exit {self.exit_code} (command cannot be executed)"
        return f"exit {self.exit_code}"


def build_env(contract_env: Mapping[str, str], parent_env: Mapping[str, str]) -> dict[str, str]:
    """The environment of an app: allow-listed parent variables, then the contract values.

    ``HOME`` is not inherited; :func:`run` sets it to the run's working directory.
    """
    env = {name: parent_env[name] for name in ENV_ALLOWLIST if name in parent_env}
    env.update(contract_env)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


async def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    limits: Limits,
    tail_bytes: int = 64 * 1024,
    on_start: Callable[[int], None] | None = None,
) -> Outcome:
    """Run one app to its end (exit, signal, timeout) and say how it ended.

    A missing or non-executable program is a failed run (exit 127 or 126, the error in
    ``stderr_tail``), not an exception. Cancelling the awaiting task kills the process group
    and re-raises :class:`asyncio.CancelledError`. ``HOME`` is ``cwd`` unless ``env`` sets it.
    """
    if not argv:
        raise ValueError("argv is empty: nothing to execute")
    cwd.mkdir(parents=True, exist_ok=True)
    child_env = {"HOME": str(cwd), **env}
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=child_env,
            start_new_session=True,
            preexec_fn=_child_setup(limits),  # rlimits and the death signal need it
        )
    except OSError as exc:
        return _not_started(argv, exc, started, limits)
    log.info("app_started", pid=proc.pid, argv0=argv[0])
    child = await _Child.attach(proc, tail_bytes)
    timed_out = False
    try:
        if on_start is not None:
            on_start(proc.pid)
        timed_out = await _supervise(child, limits)
        child.signal_group(signal.SIGKILL)  # leftovers the app left behind in its group
        await child.drain(limits.grace_s)
    finally:
        status = child.close()
    ended = child.exited_at if child.exited_at is not None else time.monotonic()
    exit_code, signum = _decode(status)
    outcome = Outcome(
        exit_code=exit_code,
        signal=signum,
        timed_out=timed_out,
        duration_s=ended - started,
        peak_rss_bytes=child.peak_rss_bytes,
        stdout_tail=child.stdout.text(),
        stderr_tail=child.stderr.text(),
        stdout_bytes=child.stdout.total,
        stderr_bytes=child.stderr.total,
        timeout_s=limits.timeout_s,
    )
    log.info(
        "app_ended",
        pid=proc.pid,
        exit=exit_code,
        signal=signum,
        timed_out=timed_out,
        duration_s=round(outcome.duration_s, 3),
        peak_rss_bytes=outcome.peak_rss_bytes,
    )
    return outcome


async def _supervise(child: _Child, limits: Limits) -> bool:
    """Wait for the app to exit; kill its group on timeout or cancellation. True if it timed out."""
    try:
        await asyncio.wait_for(asyncio.shield(child.exited), limits.timeout_s)
    except TimeoutError:
        await _stop_group(child, limits.grace_s)
        return True
    except asyncio.CancelledError:
        log.warning("app_cancelled", pid=child.proc.pid)
        await _stop_group(child, limits.grace_s)
        raise
    return False


async def _stop_group(child: _Child, grace_s: float) -> None:
    """SIGTERM the group, give the app grace_s to exit, then SIGKILL the group (even if cancelled)."""
    child.signal_group(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(child.exited), grace_s)
    except TimeoutError:
        pass
    finally:
        child.signal_group(signal.SIGKILL)


class _Tail(asyncio.Protocol):
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


class _Child:
    """A started app: its pipes, its exit watch and its memory samples, released by close()."""

    def __init__(self, proc: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop, tail_bytes: int) -> None:
        self.proc = proc
        self.loop = loop
        self.exited: asyncio.Future[None] = loop.create_future()
        self.exited_at: float | None = None
        self.peak_rss_bytes = 0
        self.stdout = _Tail(tail_bytes, loop.create_future())
        self.stderr = _Tail(tail_bytes, loop.create_future())
        self._transports: list[asyncio.BaseTransport] = []
        self._pidfd: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._poll: asyncio.TimerHandle | None = None
        self._reaped_status: int | None = None
        self._ps: psutil.Process | None = None

    @classmethod
    async def attach(cls, proc: subprocess.Popen[bytes], tail_bytes: int) -> _Child:
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

    async def _connect(self, pipe: IO[bytes] | None, tail: _Tail) -> None:
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


def _child_setup(limits: Limits) -> Callable[[], None]:
    """The function the child runs between fork and exec: rlimits, then the parent-death signal.

    Everything is computed here, in the parent, so the child only makes system calls.
    """
    rlimits: list[tuple[int, tuple[int, int]]] = [
        (resource.RLIMIT_NOFILE, _clamped(resource.RLIMIT_NOFILE, limits.open_files))
    ]
    if limits.memory_bytes is not None:
        rlimits.append((resource.RLIMIT_AS, _clamped(resource.RLIMIT_AS, limits.memory_bytes)))
    if limits.cpu_s is not None:
        rlimits.append((resource.RLIMIT_CPU, _clamped(resource.RLIMIT_CPU, limits.cpu_s, limits.cpu_s + 1)))
    if limits.file_size_bytes is not None:
        rlimits.append((resource.RLIMIT_FSIZE, _clamped(resource.RLIMIT_FSIZE, limits.file_size_bytes)))
    prctl = _prctl()
    parent_pid = os.getpid()
    death_signal = int(signal.SIGKILL)

    def setup() -> None:
        for which, values in rlimits:
            resource.setrlimit(which, values)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
            if os.getppid() != parent_pid:  # the platform died before prctl took effect
                os.kill(os.getpid(), death_signal)

    return setup


def _clamped(which: int, soft: int, hard: int | None = None) -> tuple[int, int]:
    """(soft, hard) no higher than the platform's own hard limit, which a child cannot raise."""
    hard = soft if hard is None else hard
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    return soft, hard


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux, loaded once in the parent; None elsewhere."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return prctl


def _decode(status: int | None) -> tuple[int | None, int | None]:
    """(exit code, signal) from a raw wait status."""
    if status is None:
        return None, None
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


def _not_started(argv: Sequence[str], exc: OSError, started: float, limits: Limits) -> Outcome:
    code = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_NOT_EXECUTABLE
    message = f"cannot start {argv[0]!r}: {exc}"
    log.warning("app_not_started", argv0=argv[0], exit=code, error=str(exc))
    return Outcome(
        exit_code=code,
        signal=None,
        timed_out=False,
        duration_s=time.monotonic() - started,
        peak_rss_bytes=0,
        stdout_tail="",
        stderr_tail=message,
        stdout_bytes=0,
        stderr_bytes=0,
        timeout_s=limits.timeout_s,
    )


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
