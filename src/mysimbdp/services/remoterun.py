"""A remote chunk worker's side of one chunk run (``mysimbdp worker --api URL``), on a machine
with a home of its own and none of the platform's.

- The tenant's bundle is fetched once per version (its sha256 checked) and unpacked under
  ``HOME/worker/bundles/<tenant>/<version>``; a later chunk of the same version reuses it.
- The chunk's input is a sparse file of the staged file's size holding only the byte ranges the
  task names (the chunk's, and a CSV's header or a Parquet file's magic and footer), each
  checked against its sha256: the app reads bytes ``[start, end)`` at the offsets the chunk
  has in the whole file, so its lines, row numbers and record keys are those of a local run.
- The app runs as a local chunk run's does: through the one runner, in this machine's sandbox
  (its bundle and input to read, its run directory to write, the store's port), with the
  contract environment of the task (the tenant's scoped store URL) and this machine's paths.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mysimbdp import contract
from mysimbdp.adapters.process import runner
from mysimbdp.adapters.process.sandbox import app_grant
from mysimbdp.adapters.workerapi import WorkerApi
from mysimbdp.domain.profile import parse_profile
from mysimbdp.domain.remotetask import RemoteTask
from mysimbdp.errors import ChunkFetchRefused, ProfileError
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.app_run import read_json

__all__ = ["LocalRun", "ensure_bundle", "fetch_input", "progress_of", "run_chunk_app", "worker_dir"]

READY = ".ready"  # written last into an unpacked bundle


@dataclass(frozen=True)
class LocalRun:
    """What a chunk's app run left on the worker: the finish report's fields."""

    outcome: runner.Outcome
    result: dict[str, Any]
    rejects: bytes
    started: float
    ended: float

    def report(self) -> dict[str, Any]:
        """The body of ``POST /v1/worker/chunks/{task}/finish``."""
        outcome = asdict(self.outcome)
        outcome["stdout_tail"] = outcome["stdout_tail"][-8000:]
        outcome["stderr_tail"] = outcome["stderr_tail"][-8000:]
        return {
            **outcome,
            "result": self.result,
            "rejects": self.rejects.decode(errors="replace"),
            "started": self.started,
            "ended": self.ended,
        }


def worker_dir(platform: Platform) -> Path:
    return platform.home.root / "worker"


async def ensure_bundle(platform: Platform, api: WorkerApi, task: RemoteTask) -> Path:
    """The task's bundle version, unpacked here (fetched and checked the first time)."""
    target = worker_dir(platform) / "bundles" / task.tenant / task.bundle_version
    if (target / READY).exists():
        return target
    data = await api.bundle(task)  # its sha256 is checked against the version
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{task.bundle_version[:12]}.", dir=target.parent))
    try:
        _unpack(task, data, staged)
        (staged / READY).write_text(task.bundle_version)
        staged.chmod(0o755)
        try:
            staged.rename(target)
        except OSError:  # another slot unpacked the same version meanwhile
            if not (target / READY).exists():
                raise
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return target


def _unpack(task: RemoteTask, data: bytes, into: Path) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                if not member.isfile() or member.name.startswith("/") or ".." in Path(member.name).parts:
                    raise ChunkFetchRefused(
                        f"{task.describe()}: bundle {task.bundle_version}: entry {member.name!r} is not a plain "
                        "relative file; refused"
                    )
            tar.extractall(into, filter="data")
    except tarfile.TarError as exc:
        raise ChunkFetchRefused(f"{task.describe()}: bundle {task.bundle_version} is not a tar: {exc}") from exc


async def fetch_input(api: WorkerApi, task: RemoteTask, path: Path) -> None:
    """The sparse copy of the staged file holding the task's ranges, each one checked."""
    with path.open("wb") as out:
        out.truncate(task.size_bytes)
        for piece in task.ranges:
            await api.fetch_range(task, piece, out)


async def run_chunk_app(
    platform: Platform, task: RemoteTask, bundle: Path, input_path: Path, run_dir: Path
) -> LocalRun:
    """Run the tenant's app on the chunk through the runner, in this machine's sandbox."""
    where = f"tenant {task.tenant!r}: bundle {task.bundle_version}"
    try:
        profile = parse_profile((bundle / "profile.yaml").read_text(encoding="utf-8"), f"{bundle}/profile.yaml")
    except (OSError, ProfileError) as exc:
        raise ChunkFetchRefused(f"{where}: its profile cannot be read: {exc}") from exc
    app = profile.batch_app(task.app)
    if app is None:
        raise ChunkFetchRefused(f"{where}: its profile has no batch app {task.app!r}; refused")
    work = run_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **task.env,
        contract.INPUT: str(input_path),
        contract.RESULT: str(run_dir / "result.json"),
        contract.REJECTS: str(run_dir / "rejects.jsonl"),
        contract.PROGRESS: str(run_dir / "progress.json"),
    }
    grant = app_grant(
        task.tenant,
        platform.home.root,
        bundle=bundle,
        inputs=[input_path],
        writable=[run_dir],
        coredms_url=env.get(contract.COREDMS_URL, ""),
        network=str(app.network),
    )
    limits = runner.Limits(timeout_s=app.timeout_s, memory_bytes=app.memory_mb * 1024 * 1024, cpu_s=app.cpu_s)
    started = time.time()
    outcome = await runner.run(
        runner.app_argv(app.command, str(bundle)),
        env=runner.build_env(env, platform.env),
        cwd=work,
        limits=limits,
        sandbox=platform.sandbox(grant),
    )
    rejects_path = run_dir / "rejects.jsonl"
    rejects = rejects_path.read_bytes() if rejects_path.exists() else b""
    return LocalRun(outcome, read_json(run_dir / "result.json"), rejects, started, time.time())


def progress_of(run_dir: Path) -> tuple[int, int]:
    """What the running app last reported (rows, bytes)."""
    now = read_json(run_dir / "progress.json")
    return int(now.get("rows", 0)), int(now.get("bytes", 0))
