"""A warm ``mysimbdp`` for the tests: one server process per test process imports the CLI
and the modules its commands load, once, then forks a child for each command.

Each command still runs in its own process, with its own argv, environment, working
directory, stdin (``/dev/null``), stdout and stderr (files) and exit code, exactly as
``python -m mysimbdp ARGS`` would; only the imports are paid once per test process instead
of once per command (about 0.3-1 s of CPU each on this machine, and the tests run well over a
thousand commands and `up`s). The same idea as ``multiprocessing``'s forkserver. The
server has no threads (forking one with threads is unsafe) and only imports: no module of
the platform reads the environment at import, so each child's environment is the one it
was given. ``MYSIMBDP_TEST_CLI_FORK=0`` runs a fresh interpreter per command instead.

:func:`run` is ``subprocess.run`` of a command (output captured as text); :func:`popen`
starts a long one (``up``, ``worker``) and returns a :class:`Forked`, which answers what the
tests ask of a ``subprocess.Popen``: ``pid``, ``poll``, ``wait``, ``send_signal``,
``terminate``, ``kill``, ``returncode``.

The protocol, one JSON line per message over the server's stdin and stdout: the caller
sends ``{id, argv, env, cwd, out, err}``; the server answers ``{id, pid}`` once it forked and
``{id, rc}`` (the exit code, or ``-signal``) once that child ended; children run at the same
time, and the caller keeps the answers of the others while it waits for one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ENABLED", "CliServer", "Forked", "close", "popen", "run", "server"]

ENABLED = os.environ.get("MYSIMBDP_TEST_CLI_FORK", "1") != "0"  # 0: a fresh interpreter per command
PROG_NAME = "python -m mysimbdp"  # what click names the program when run as `python -m mysimbdp`
PRELOAD = (  # the modules the commands import inside their functions
    "mysimbdp.cli",
    "mysimbdp.settings",
    "mysimbdp.runtime.platform",
    "mysimbdp.runtime.up",
    "mysimbdp.api.app",
    "mysimbdp.services.ingest",
    "mysimbdp.services.tenants",
    "mysimbdp.services.report",
    "mysimbdp.services.reads",
    "mysimbdp.services.quarantine",
    "mysimbdp.services.quarantine_replay",
    "mysimbdp.cli.render",
    "mysimbdp.cli.remotecmds",
    "mysimbdp.adapters.coredms.sqlite",
    "mysimbdp.adapters.coredms.postgres",
    "mysimbdp.adapters.metastore",
    "uvicorn",
)
REAP_EVERY_S = 0.02  # how often the server looks for ended children


def _child(request: Mapping[str, Any]) -> None:
    """In the forked child: become ``python -m mysimbdp ARGV`` and never return."""
    code = 1
    try:
        if request.get("new_session"):
            os.setsid()  # a process group of its own, as Popen(start_new_session=True)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        append = os.O_APPEND if request.get("append") else os.O_TRUNC
        out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | append, 0o600)
        err = os.open(request["err"], os.O_WRONLY | os.O_CREAT | append, 0o600)
        for fd, target in ((stdin, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        sys.argv = [request["main"], *request["argv"]]
        from mysimbdp.cli import main

        try:
            main(args=list(request["argv"]), prog_name=PROG_NAME)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, int | None):
                print(exc.code, file=sys.stderr)
    except BaseException:  # what an uncaught exception does to a fresh interpreter
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
        with contextlib.suppress(BaseException):
            sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """The server's loop (``python -c 'from tests.clifork import serve; serve()'``)."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    import mysimbdp

    main_path = str(Path(mysimbdp.__file__).with_name("__main__.py"))
    children: dict[int, Any] = {}  # pid -> request id
    requests = os.fdopen(sys.stdin.fileno(), "rb", buffering=0)
    pending = b""
    open_input = True

    def answer(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    while open_input or children:
        ready, _, _ = select.select([requests] if open_input else [], [], [], REAP_EVERY_S)
        if ready:
            data = requests.read(65536)
            if not data:
                open_input = False
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = {**json.loads(line), "main": main_path}
                pid = os.fork()
                if pid == 0:
                    _child(request)
                children[pid] = request["id"]
                answer({"id": request["id"], "pid": pid})
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            answer({"id": children.pop(pid), "rc": os.waitstatus_to_exitcode(status)})
        if not open_input:
            return  # the test process went: its children are left as a plain Popen's would be


class CliServer:
    """The caller's side of one server."""

    def __init__(self) -> None:
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.clifork import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.tmp = tempfile.TemporaryDirectory(prefix="clifork-")
        self.ids = itertools.count(1)
        self.answers: dict[tuple[int, str], int] = {}  # (id, "pid" | "rc") -> value
        self.pending = b""
        self.lock = threading.Lock()  # tests may run commands from several threads

    def _read(self, timeout: float | None) -> bool:
        """Take the answers that arrive within ``timeout`` s (at least one, unless it passes)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return False
        data = os.read(fd, 65536)
        if not data:
            raise RuntimeError(f"the CLI fork server exited ({self.proc.poll()})")
        self.pending += data
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            message = json.loads(line)
            kind = "pid" if "pid" in message else "rc"
            self.answers[(message["id"], kind)] = int(message[kind])
        return True

    def take(self, ident: int, kind: str, timeout: float | None) -> int | None:
        """The answer ``kind`` of request ``ident``, waiting at most ``timeout`` s (None: no bound)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.lock:
                if (ident, kind) in self.answers:
                    return self.answers.pop((ident, kind))
                left = 0.5 if deadline is None else min(0.5, max(0.0, deadline - time.monotonic()))
                self._read(left)  # a slice at a time: another thread may be waiting for its answer
                if (ident, kind) in self.answers:
                    return self.answers.pop((ident, kind))
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def start(
        self,
        ident: int,
        args: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        out: Path,
        err: Path,
        *,
        append: bool,
        new_session: bool = False,
    ) -> int:
        """Fork ``args`` as request ``ident``; its pid."""
        request = {
            "id": ident,
            "argv": list(args),
            "env": dict(env),
            "cwd": cwd or os.getcwd(),
            "out": str(out),
            "err": str(err),
            "append": append,
            "new_session": new_session,
        }
        assert self.proc.stdin is not None
        with self.lock:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        pid = self.take(ident, "pid", 60.0)
        assert pid is not None, "the CLI fork server did not fork"
        return pid

    def run(
        self, args: Sequence[str], *, env: Mapping[str, str], timeout: float, cwd: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        ident = next(self.ids)
        out, err = Path(self.tmp.name, f"{ident}.out"), Path(self.tmp.name, f"{ident}.err")
        pid = self.start(ident, args, env, cwd, out, err, append=False)
        rc = self.take(ident, "rc", timeout)
        if rc is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.take(ident, "rc", None)
            raise subprocess.TimeoutExpired(
                [PROG_NAME, *args], timeout, out.read_text(errors="replace"), err.read_text(errors="replace")
            )
        done = subprocess.CompletedProcess(
            [sys.executable, "-m", "mysimbdp", *args],
            rc,
            out.read_text(errors="replace"),
            err.read_text(errors="replace"),
        )
        out.unlink()
        err.unlink()
        return done

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.tmp.cleanup()


class Forked:
    """A long command forked by the server: what the tests use of a ``subprocess.Popen``."""

    def __init__(self, owner: CliServer, ident: int, pid: int, args: Sequence[str]) -> None:
        self.owner, self.ident, self.pid, self.args = owner, ident, pid, list(args)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.owner.take(self.ident, "rc", 0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.owner.take(self.ident, "rc", timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired([PROG_NAME, *self.args], timeout or 0.0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_server: CliServer | None = None


def server() -> CliServer:
    """This test process's server, started on first use (tests/conftest.py closes it)."""
    global _server
    if _server is None or _server.proc.poll() is not None:
        _server = CliServer()
    return _server


def close() -> None:
    global _server
    if _server is not None:
        _server.close()
        _server = None


def run(
    args: Sequence[str], *, env: Mapping[str, str], timeout: float = 120.0, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m mysimbdp ARGS`` with ``env``, output captured as text, never raising on its
    exit code: forked from this test process's server (or a fresh interpreter: see the module)."""
    if ENABLED:
        return server().run(args, env=env, timeout=timeout, cwd=cwd)
    command = [sys.executable, "-m", "mysimbdp", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def popen(
    args: Sequence[str], *, env: Mapping[str, str], stderr: Path, new_session: bool = False
) -> Forked | subprocess.Popen[bytes]:
    """Start ``python -m mysimbdp ARGS`` with stdout to ``/dev/null`` and stderr appended to
    ``stderr`` (``new_session``: in a session and process group of its own), and return at once."""
    if not ENABLED:
        with open(stderr, "ab") as log:  # the child keeps its own descriptor
            command = [sys.executable, "-m", "mysimbdp", *args]
            return subprocess.Popen(
                command, env=dict(env), stdout=subprocess.DEVNULL, stderr=log, start_new_session=new_session
            )
    owner = server()
    ident = next(owner.ids)
    pid = owner.start(ident, args, env, None, Path(os.devnull), stderr, append=True, new_session=new_session)
    return Forked(owner, ident, pid, args)
