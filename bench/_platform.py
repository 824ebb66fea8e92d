"""What the big-file benches share: a platform home with `mysimbdp up` (and extra `mysimbdp
worker` processes) running, `ingest --json` into it, the timeline of a chunked file read back
from the meta store, and the peak RSS of every platform process.

Used by bench/bigfile.py and bench/scale.py; bench/batch.py's pieces (the row generator, the
PostgreSQL URL) are imported from it, not copied.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import batch
import psutil
import psycopg

from mysimbdp.adapters.metastore import MetaStore
from mysimbdp.domain.records import RunRecord
from mysimbdp.managers.batchingest import COMPONENT as MANAGER
from mysimbdp.managers.fetchdata import COMPONENT as FETCHER
from mysimbdp.settings import Settings

TENANT = "bench"
MYSIMBDP = [sys.executable, "-m", "mysimbdp"]
READY_TIMEOUT_S = 60.0
RSS_LIMIT_BYTES = 300 * 1000 * 1000  # the bound for every platform process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_size(text: str) -> int:
    """'100M', '1G', '5G', '20000K', '123' → bytes (decimal units: M = 10^6)."""
    units = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    text = text.strip().upper().removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def human(size_bytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size_bytes >= scale * 0.995:  # 999.99 MB reads as 1 GB, not "1e+03 MB"
            return f"{size_bytes / scale:.3g} {unit}"
    return f"{size_bytes:.0f} B"


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# -- peak RSS of every process ----------------------------------------------------------------
_NOT_YET = " (not yet exec'd?)"


def _role(proc: psutil.Process, root_label: str) -> str:
    """What a process of a watched tree is: the root's label, the broker, or a tenant app."""
    try:
        name, cmdline = proc.name(), proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return f"{root_label} child{_NOT_YET}"
    if "nats-server" in name:
        return "nats-server (embedded broker)"
    module = cmdline[cmdline.index("-m") + 1] if "-m" in cmdline[:-1] else ""
    if module.startswith("mysimbdp."):
        return f"app {module} (under {root_label})"
    if len(cmdline) > 1 and cmdline[-1].endswith(".py"):
        return f"app {Path(cmdline[-1]).name} (under {root_label})"
    return f"{root_label} child {name}{_NOT_YET if name.startswith('python') else ''}"


def _child_pids(proc: psutil.Process) -> list[int]:
    """The direct children of ``proc``: from /proc/PID/task/*/children where Linux has it (it
    reads only the tree; psutil's way reads every process of the machine, per call), else psutil."""
    tasks = Path(f"/proc/{proc.pid}/task")
    try:
        return [int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()]
    except FileNotFoundError:
        if tasks.exists():  # a kernel without CONFIG_PROC_CHILDREN
            with contextlib.suppress(psutil.NoSuchProcess):
                return [child.pid for child in proc.children()]
        return []
    except OSError:
        return []


@dataclass
class Seen:
    """One process as the sampler saw it: its role, its peak RSS, and its CPU time (user +
    system) from the sampler's start (a process already running then) or its own start
    to the last sample."""

    role: str
    cpu_base_s: float
    peak_rss_bytes: int = 0
    cpu_s: float = 0.0


class TreeSampler:
    """Samples every process of the watched trees every ``interval_s``; keeps each one's peak
    RSS and CPU time (``Seen``; a process's last ~50 ms of CPU go unseen), and the trees'
    largest RSS at one sample (``peak_total_bytes``: the processes together, at once). A
    child seen between its fork and its exec counts its own pages only (USS): the rest are
    its parent's, shared copy-on-write and counted there.

    Roots can be added while it runs (``watch``): `up`, the ingest CLI, each worker. Their
    children (the embedded nats-server, every app run) are found at each sample."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.seen: dict[int, Seen] = {}
        self.peak_total_bytes = 0  # the largest sum of the trees' RSS in one sample (all at once)
        self._roots: list[tuple[str, psutil.Process]] = []
        self._procs: dict[int, psutil.Process] = {}  # the trees' processes at the last sample
        self._started_at = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tree-sampler")

    def watch(self, label: str, pid: int) -> None:
        with contextlib.suppress(psutil.NoSuchProcess), self._lock:
            self._roots.append((label, psutil.Process(pid)))

    def _tree(self) -> list[tuple[str, str | None, psutil.Process]]:
        """(root label, role if a root, process) for every process of the watched trees."""
        with self._lock:
            roots = list(self._roots)
        found: list[tuple[str, str | None, psutil.Process]] = []
        procs: dict[int, psutil.Process] = {}
        for label, root in roots:
            found.append((label, label, root))
            stack = _child_pids(root)
            while stack:
                pid = stack.pop()
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc = procs[pid] = self._procs.get(pid) or psutil.Process(pid)
                    found.append((label, None, proc))
                    stack.extend(_child_pids(proc))
        self._procs = procs  # the ones gone are forgotten (a reused pid is a new process)
        return found

    def _sample(self) -> None:
        total = 0
        for label, role, proc in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                with proc.oneshot():
                    rss, cpu, born = proc.memory_info().rss, proc.cpu_times(), proc.create_time()
                cpu_s = cpu.user + cpu.system
                seen = self.seen.get(proc.pid)
                if seen is None:
                    base = cpu_s if born < self._started_at else 0.0  # older than the sampler: from now on
                    seen = self.seen[proc.pid] = Seen(role or _role(proc, label), base)
                elif seen.role.endswith(_NOT_YET):  # seen between fork and exec: look again
                    seen.role = _role(proc, label)
                if seen.role.endswith(_NOT_YET):
                    # a fork before its exec maps its parent's pages (copy-on-write, counted in the
                    # parent's RSS): only its own pages are memory it adds (USS, from smaps)
                    rss = proc.memory_full_info().uss
                seen.peak_rss_bytes = max(seen.peak_rss_bytes, rss)
                seen.cpu_s = cpu_s - seen.cpu_base_s
                total += rss
        self.peak_total_bytes = max(self.peak_total_bytes, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def by_role(self) -> dict[str, dict[str, float]]:
        """Per role: how many processes had it, the largest peak RSS, their CPU seconds."""
        roles: dict[str, dict[str, float]] = {}
        for seen in self.seen.values():
            entry = roles.setdefault(seen.role, {"processes": 0, "peak_rss_bytes": 0, "cpu_s": 0.0})
            entry["processes"] += 1
            entry["peak_rss_bytes"] = max(entry["peak_rss_bytes"], seen.peak_rss_bytes)
            entry["cpu_s"] = round(entry["cpu_s"] + seen.cpu_s, 2)
        return dict(sorted(roles.items()))

    def largest(self) -> int:
        return max((seen.peak_rss_bytes for seen in self.seen.values()), default=0)


# -- a platform home with `up` running -------------------------------------------------------
@dataclass
class Ingested:
    """One `ingest --json` into the running platform and what the meta store says of it."""

    seconds: float
    summary: dict[str, Any]
    events: list[tuple[float, str]]  # (at, status) of the file
    runs: list[RunRecord]  # the chunk runs (one per chunk unless a chunk was retried)
    rows_in_store: int
    count_s: float  # how long `query --count` took (the rows read back from coredms)
    received_at: float  # when fetchdata took the file, before its scan

    @property
    def rows(self) -> int:
        return int(self.summary["rows_written"])

    def timeline(self, started_at: float, slots: int) -> dict[str, Any]:
        """Where the wall time went, from the CLI's start (``started_at``, epoch seconds):
        copy into the inbox and pick-up, the fetch scan, planning and queueing the chunks, the
        chunk runs, and the file's finish; plus the chunk runs' own figures."""
        first = {status: when for when, status in reversed(self.events)}
        received = self.received_at
        staged = first.get("staged", received)
        running = first.get("running", staged)
        ended = self.events[-1][0] if self.events else received
        ok = [r for r in self.runs if r.ended_at is not None]
        run_s = [float(r.ended_at or 0) - r.started_at for r in ok]
        first_run = min((r.started_at for r in ok), default=running)
        last_end = max((float(r.ended_at or 0) for r in ok), default=ended)
        chunk_phase = max(0.0, last_end - first_run)
        rows_per_run = [r.rows_written / s for r, s in zip(ok, run_s, strict=True) if s > 0]
        return {
            "copy_and_pickup_s": round(received - started_at, 3),
            "fetch_s": round(staged - received, 3),
            "wait_for_manager_s": round(running - staged, 3),
            "plan_and_queue_s": round(first_run - running, 3),
            "chunks_s": round(chunk_phase, 3),
            "finish_s": round(ended - last_end, 3),
            "cli_after_final_s": round(started_at + self.seconds - ended, 3),
            "chunk_runs": len(ok),
            "chunk_run_s": {
                "min": round(min(run_s, default=0), 3),
                "mean": round(sum(run_s) / len(run_s), 3) if run_s else 0,
                "max": round(max(run_s, default=0), 3),
            },
            "chunk_rows_per_s_mean": round(sum(rows_per_run) / len(rows_per_run)) if rows_per_run else 0,
            "slot_utilisation": round(sum(run_s) / (chunk_phase * slots), 3) if chunk_phase and slots else None,
            "chunk_peak_rss_bytes_max": max((r.peak_rss_bytes for r in ok), default=0),
        }


class BenchPlatform:
    """A fresh platform home under ``work`` with tenant ``bench``; `up` runs while in `with`.

    Embedded SQLite and NATS by default; ``postgres``: the meta store in a fresh schema and
    coredms in the bench database (tables under a fresh prefix), dropped on exit. ``workers``:
    ``MYSIMBDP_WORKERS`` for `up` (None: its default, the CPU count)."""

    def __init__(
        self, work: Path, name: str, profile_yaml: str, *, postgres: bool = False, workers: int | None = None
    ) -> None:
        self.home = work / f"home-{name}"
        self.logs = work / f"logs-{name}"
        self.profile_yaml = profile_yaml
        self.postgres = postgres
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
        self.env.update(
            MYSIMBDP_HOME=str(self.home),
            MYSIMBDP_LOG_FORMAT="json",
            MYSIMBDP_LOG_LEVEL="info",
            MYSIMBDP_API_PORT=str(free_port()),
        )
        if workers is not None:
            self.env["MYSIMBDP_WORKERS"] = str(workers)
        self.slots = workers if workers is not None else os.cpu_count() or 1  # chunk slots inside `up`
        prefix = f"b{uuid.uuid4().hex[:6]}"
        self.schema = f"{prefix}_meta"
        if postgres:
            self.env.update(
                MYSIMBDP_META_URL=f"{batch.PG_URL}?options=-csearch_path%3D{self.schema}",
                MYSIMBDP_COREDMS_URL=batch.PG_URL,
                MYSIMBDP_PG_PREFIX=prefix,
            )
        self.meta_url = Settings.from_env(self.env).meta_url
        self.up: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}  # pid → its log

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> BenchPlatform:
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.postgres:
            with psycopg.connect(batch.PG_URL, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{self.schema}"')
        profile = self.logs / "profile.yaml"
        profile.write_text(self.profile_yaml)
        self._cli("tenant", "add", TENANT, "--profile", str(profile))
        self.up = self._spawn("up")
        self._wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in [*self.workers, self.up]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, self.up]:
            if proc is not None:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        with contextlib.suppress(subprocess.CalledProcessError):
            self._cli("tenant", "remove", TENANT, "--yes")
        if self.postgres:
            with psycopg.connect(batch.PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        shutil.rmtree(self.home, ignore_errors=True)

    def _cli(self, *args: str) -> str:
        done = subprocess.run([*MYSIMBDP, *args], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, ["mysimbdp", *args], done.stdout, done.stderr)
        return done.stdout

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        """A long-running `mysimbdp ARGS`, its stderr (the JSON log) in ``logs/``."""
        log = self.logs / f"{args[0]}-{len(self._logs)}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([*MYSIMBDP, *args], env=self.env, stdout=subprocess.DEVNULL, stderr=fh)
        self._logs[proc.pid] = log
        return proc

    def log_tail(self, proc: subprocess.Popen[bytes], chars: int = 3000) -> str:
        log = self._logs.get(proc.pid)
        return log.read_text(errors="replace")[-chars:] if log and log.exists() else ""

    def _meta(self) -> MetaStore:
        meta = MetaStore(self.meta_url)
        meta.start()
        return meta

    def _wait_ready(self) -> None:
        """Until `up` wrote its broker URL, answers /healthz, and fetchdata and the batch
        manager beat (else `ingest` would run the file in the CLI itself)."""
        assert self.up is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        url_file = self.home / "broker" / "url"
        health = f"http://127.0.0.1:{self.env['MYSIMBDP_API_PORT']}/healthz"
        while time.monotonic() < deadline:
            if self.up.poll() is not None:
                raise SystemExit(f"mysimbdp up exited with {self.up.returncode}: {self.log_tail(self.up)}")
            if url_file.exists() and _healthy(health):
                meta = self._meta()
                try:
                    if meta.alive(FETCHER, 10.0) and meta.alive(MANAGER, 10.0):
                        return
                finally:
                    meta.close()
            time.sleep(0.2)
        raise SystemExit(f"mysimbdp up (home {self.home}) was not ready within {READY_TIMEOUT_S:.0f} s")

    def start_workers(self, count: int, slots: int = 1) -> list[subprocess.Popen[bytes]]:
        """``count`` `mysimbdp worker --slots N` processes, each waited for until it logged
        ``worker_started`` (connected to the broker)."""
        started = [self._spawn("worker", "--slots", str(slots)) for _ in range(count)]
        self.workers.extend(started)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for proc in started:
            while b"worker_started" not in self._logs[proc.pid].read_bytes():
                if proc.poll() is not None:
                    raise SystemExit(f"mysimbdp worker exited with {proc.returncode}: {self.log_tail(proc)}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"mysimbdp worker was not ready within {READY_TIMEOUT_S:.0f} s")
                time.sleep(0.1)
        return started

    # -- one file ---------------------------------------------------------------------------
    def ingest(self, path: Path, sampler: TreeSampler | None = None) -> Ingested:
        """`mysimbdp ingest PATH --tenant bench --json`, timed from the CLI's start to its exit;
        then the file's events and runs from the meta store and the rows in coredms."""
        t0 = time.perf_counter()
        cli = subprocess.Popen(
            [*MYSIMBDP, "ingest", str(path), "--tenant", TENANT, "--json"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        if sampler is not None:
            sampler.watch("ingest CLI", cli.pid)
        out, err = cli.communicate()
        seconds = time.perf_counter() - t0
        if cli.returncode != 0:
            up_log = self.log_tail(self.up) if self.up is not None else ""
            raise SystemExit(
                f"ingest {path.name} failed (exit {cli.returncode}): {out.decode()[-3000:]} {err.decode()}\n"
                f"up's log ends: {up_log}"
            )
        summary = json.loads(out)
        meta = self._meta()
        try:
            events = [(at, status) for at, status, _ in meta.file_events(summary["file_id"])]
            runs = [r for r in meta.list_runs(TENANT, limit=1_000_000) if r.file_id == summary["file_id"]]
            record = meta.get_file(summary["file_id"])
        finally:
            meta.close()
        t0 = time.perf_counter()
        count = self._cli("query", "--tenant", TENANT, "--dataset", summary["dataset"], "--count")
        count_s = time.perf_counter() - t0
        assert record is not None
        return Ingested(seconds, summary, events, runs, int(count.strip()), count_s, record.received_at)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def rss_report(rss: TreeSampler, runs: list[RunRecord]) -> dict[str, Any]:
    """Peak RSS per role (sampled) and per chunk run (the runner's own figure, meta store)."""
    roles = rss.by_role()
    runs_peak = max((r.peak_rss_bytes for r in runs), default=0)
    largest = max(rss.largest(), runs_peak)
    return {
        "sampled_by_role": roles,
        "sampled_per_process": [
            {"pid": pid, "role": seen.role, "peak_rss_bytes": seen.peak_rss_bytes, "cpu_s": round(seen.cpu_s, 2)}
            for pid, seen in sorted(rss.seen.items())
        ],
        "chunk_runs_recorded_max_bytes": runs_peak,
        "largest_bytes": largest,
        "all_under_300_mb": largest < RSS_LIMIT_BYTES,
    }


def print_rss(report: dict[str, Any], indent: str = "    ") -> None:
    for role, entry in report["sampled_by_role"].items():
        flag = "" if entry["peak_rss_bytes"] < RSS_LIMIT_BYTES else "  OVER 300 MB"
        count = f" ({entry['processes']} processes)" if entry["processes"] > 1 else ""
        print(
            f"{indent}peak RSS {role}{count}: {entry['peak_rss_bytes'] / 1e6:.0f} MB{flag} (CPU {entry['cpu_s']:.1f} s)"
        )
    recorded = report["chunk_runs_recorded_max_bytes"] / 1e6
    print(f"{indent}peak RSS of a chunk run as the runner recorded it (meta store): {recorded:.0f} MB")
    verdict = "every process under 300 MB" if report["all_under_300_mb"] else "SOME PROCESS OVER 300 MB"
    print(f"{indent}{verdict} (largest {report['largest_bytes'] / 1e6:.0f} MB)")
