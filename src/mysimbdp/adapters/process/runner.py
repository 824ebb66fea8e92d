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

Platform work on tenant data that could hang or crash (a file's scan) runs through
:func:`run_sync`: the same limits and group kill, blocking, for a worker thread.

Those process-level mechanics (child setup, exit watch, group signals, memory samples,
bounded tails) live in the private :mod:`mysimbdp.adapters.process._process`; callers import this
module only.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mysimbdp.adapters.process._process import Child, child_setup, decode_status
from mysimbdp.adapters.process._syncchild import SYNC_POLL_S, rss_bytes, stop_group_now
from mysimbdp.adapters.process.sandbox import Sandbox
from mysimbdp.errors import RunCancelled
from mysimbdp.logs import get_logger

__all__ = ["ENV_ALLOWLIST", "Limits", "Outcome", "app_argv", "build_env", "run", "run_sync"]

log = get_logger("runner")

# Parent variables an app may see: the executable search path, locale and time zone (so
# text and timestamps behave as on the host) and the temp directory. Nothing else of the
# platform's environment (settings, database URLs and passwords, tokens) reaches an app.
# SYSTEMROOT (Windows-only) is left out: the runner is POSIX-only (process groups, rlimits).
ENV_ALLOWLIST: tuple[str, ...] = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")

EXIT_NOT_FOUND = 127  # shell convention: the command was not found
EXIT_NOT_EXECUTABLE = 126  # shell convention: found but could not be executed


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


def app_argv(command: Sequence[str], bundle: str) -> list[str]:
    """A profile's app command with ``{python}`` (this interpreter) and ``{bundle}`` (the
    tenant's bundle directory) filled in."""
    return [part.replace("{python}", sys.executable).replace("{bundle}", bundle) for part in command]


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
    sandbox: Sandbox,
    tail_bytes: int = 64 * 1024,
    on_start: Callable[[int], None] | None = None,
) -> Outcome:
    """Run one app to its end (exit, signal, timeout) and say how it ended.

    The app runs inside ``sandbox`` (a required argument, so no caller can forget it): the
    kernel confines it to the sandbox's grant. Where the kernel cannot, and the operator has
    not set ``MYSIMBDP_SANDBOX=off``, :class:`~mysimbdp.errors.SandboxUnavailable` is raised
    and nothing starts; with the sandbox off, every start logs ``app_unconfined``.

    A missing or non-executable program is a failed run (exit 127 or 126, the error in
    ``stderr_tail``), not an exception. Cancelling the awaiting task kills the process group
    and re-raises :class:`asyncio.CancelledError`. ``HOME`` is ``cwd`` unless ``env`` sets it;
    a confined app's ``TMPDIR`` is ``cwd`` too (nothing else is writable).
    """
    if not argv:
        raise ValueError("argv is empty: nothing to execute")
    cwd.mkdir(parents=True, exist_ok=True)
    confinement = sandbox.prepare()
    child_env = {"HOME": str(cwd), **env}
    if confinement is None:
        log.warning("app_unconfined", tenant=sandbox.grant.tenant, warning=sandbox.status.warning)
    else:
        child_env["TMPDIR"] = str(cwd)
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
            preexec_fn=child_setup(  # rlimits and the death signal need it
                open_files=limits.open_files,
                memory_bytes=limits.memory_bytes,
                cpu_s=limits.cpu_s,
                file_size_bytes=limits.file_size_bytes,
                confinement=confinement,
            ),
        )
    except (OSError, subprocess.SubprocessError) as exc:  # SubprocessError: the confinement failed in the child
        return _not_started(argv, exc, started, limits)
    finally:
        if confinement is not None:
            confinement.close()
    log.info("app_started", pid=proc.pid, argv0=argv[0], sandbox=sandbox.status.mechanism)
    child = await Child.attach(proc, tail_bytes)
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
    exit_code, signum = decode_status(status)
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


async def _supervise(child: Child, limits: Limits) -> bool:
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


async def _stop_group(child: Child, grace_s: float) -> None:
    """SIGTERM the group, give the app grace_s to exit, then SIGKILL the group (even if cancelled)."""
    child.signal_group(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(child.exited), grace_s)
    except TimeoutError:
        pass
    finally:
        child.signal_group(signal.SIGKILL)


def _not_started(
    argv: Sequence[str], exc: OSError | subprocess.SubprocessError, started: float, limits: Limits
) -> Outcome:
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


def run_sync(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    limits: Limits,
    sandbox: Sandbox | None,
    stdin_bytes: bytes = b"",
    output_bytes: int = 16 * 1024 * 1024,
    cancel: threading.Event | None = None,
) -> Outcome:
    """Run platform code on tenant data (a file's scan) to its end, blocking: for worker threads.

    What a bounded piece of the platform's own work gets when tenant data could make it hang,
    crash or grow: the child has ``limits`` (wall clock, CPU, memory), leads its own process
    group, gets the parent-death signal and, when ``sandbox`` is given, the kernel's
    confinement (``None``: limits only, where the machine enforces no sandbox; the code run is
    the platform's, never a tenant's). ``stdin_bytes`` is written to its stdin. Its stdout and
    stderr are read whole (the child is platform code that writes a small result) and the
    outcome keeps the last ``output_bytes`` of each. Call it from a long-lived thread: the
    parent-death signal fires when the thread that started the child exits.

    On timeout the group gets ``SIGTERM``, ``grace_s``, then ``SIGKILL``. When ``cancel`` is
    set (looked at every :data:`SYNC_POLL_S`) the group is killed and
    :class:`~mysimbdp.errors.RunCancelled` raised. A program that cannot be started raises the
    ``OSError`` (a fault of the platform, not of the input), unlike :func:`run`.
    """
    if not argv:
        raise ValueError("argv is empty: nothing to execute")
    confinement = sandbox.prepare() if sandbox is not None else None
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env={"HOME": str(cwd), **env},
            start_new_session=True,
            preexec_fn=child_setup(  # rlimits, the death signal and the confinement need it
                open_files=limits.open_files,
                memory_bytes=limits.memory_bytes,
                cpu_s=limits.cpu_s,
                file_size_bytes=limits.file_size_bytes,
                confinement=confinement,
            ),
        )
    finally:
        if confinement is not None:
            confinement.close()
    deadline = started + limits.timeout_s
    timed_out = cancelled = False
    peak_rss = 0
    data: bytes | None = stdin_bytes
    out: bytes = b""
    err: bytes = b""
    try:
        while True:
            step = min(SYNC_POLL_S, deadline - time.monotonic())
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            if step <= 0:
                timed_out = True
                break
            try:
                out, err = proc.communicate(data, timeout=step)
                break
            except subprocess.TimeoutExpired:
                data = None  # sent already: communicate() keeps feeding it
                peak_rss = max(peak_rss, rss_bytes(proc.pid))
    finally:
        if proc.returncode is None:  # not reaped: its process group id is still its own
            stop_group_now(proc, 0.0 if cancelled else limits.grace_s)
            out, err = proc.communicate()
    if cancelled:
        log.info("run_cancelled", pid=proc.pid, argv0=argv[0])
        raise RunCancelled(f"{argv[0]!r} (pid {proc.pid}) was cancelled: the platform is stopping")
    status = proc.returncode
    exit_code = status if status >= 0 else None
    signum = -status if status < 0 else None
    outcome = Outcome(
        exit_code=exit_code,
        signal=signum,
        timed_out=timed_out,
        duration_s=time.monotonic() - started,
        peak_rss_bytes=peak_rss,
        stdout_tail=out[-output_bytes:].decode("utf-8", errors="replace"),
        stderr_tail=err[-output_bytes:].decode("utf-8", errors="replace"),
        stdout_bytes=len(out),
        stderr_bytes=len(err),
        timeout_s=limits.timeout_s,
    )
    log.info(
        "run_ended",
        pid=proc.pid,
        argv0=argv[0],
        exit=exit_code,
        signal=signum,
        timed_out=timed_out,
        duration_s=round(outcome.duration_s, 3),
    )
    return outcome
