"""The subprocess runner against real processes: exits, tails, limits, kills, environment."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from mysimbdp.adapters.process.runner import Limits, Outcome, build_env, run
from mysimbdp.adapters.process.sandbox import Grant, Sandbox, probe
from tests.helpers import until

PY = sys.executable


def confined(tmp_path: Path) -> Sandbox:
    """The machine's sandbox granting the test's directory: the runner's mechanics hold inside it
    (the sandbox's own rules are proved in ``test_sandbox.py``)."""
    return Sandbox(probe("on"), Grant("acme", tmp_path / "home", write=(tmp_path,)))


def _run(
    code: str,
    cwd: Path,
    limits: Limits | None = None,
    tail_bytes: int = 64 * 1024,
    on_start: Callable[[int], None] | None = None,
) -> Outcome:
    argv = [PY, "-c", textwrap.dedent(code)]
    limits = limits or Limits(timeout_s=60)
    env = build_env({}, os.environ)
    sandbox = confined(cwd.parent)
    return asyncio.run(
        run(argv, env=env, cwd=cwd, limits=limits, sandbox=sandbox, tail_bytes=tail_bytes, on_start=on_start)
    )


def _gone(pid: int) -> bool:
    """True when the process no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _read_pid(path: Path, timeout_s: float = 10.0) -> int:
    until(lambda: path.exists() and path.read_text().strip() != "", timeout_s, what=f"{path} to be written")
    return int(path.read_text())


SPAWN_GRANDCHILD = """
    import subprocess, sys, time
    child = subprocess.Popen(["sleep", "60"])
    with open(sys.argv[1] + ".tmp", "w") as fh:
        fh.write(str(child.pid))
    import os; os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(60)
"""


def test_exit_zero_keeps_stdout_and_stderr_tails(tmp_path: Path) -> None:
    """A successful app yields exit 0, ok, both tails and byte counts, and on_start gets its pid."""
    pids: list[int] = []
    outcome = _run(
        "import sys; print('hello out'); print('hello err', file=sys.stderr)",
        tmp_path / "run",
        on_start=pids.append,
    )
    assert outcome.ok and outcome.exit_code == 0 and outcome.signal is None and not outcome.timed_out
    assert outcome.stdout_tail == "hello out\n" and outcome.stderr_tail == "hello err\n"
    assert outcome.stdout_bytes == 10 and outcome.stderr_bytes == 10
    assert len(pids) == 1 and pids[0] > 0
    assert outcome.describe() == "exit 0"


def test_non_zero_exit_reports_code_and_stderr(tmp_path: Path) -> None:
    """A failing app yields its exit code, not ok, and its traceback in the stderr tail."""
    outcome = _run("import sys; sys.stderr.write('giving up\\n'); sys.exit(3)", tmp_path / "run")
    assert outcome.exit_code == 3 and not outcome.ok
    assert "giving up" in outcome.stderr_tail
    assert outcome.describe() == "exit 3"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """On timeout the app and the grandchild it spawned are both killed and the outcome says so."""
    pid_file = tmp_path / "grandchild.pid"
    outcome = asyncio.run(
        run(
            [PY, "-c", textwrap.dedent(SPAWN_GRANDCHILD), str(pid_file)],
            env=build_env({}, os.environ),
            cwd=tmp_path / "run",
            limits=Limits(timeout_s=3.0, grace_s=1.0),
            sandbox=confined(tmp_path),
        )
    )
    assert outcome.timed_out and not outcome.ok
    assert outcome.exit_code is None and outcome.signal == signal.SIGTERM
    assert outcome.describe() == "timed out after 3.0 s (process group killed)"
    grandchild = _read_pid(pid_file, timeout_s=0)
    until(lambda: _gone(grandchild), 20.0, what="the grandchild to be gone after the timeout")


def test_app_ignoring_sigterm_is_sigkilled_after_grace(tmp_path: Path) -> None:
    """An app that ignores SIGTERM is SIGKILLed once the grace period is over."""
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    outcome = _run(code, tmp_path / "run", Limits(timeout_s=2.0, grace_s=0.5))
    assert outcome.timed_out and outcome.signal == signal.SIGKILL
    assert outcome.stdout_tail == "ready\n"


def test_stdout_flood_is_drained_with_a_bounded_tail(tmp_path: Path) -> None:
    """An app writing 300 MiB to stdout finishes; every byte is counted but only the tail is kept."""
    code = """
        import sys
        block = b"x" * (1 << 20)
        for _ in range(299):
            sys.stdout.buffer.write(block)
        sys.stdout.buffer.write(b"y" * ((1 << 20) - 4) + b"END\\n")
        sys.stdout.buffer.flush()
    """
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    outcome = _run(code, tmp_path / "run", tail_bytes=4096)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert outcome.ok, outcome.stderr_tail
    assert outcome.stdout_bytes == 300 * (1 << 20)
    assert len(outcome.stdout_tail) == 4096 and outcome.stdout_tail.endswith("yyyEND\n")
    assert after - before < 64 * (1 << 20), "the platform's peak memory grew with the app's output"


def test_memory_limit_makes_a_large_allocation_fail(tmp_path: Path) -> None:
    """With a 256 MiB address-space limit, allocating 1 GiB raises MemoryError and the run fails."""
    outcome = _run("blob = bytearray(1 << 30)", tmp_path / "run", Limits(timeout_s=60, memory_bytes=256 << 20))
    assert not outcome.ok and outcome.exit_code not in (0, None)
    assert "MemoryError" in outcome.stderr_tail


def test_cpu_limit_kills_a_busy_loop(tmp_path: Path) -> None:
    """A busy loop past its CPU seconds is killed by SIGXCPU (or SIGKILL at the hard limit)."""
    outcome = _run("while True: pass", tmp_path / "run", Limits(timeout_s=60, cpu_s=1))
    assert not outcome.timed_out
    assert outcome.signal in (signal.SIGXCPU, signal.SIGKILL)
    assert "CPU time limit" in outcome.describe() or outcome.describe() == "killed by SIGKILL"


def test_file_size_limit_stops_a_large_write(tmp_path: Path) -> None:
    """Writing past the file size limit fails the app instead of filling the disk."""
    code = "open('big.bin', 'wb').write(b'x' * (4 << 20))"
    outcome = _run(code, tmp_path / "run", Limits(timeout_s=60, file_size_bytes=1 << 20))
    assert not outcome.ok
    assert (tmp_path / "run" / "big.bin").stat().st_size <= 1 << 20


def test_environment_is_allow_listed(tmp_path: Path) -> None:
    """Platform secrets in the parent environment never reach the app; contract values do."""
    parent = {**os.environ, "MYSIMBDP_SECRET_TEST": "s3cret", "PGPASSWORD": "hunter2", "HOME": "/root"}
    env = build_env({"MYSIMBDP_TENANT": "acme"}, parent)
    outcome = asyncio.run(
        run(
            [PY, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
            env=env,
            cwd=tmp_path / "run",
            limits=Limits(timeout_s=60),
            sandbox=confined(tmp_path),
        )
    )
    seen = json.loads(outcome.stdout_tail)
    assert "MYSIMBDP_SECRET_TEST" not in seen and "PGPASSWORD" not in seen
    assert seen["MYSIMBDP_TENANT"] == "acme"
    assert seen["PYTHONUNBUFFERED"] == "1" and seen["PYTHONDONTWRITEBYTECODE"] == "1"
    assert seen["HOME"] == str(tmp_path / "run")
    assert set(seen) - {"MYSIMBDP_TENANT", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "HOME"} <= {
        "PATH",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "TMPDIR",
    }


def test_build_env_keeps_only_allow_listed_parent_variables() -> None:
    """build_env copies allow-listed parent variables and the contract values, nothing else."""
    env = build_env({"MYSIMBDP_RUN_ID": "r1"}, {"PATH": "/bin", "DATABASE_URL": "postgres://x", "HOME": "/h"})
    assert env == {"PATH": "/bin", "MYSIMBDP_RUN_ID": "r1", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def test_app_runs_in_the_given_directory_created_if_missing(tmp_path: Path) -> None:
    """The app's working directory is the given one, created when it does not exist yet."""
    cwd = tmp_path / "runs" / "r1" / "work"
    outcome = _run("import os; print(os.getcwd())", cwd)
    assert outcome.ok and outcome.stdout_tail.strip() == str(cwd)


def test_cancelling_the_run_kills_the_group(tmp_path: Path) -> None:
    """Cancelling the task awaiting run() kills the app and its grandchild and re-raises CancelledError."""
    pid_file = tmp_path / "grandchild.pid"
    started: list[int] = []

    async def scenario() -> None:
        task = asyncio.create_task(
            run(
                [PY, "-c", textwrap.dedent(SPAWN_GRANDCHILD), str(pid_file)],
                env=build_env({}, os.environ),
                cwd=tmp_path / "run",
                limits=Limits(timeout_s=120, grace_s=1.0),
                sandbox=confined(tmp_path),
                on_start=started.append,
            )
        )
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    grandchild = _read_pid(pid_file, timeout_s=0)
    until(lambda: _gone(started[0]) and _gone(grandchild), 20.0, what="every process to be gone after the cancellation")


def test_app_dies_when_the_platform_is_sigkilled(tmp_path: Path) -> None:
    """If the platform process is SIGKILLed, its running app is killed too (parent-death signal)."""
    pid_file = tmp_path / "app.pid"
    parent_code = textwrap.dedent(
        f"""
        import asyncio, os, sys
        from pathlib import Path
        from mysimbdp.adapters.process.runner import Limits, build_env, run
        from mysimbdp.adapters.process.sandbox import Grant, Sandbox, probe

        def started(pid):
            Path({str(pid_file)!r} + ".tmp").write_text(str(pid))
            os.replace({str(pid_file)!r} + ".tmp", {str(pid_file)!r})

        asyncio.run(run([sys.executable, "-c", "import time; time.sleep(60)"], env=build_env({{}}, os.environ),
                        cwd=Path({str(tmp_path / "run")!r}), limits=Limits(timeout_s=120), on_start=started,
                        sandbox=Sandbox(probe("on"), Grant("t", Path("/no"), write=(Path({str(tmp_path)!r}),)))))
        """
    )
    parent = subprocess.Popen([PY, "-c", parent_code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        app = _read_pid(pid_file)
        assert not _gone(app)
    finally:
        parent.kill()
        parent.wait()
    until(lambda: _gone(app), 20.0, what="the app to end with its SIGKILLed platform")


def test_nonexistent_executable_is_a_failed_run(tmp_path: Path) -> None:
    """A missing program gives exit 127 with the OS error in stderr_tail instead of raising."""
    outcome = asyncio.run(
        run(
            ["/nonexistent/tenant-app"],
            env={},
            cwd=tmp_path / "run",
            limits=Limits(timeout_s=5),
            sandbox=confined(tmp_path),
        )
    )
    assert outcome.exit_code == 127 and not outcome.ok
    assert "No such file" in outcome.stderr_tail and "/nonexistent/tenant-app" in outcome.stderr_tail
    assert outcome.describe() == "exit 127 (command not found)"


def test_peak_rss_reflects_the_app_not_the_platform(tmp_path: Path) -> None:
    """The peak RSS of an app that touches 100 MiB is at least that, and not the platform's size."""
    code = 'import time; b = b"x" * (100 << 20); time.sleep(0.6)'
    outcome = _run(code, tmp_path / "run")
    assert outcome.ok
    assert 100 << 20 <= outcome.peak_rss_bytes < 400 << 20


def test_the_runners_log_lines_carry_the_ids_of_the_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One tenant's story is one grep: what the runner logs names the run it belongs to."""
    from mysimbdp import logs

    logs.configure("info", "json")

    async def main() -> None:
        with logs.log_context(tenant="acme", file_id="f1", run_id="r1"):
            await run(
                [PY, "-c", "pass"],
                env=build_env({}, os.environ),
                cwd=tmp_path,
                limits=Limits(timeout_s=30),
                sandbox=confined(tmp_path),
            )

    asyncio.run(main())
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    events = {line["event"]: line for line in lines if line.get("component") == "runner"}
    assert set(events) == {"app_started", "app_ended"}
    for line in events.values():
        assert (line["tenant"], line["file_id"], line["run_id"]) == ("acme", "f1", "r1")
