"""Remote chunk workers (no shared disk) against workers sharing the platform home, same run.

One CSV (bench/batch.py's rows; default 200,000 rows, ~27 MB) is ingested once per setup and
worker count, each time into a fresh platform home. Host A (a network namespace of
tests/netns.py) runs `mysimbdp up --host A` with MYSIMBDP_WORKERS=0; coredms is the machine's
PostgreSQL for both setups, reached through a TCP forwarder on the bridge (tests/forward.py),
the meta store SQLite in A's home.

- shared home: N `mysimbdp worker --slots 1` on host A with A's home (the chunk tasks from the
  broker, the staged file and bundle read from the disk);
- remote: N `mysimbdp worker --api http://A:port --slots 1`, each on a host of its own (B1, B2,
  ...) with an empty home and a worker token (chunk bytes and bundle fetched over HTTP, checked
  by sha256).

Prints rows/s per setup and worker count, remote/shared ratios, and the 2-against-1 speedup of
each; writes bench/out/remoteworkers.json. Needs root (network namespaces) and PostgreSQL.
On 2 cores the curve flattens at 2 workers: each worker's app needs a core, and so do `up`
and the forwarder. Run: `.venv/bin/python bench/remoteworkers.py [--rows N] [--workers 1,2] [--chunk-mb 4]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import batch
import httpx
from _platform import MYSIMBDP, TENANT, free_port, human, machine

from mysimbdp.adapters.metastore import MetaStore

ROOT = batch.ROOT
sys.path.insert(0, str(ROOT))

from tests.forward import Forwarder  # noqa: E402
from tests.netns import Host, Network, problem  # noqa: E402


def profile_yaml(chunk_bytes: int) -> str:
    return (
        "dataset: readings\n"
        "limits: {max_file_size_bytes: 1000000000000, max_bytes_per_day: 10000000000000}\n"
        f"big_files: {{threshold_bytes: 1, chunk_bytes: {chunk_bytes}}}\n"
    )


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    env.update(MYSIMBDP_LOG_FORMAT="json", MYSIMBDP_LOG_LEVEL="info", **values)
    return env


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*MYSIMBDP, *args], env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"mysimbdp {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}")
    return done.stdout


def _spawn(host: Host, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return host.popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_setup(
    mode: str,
    workers: int,
    a: Host,
    others: list[Host],
    work: Path,
    data: Path,
    rows: int,
    chunk_bytes: int,
    coredms: str,
) -> dict[str, Any]:
    home = work / f"{mode}-{workers}" / "home"
    logs = home.parent / "logs"
    logs.mkdir(parents=True)
    port = free_port()
    env = _env(
        MYSIMBDP_HOME=str(home),
        MYSIMBDP_COREDMS_URL=coredms,
        MYSIMBDP_PG_PREFIX=f"b{uuid.uuid4().hex[:6]}",
        MYSIMBDP_WORKERS="0",
        MYSIMBDP_API_PORT=str(port),
    )
    profile = logs / "profile.yaml"
    profile.write_text(profile_yaml(chunk_bytes))
    _cli(env, "tenant", "add", TENANT, "--profile", str(profile))
    procs = [_spawn(a, [*MYSIMBDP, "up", "--host", a.address, "--port", str(port)], env, logs / "up.log")]
    api = f"http://{a.address}:{port}"
    try:
        _wait_healthy(api)
        if mode == "shared":
            for n in range(workers):
                procs.append(_spawn(a, [*MYSIMBDP, "worker", "--slots", "1"], env, logs / f"worker-{n}.log"))
        else:
            token = json.loads(_cli(env, "worker", "token", "create", "--json"))["token"]
            for n in range(workers):
                own = home.parent / f"worker-home-{n}"
                own.mkdir()
                worker_env = _env(MYSIMBDP_HOME=str(own), MYSIMBDP_API_URL=api, MYSIMBDP_WORKER_TOKEN=token)
                argv = [*MYSIMBDP, "worker", "--slots", "1"]
                procs.append(_spawn(others[n], argv, worker_env, logs / f"worker-{n}.log"))
        started = time.perf_counter()
        summary = json.loads(_cli(env, "ingest", str(data), "--tenant", TENANT, "--json"))
        seconds = time.perf_counter() - started
        count = int(_cli(env, "query", "--tenant", TENANT, "--dataset", "readings", "--count").strip())
        chunks_s = _chunk_phase_s(home, str(summary["file_id"]))
    finally:
        _stop(procs)
        try:
            _cli(env, "tenant", "remove", TENANT, "--yes")
        finally:
            shutil.rmtree(home.parent, ignore_errors=True)
    return {
        "mode": mode,
        "workers": workers,
        "status": summary["status"],
        "rows_written": summary["rows_written"],
        "rows_in_store": count,
        "rows_match": count == rows and summary["rows_written"] == rows,
        "chunks": int((summary.get("chunks") or {"total": 1})["total"]),
        "seconds": round(seconds, 3),
        "rows_per_s": rows / seconds,
        "chunk_phase_s": round(chunks_s, 3),  # from the file's plan to its end: the workers' part
        "chunk_phase_rows_per_s": rows / chunks_s,
    }


def _chunk_phase_s(home: Path, file_id: str) -> float:
    """From the file's chunk plan to its end, as its events in the meta store say."""
    meta = MetaStore(f"sqlite:///{home / 'meta.db'}")
    meta.start()
    try:
        events = meta.file_events(file_id)
    finally:
        meta.close()
    planned = next(at for at, _, detail in events if "chunked" in detail)
    return events[-1][0] - planned


def _wait_healthy(api: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API at {api} did not answer /healthz within {timeout_s} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--workers", default="1,2", help="worker counts to run, each a fresh home")
    parser.add_argument("--chunk-mb", type=float, default=4, help="big_files.chunk_bytes in MiB [4]")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each setup, interleaved; the median counts")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "remoteworkers.json")
    args = parser.parse_args()
    if (reason := problem()) is not None:
        sys.exit(f"bench/remoteworkers.py: {reason}")
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    chunk_bytes = int(args.chunk_mb * 1024 * 1024)
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="mysimbdp-remoteworkers-"))
    results: list[dict[str, Any]] = []
    try:
        data = work / "readings.csv"
        batch.generate(data, args.rows)
        print(
            f"generated {args.rows:,} rows, {human(data.stat().st_size)}; chunks of {chunk_bytes / 2**20:g} MiB; "
            f"{info['cpus']} CPUs, load average {info['load_avg_at_start']}"
        )
        with Network() as net:
            a = net.host("a")
            others = [net.host(f"b{n + 1}") for n in range(max(counts))]
            parts = urlsplit(batch.PG_URL)
            forwarder = Forwarder(net.gateway, (parts.hostname or "127.0.0.1", parts.port or 5432))
            user = parts.netloc.rpartition("@")[0]
            coredms = urlunsplit(parts._replace(netloc=f"{user}@{net.gateway}:{forwarder.port}"))
            try:
                for _ in range(args.repeat):
                    for workers, mode in [(w, m) for w in counts for m in ("shared", "remote")]:
                        r = run_setup(mode, workers, a, others, work, data, args.rows, chunk_bytes, coredms)
                        results.append(r)
                        match = "" if r["rows_match"] else f"  ROW COUNT MISMATCH: {r['rows_in_store']:,} stored"
                        print(
                            f"  {mode:>6} home, {workers} worker(s): {r['status']}, {r['rows_written']:,} rows in "
                            f"{r['seconds']:.1f} s = {r['rows_per_s']:,.0f} rows/s ({r['chunks']} chunks; "
                            f"chunk phase {r['chunk_phase_s']:.1f} s){match}"
                        )
            finally:
                forwarder.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by = {
        (mode, workers): {
            key: statistics.median(r[key] for r in runs) for key in ("rows_per_s", "chunk_phase_rows_per_s")
        }
        for (mode, workers) in {(r["mode"], r["workers"]) for r in results}
        if (runs := [r for r in results if (r["mode"], r["workers"]) == (mode, workers)])
    }
    ratios: dict[str, float] = {}
    for key, label in (("rows_per_s", "whole ingestion"), ("chunk_phase_rows_per_s", "chunk phase")):
        print(f"\n{label}, medians of {args.repeat} run(s):")
        print(f"{'workers':>7} {'shared rows/s':>14} {'remote rows/s':>14} {'remote/shared':>14}")
        for workers in counts:
            shared, remote = by[("shared", workers)][key], by[("remote", workers)][key]
            ratios[f"{key}: remote/shared, {workers}"] = remote / shared
            print(f"{workers:>7} {shared:>14,.0f} {remote:>14,.0f} {remote / shared:>13.2f}x")
        if 1 in counts and 2 in counts:
            for mode in ("shared", "remote"):
                ratio = by[(mode, 2)][key] / by[(mode, 1)][key]
                ratios[f"{key}: {mode}, 2 workers/1"] = ratio
                print(f"{mode} home: 2 workers / 1 worker = {ratio:.2f}x")
    summary = {
        "machine": info,
        "file": {"rows": args.rows},
        "repeat": args.repeat,
        "chunk_bytes": chunk_bytes,
        "results": results,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
