"""Worker scaling benchmark: one big file, ingested by 1, 2 and 4 chunk workers.

Generates one CSV (default 1,000,000 rows, ~133 MB: bench/batch.py's rows) and ingests it once
per worker count, each time into a fresh platform home: `mysimbdp up` with
MYSIMBDP_WORKERS=0 (it runs no chunk itself) plus N `mysimbdp worker --slots 1` processes, a
tenant whose profile cuts the file into ~16 MiB chunks (`--chunk-mb`) for the generic app.
Prints rows/s per worker count, the speedup against 1 worker (whole file, and the chunk runs
alone: the copy, the fetch scan and the planning do not scale with workers) and the CPU the
processes used; writes bench/out/scale.json. On a machine with C cores, expect the curve to
flatten at C workers: each worker's app process needs a core.
Run: `.venv/bin/python bench/scale.py [--rows N] [--workers 1,2,4] [--chunk-mb 16] [--postgres]`.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import batch
from _platform import BenchPlatform, TreeSampler, human, machine, print_rss, rss_report

ROOT = batch.ROOT


def profile_yaml(chunk_bytes: int) -> str:
    return (
        "limits: {max_file_size_bytes: 1000000000000, max_bytes_per_day: 10000000000000}\n"
        f"big_files: {{threshold_bytes: 1, chunk_bytes: {chunk_bytes}}}\n"
    )


def run_workers(work: Path, data: Path, rows: int, workers: int, chunk_bytes: int, postgres: bool) -> dict[str, Any]:
    profile = profile_yaml(chunk_bytes)
    with BenchPlatform(work, f"w{workers}", profile, postgres=postgres, workers=0) as plat:
        assert plat.up is not None
        procs = plat.start_workers(workers, slots=1)
        with TreeSampler() as sampler:
            sampler.watch("up", plat.up.pid)
            for n, proc in enumerate(procs):
                sampler.watch(f"worker {n + 1}", proc.pid)
            started_at = time.time()
            ingested = plat.ingest(data, sampler)
    timeline = ingested.timeline(started_at, workers)
    roles = sampler.by_role()
    app_cpu = sum(e["cpu_s"] for role, e in roles.items() if role.startswith("app "))
    chunks = int((ingested.summary["chunks"] or {"total": 1})["total"])
    return {
        "workers": workers,
        "status": ingested.summary["status"],
        "rows_written": ingested.rows,
        "rows_in_store": ingested.rows_in_store,
        "rows_match": ingested.rows_in_store == rows,
        "chunks": chunks,
        "rounds": math.ceil(chunks / workers),  # chunks one worker runs in turn, at most
        "seconds": round(ingested.seconds, 3),
        "rows_per_s": ingested.rows / ingested.seconds,
        "chunk_phase_rows_per_s": ingested.rows / timeline["chunks_s"] if timeline["chunks_s"] else None,
        "timeline": timeline,
        "app_cpu_s": round(app_cpu, 2),
        "cpu_s_by_role": {role: e["cpu_s"] for role, e in roles.items()},
        "peak_rss": rss_report(sampler, ingested.runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts to run, each a fresh home")
    parser.add_argument("--chunk-mb", type=float, default=16, help="big_files.chunk_bytes in MiB [16]")
    parser.add_argument("--postgres", action="store_true", help="meta store and coredms in PostgreSQL")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "scale.json")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    chunk_bytes = int(args.chunk_mb * 1024 * 1024)
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="mysimbdp-scale-"))
    results: list[dict[str, Any]] = []
    try:
        data = work / "readings.csv"
        t0 = time.perf_counter()
        batch.generate(data, args.rows)
        size = data.stat().st_size
        print(
            f"generated {args.rows:,} rows, {human(size)} in {time.perf_counter() - t0:.1f} s; "
            f"chunks of {chunk_bytes / 2**20:g} MiB; {info['cpus']} CPUs, load average {info['load_avg_at_start']}"
        )
        for workers in counts:
            print(
                f"\n== {workers} worker{'s' if workers > 1 else ''} (worker --slots 1; up with MYSIMBDP_WORKERS=0) =="
            )
            r = run_workers(work, data, args.rows, workers, chunk_bytes, args.postgres)
            t = r["timeline"]
            print(
                f"  {r['status']}: {r['rows_written']:,} rows in {r['seconds']:.1f} s = {r['rows_per_s']:,.0f} rows/s; "
                f"{r['chunks']} chunks, at most {r['rounds']} a worker"
            )
            if not r["rows_match"]:
                print(f"  ROW COUNT MISMATCH: the file has {args.rows:,} rows, coredms holds {r['rows_in_store']:,}")
            print(
                f"  timeline: CLI + copy + pick-up {t['copy_and_pickup_s']:.1f} s, fetch {t['fetch_s']:.1f} s, "
                f"plan + queue {t['plan_and_queue_s']:.1f} s, chunk runs {t['chunks_s']:.1f} s "
                f"(slot utilisation {t['slot_utilisation']}), finish {t['finish_s']:.1f} s"
            )
            print(f"  app CPU {r['app_cpu_s']:.1f} s ({r['app_cpu_s'] / args.rows * 1e6:.1f} us/row)")
            print_rss(r["peak_rss"], indent="  ")
            results.append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = next((r for r in results if r["workers"] == 1), results[0])
    print(f"\n{'workers':>7} {'rows/s':>10} {'speedup':>8} {'chunk-phase rows/s':>19} {'speedup':>8} {'wall s':>7}")
    for r in results:
        r["speedup"] = r["rows_per_s"] / base["rows_per_s"]
        phase, base_phase = r["chunk_phase_rows_per_s"], base["chunk_phase_rows_per_s"]
        r["chunk_phase_speedup"] = phase / base_phase if phase and base_phase else None
        print(
            f"{r['workers']:>7} {r['rows_per_s']:>10,.0f} {r['speedup']:>7.2f}x {phase or 0:>19,.0f} "
            f"{r['chunk_phase_speedup'] or 0:>7.2f}x {r['seconds']:>7.1f}"
        )
    print(f"(speedups against {base['workers']} worker; {info['cpus']} CPUs on this machine)")
    summary = {
        "machine": info,
        "store": "postgres" if args.postgres else "sqlite",
        "file": {"rows": args.rows, "bytes": size},
        "chunk_bytes": chunk_bytes,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
