"""A warm ``mysimbdp`` for the tests: one server process per test process imports the CLI
and the modules its commands load, once, then forks a child for each command.

Each command still runs in its own process, with its own argv, environment, working
directory, stdin (``/dev/null``), stdout and stderr (files the caller reads back) and exit
code, exactly as ``python -m mysimbdp ARGS`` would; only the imports are paid once per test
process instead of once per command (about 0.3-0.5 s of CPU each on this machine, and the
e2e tests run over a thousand commands). The same idea as ``multiprocessing``'s
forkserver. The server has no threads (forking one with threads is unsafe) and imports only:
no module of the platform reads the environment at import, so each child's environment is
the one it was given.

The protocol, one JSON line each way per command, over the server's stdin and stdout:
the caller sends ``{argv, env, cwd, out, err}``, the server answers ``{pid}`` once it forked,
then ``{rc}`` (the child's exit code, or ``-signal``) once the child ended. A caller past its
timeout kills the child (``pid``) and still reads ``rc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["ENABLED", "CliServer", "close", "run", "server"]

ENABLED = os.environ.get("MYSIMBDP_TEST_CLI_FORK", "1") != "0"  # 0: a fresh interpreter per command

PROG_NAME = "python -m mysimbdp"  # what click names the program when run as `python -m mysimbdp`
PRELOAD = (  # the modules the commands import inside their functions
    "mysimbdp.cli",
    "mysimbdp.settings",
    "mysimbdp.runtime.platform",
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
)


def _child(request: Mapping[str, Any]) -> None:
    """In the forked child: become ``python -m mysimbdp ARGV`` and never return."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["out"], os.O_WRONLY | os.O_TRUNC)
        err = os.open(request["err"], os.O_WRONLY | os.O_TRUNC)
        for fd, target in ((stdin, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        sys.argv = [str(Path(request["main"])), *request["argv"]]
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
    """The server's loop (run as ``python -c 'from tests.clifork import serve; serve()'``)."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    import mysimbdp

    main_path = str(Path(mysimbdp.__file__).with_name("__main__.py"))
    replies = sys.stdout
    for line in sys.stdin:
        request = {**json.loads(line), "main": main_path}
        pid = os.fork()
        if pid == 0:
            _child(request)
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        replies.write(json.dumps({"rc": rc}) + "\n")
        replies.flush()


class CliServer:
    """The caller's side: :meth:`run` is ``subprocess.run([python, -m, mysimbdp, *args])``."""

    def __init__(self) -> None:
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.clifork import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            bufsize=1,
        )
        self.tmp = tempfile.TemporaryDirectory(prefix="clifork-")

    def _reply(self, timeout: float | None) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the CLI fork server exited ({self.proc.poll()})")
        return dict(json.loads(line))

    def run(
        self, args: Sequence[str], *, env: Mapping[str, str], timeout: float, cwd: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        out, err = Path(self.tmp.name, "out"), Path(self.tmp.name, "err")
        out.write_bytes(b"")
        err.write_bytes(b"")
        request = {"argv": list(args), "env": dict(env), "cwd": cwd or os.getcwd(), "out": str(out), "err": str(err)}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        started = self._reply(60.0)
        assert started is not None, "the CLI fork server did not fork"
        done = self._reply(timeout)
        if done is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(started["pid"], signal.SIGKILL)
            self._reply(None)
            raise subprocess.TimeoutExpired(
                [PROG_NAME, *args], timeout, out.read_text(errors="replace"), err.read_text(errors="replace")
            )
        return subprocess.CompletedProcess(
            [sys.executable, "-m", "mysimbdp", *args],
            int(done["rc"]),
            out.read_text(errors="replace"),
            err.read_text(errors="replace"),
        )

    def close(self) -> None:
        stream: IO[str] | None = self.proc.stdin
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.tmp.cleanup()


_server: CliServer | None = None


def server() -> CliServer:
    """This test process's server, started on first use (pytest's session ends it: conftest)."""
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
    """``python -m mysimbdp ARGS`` with ``env`` (output captured as text, never raises on its
    exit code): forked from this test process's server, or, with ``MYSIMBDP_TEST_CLI_FORK=0``,
    a fresh interpreter."""
    if ENABLED:
        return server().run(args, env=env, timeout=timeout, cwd=cwd)
    command = [sys.executable, "-m", "mysimbdp", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
