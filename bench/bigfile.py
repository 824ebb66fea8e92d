"""Big-file benchmark: one CSV file per size, ingested in chunks by the platform end to end.

For each size (default 100 MB, 1 GB, 5 GB) the bench writes a CSV of realistic rows (a ~16 MB
block of bench/batch.py's rows written over and over: rows repeat, the default record key is
(file sha256, line)), starts a fresh platform home (embedded SQLite + NATS, or `--postgres`)
with `mysimbdp up` (its chunk workers: MYSIMBDP_WORKERS, default the CPU count) and a tenant
whose profile chunks every size alike (`big_files: {threshold_bytes: 1, chunk_bytes: 64 MiB}`),
runs `mysimbdp ingest FILE --json` and measures:

- wall time (the CLI's start to its exit: copy into the inbox, fetch scan, chunk planning,
  the chunk runs, the finish), rows/s and MB/s;
- where that time went, from the meta store (file events and chunk runs);
- the peak RSS of every platform process: the process trees of `up` (its embedded broker and
  every app run) and of the CLI, sampled every 50 ms, and each run's own recorded peak.

Nothing is asserted; each figure is printed against the issue's targets (rows/s of the
largest file within 20 % of the 100 MB file's; every process under 300 MB). Writes
bench/out/bigfile.json and docs/bigfile.png (rows/s against file size).
Run: `.venv/bin/python bench/bigfile.py [--sizes 100M,1G,5G] [--chunk-mb 64] [--postgres]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import batch
import psycopg
from _platform import BenchPlatform, Ingested, TreeSampler, human, machine, parse_size, print_rss, rss_report

ROOT = batch.ROOT
BLOCK_BYTES = 16 * 1000 * 1000
ROW_BYTES_ESTIMATE = 133  # bench/batch.py's rows, for sizing the block
# Disk a size needs while it runs, as multiples of the file: the source, the CLI's copy into
# the inbox (moved to staging and archive, never copied again) and coredms, with headroom
# (SQLite: ~3.3x the CSV, 381 bytes a row against the CSV's 132: a 75-byte key of the file's
# sha256 and line, the typed JSON document, source and ingested_at; see home_bytes_after).
DISK_FACTOR = 1 + 1 + 4
DISK_MARGIN_BYTES = 2 * 10**9
TARGET_RATIO = 0.8


def make_block(work: Path) -> tuple[bytes, bytes]:
    """(header, body): ~BLOCK_BYTES of bench/batch.py's rows, made once, written many times."""
    sample = work / "block.csv"
    batch.generate(sample, BLOCK_BYTES // ROW_BYTES_ESTIMATE)
    data = sample.read_bytes()
    sample.unlink()
    cut = data.index(b"\n") + 1
    return data[:cut], data[cut:]


def write_csv(path: Path, size_bytes: int, header: bytes, body: bytes) -> int:
    """Write about ``size_bytes`` (whole rows) to ``path``; return its data rows."""
    rows_per_body = body.count(b"\n")
    rows = 0
    with open(path, "wb") as fh:
        fh.write(header)
        left = size_bytes - len(header)
        while left >= len(body):
            fh.write(body)
            left -= len(body)
            rows += rows_per_body
        tail = body[: body.rfind(b"\n", 0, left) + 1] if left > 0 else b""
        fh.write(tail)
        rows += tail.count(b"\n")
    return rows


def profile_yaml(chunk_bytes: int) -> str:
    """The generic app, every size chunked alike, limits far above the largest size."""
    return (
        "limits: {max_file_size_bytes: 1000000000000, max_bytes_per_day: 10000000000000}\n"
        f"big_files: {{threshold_bytes: 1, chunk_bytes: {chunk_bytes}}}\n"
    )


def free_disk(work: Path, postgres: bool) -> dict[str, int]:
    """Free bytes where the files and the platform home go, and PostgreSQL's data directory
    when it is on this machine and readable."""
    free = {str(work): shutil.disk_usage(work).free}
    if postgres:
        try:
            with psycopg.connect(batch.PG_URL, autocommit=True) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
            if row and Path(row[0]).exists():
                free[str(row[0])] = shutil.disk_usage(row[0]).free
        except (psycopg.Error, OSError) as exc:
            print(f"  (cannot see PostgreSQL's data directory: {exc}; checking {work} only)")
    return free


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_size(
    work: Path, label: str, size: int, block: tuple[bytes, bytes], chunk_bytes: int, postgres: bool
) -> dict[str, Any]:
    path = work / f"readings_{size}.csv"
    t0 = time.perf_counter()
    rows = write_csv(path, size, *block)
    generate_s = time.perf_counter() - t0
    real_size = path.stat().st_size
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"  generated {rows:,} rows, {human(real_size)} in {generate_s:.1f} s; load average {load}")
    try:
        profile = profile_yaml(chunk_bytes)
        with BenchPlatform(work, label, profile, postgres=postgres) as plat, TreeSampler() as sampler:
            assert plat.up is not None
            sampler.watch("up", plat.up.pid)
            started_at = time.time()
            ingested = plat.ingest(path, sampler)
            home_bytes = du(plat.home)
    finally:
        path.unlink(missing_ok=True)
    result = _result(label, real_size, rows, generate_s, ingested, sampler, started_at, plat.slots, home_bytes)
    return {**result, "load_avg_before": load}


def _result(
    label: str,
    size: int,
    rows: int,
    generate_s: float,
    ing: Ingested,
    sampler: TreeSampler,
    started_at: float,
    slots: int,
    home_bytes: int,
) -> dict[str, Any]:
    chunks = dict(ing.summary["chunks"] or {"total": 1, "not_chunked": True})  # a file within one chunk
    chunks.pop("items", None)
    return {
        "size": label,
        "bytes": size,
        "rows": rows,
        "generate_s": round(generate_s, 2),
        "status": ing.summary["status"],
        "rows_written": ing.rows,
        "rows_in_store": ing.rows_in_store,
        "rows_match": ing.rows_in_store == rows,
        "count_s": round(ing.count_s, 2),
        "chunks": chunks,
        "slots": slots,
        "cpus": os.cpu_count(),
        "seconds": round(ing.seconds, 3),
        "rows_per_s": ing.rows / ing.seconds,
        "mb_per_s": size / 1e6 / ing.seconds,
        "durations_s": ing.summary["durations_s"],
        "timeline": ing.timeline(started_at, slots),
        "chunk_runs": [
            {
                "start_s": round(r.started_at - started_at, 3),
                "seconds": round(float(r.ended_at or 0) - r.started_at, 3),
                "rows_written": r.rows_written,
                "bytes_read": r.bytes_read,
                "peak_rss_bytes": r.peak_rss_bytes,
                "status": str(r.status),
            }
            for r in sorted(ing.runs, key=lambda r: r.started_at)
        ],
        "peak_rss": rss_report(sampler, ing.runs),
        "home_bytes_after": home_bytes,
    }


def print_result(r: dict[str, Any]) -> None:
    t = r["timeline"]
    print(
        f"  {r['status']}: {r['rows_written']:,} rows in {r['seconds']:.1f} s = {r['rows_per_s']:,.0f} rows/s, "
        f"{r['mb_per_s']:.1f} MB/s; "
        + ("not chunked: one run" if r["chunks"].get("not_chunked") else f"{r['chunks']['total']} chunks")
        + f" on {r['slots']} slots"
    )
    if not r["rows_match"]:
        print(f"  ROW COUNT MISMATCH: the file has {r['rows']:,} rows, coredms holds {r['rows_in_store']:,}")
    fetch_mb_s = r["bytes"] / 1e6 / t["fetch_s"] if t["fetch_s"] else 0
    print(
        f"  timeline: CLI start + copy into inbox + pick-up {t['copy_and_pickup_s']:.1f} s, fetch scan "
        f"{t['fetch_s']:.1f} s ({fetch_mb_s:.0f} MB/s, {t['fetch_s'] / r['seconds']:.0%} of the wall time), "
        f"manager claim {t['wait_for_manager_s']:.1f} s, plan + queue {t['plan_and_queue_s']:.1f} s, "
        f"chunk runs {t['chunks_s']:.1f} s, finish {t['finish_s']:.1f} s, CLI exit {t['cli_after_final_s']:.1f} s"
    )
    serial = t["copy_and_pickup_s"] + t["fetch_s"] + t["wait_for_manager_s"] + t["plan_and_queue_s"]
    print(f"  before the first chunk ran: {serial:.1f} s ({serial / r['seconds']:.0%} of the wall time)")
    run_s = t["chunk_run_s"]
    print(
        f"  chunk runs: {t['chunk_runs']}, {run_s['min']:.1f}/{run_s['mean']:.1f}/{run_s['max']:.1f} s "
        f"(min/mean/max), {t['chunk_rows_per_s_mean']:,} rows/s each on average, "
        f"slot utilisation {t['slot_utilisation']}"
    )
    roles = r["peak_rss"]["sampled_by_role"]
    app_cpu = sum(e["cpu_s"] for role, e in roles.items() if role.startswith("app "))
    other_cpu = sum(e["cpu_s"] for role, e in roles.items() if not role.startswith("app "))
    print(
        f"  CPU seconds (sampled): apps {app_cpu:.1f} s ({app_cpu / max(1, r['rows']) * 1e6:.1f} us/row), "
        f"up + broker + CLI {other_cpu:.1f} s; wall {r['seconds']:.1f} s x {r['cpus']} CPUs"
    )
    print(f"  platform home after the run: {human(r['home_bytes_after'])} ({r['home_bytes_after'] / r['bytes']:.2f}x)")
    print_rss(r["peak_rss"], indent="  ")


def print_table(results: list[dict[str, Any]]) -> None:
    head = f"{'size':>6} {'rows':>12} {'chunks':>6} {'wall s':>8} {'rows/s':>10} {'MB/s':>6} "
    head += f"{'fetch s':>8} {'chunks s':>9} {'max RSS MB':>10} {'<300MB':>6}"
    print("\n" + head)
    for r in results:
        t = r["timeline"]
        print(
            f"{r['size']:>6} {r['rows']:>12,} {r['chunks']['total']:>6} {r['seconds']:>8.1f} "
            f"{r['rows_per_s']:>10,.0f} {r['mb_per_s']:>6.1f} {t['fetch_s']:>8.1f} {t['chunks_s']:>9.1f} "
            f"{r['peak_rss']['largest_bytes'] / 1e6:>10.0f} {'yes' if r['peak_rss']['all_under_300_mb'] else 'NO':>6}"
        )


def size_ratio(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The largest size's rows/s over the 100 MB file's (else the smallest size's)."""
    if len(results) < 2:
        return None
    by_size = sorted(results, key=lambda r: r["bytes"])
    base = next((r for r in by_size if r["size"].upper() in ("100M", "100MB")), by_size[0])
    largest = by_size[-1]
    ratio = largest["rows_per_s"] / base["rows_per_s"]
    return {"largest": largest["size"], "reference": base["size"], "ratio": ratio, "met": ratio >= TARGET_RATIO}


def plot(results: list[dict[str, Any]], out: Path, info: dict[str, Any], postgres: bool, chunk_bytes: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_size = sorted(results, key=lambda r: r["bytes"])
    sizes = [r["bytes"] / 1e6 for r in by_size]
    rates = [r["rows_per_s"] for r in by_size]
    phase = [r["rows"] / r["timeline"]["chunks_s"] if r["timeline"]["chunks_s"] else 0 for r in by_size]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(sizes, rates, marker="o", label="whole ingest (CLI start to exit)")
    ax.plot(
        sizes, phase, marker=".", linestyle=":", color="tab:green", label="chunk runs only (first start to last end)"
    )
    ratio = size_ratio(results)
    if ratio is not None:
        base = next(r for r in by_size if r["size"] == ratio["reference"])
        ax.axhline(
            base["rows_per_s"] * TARGET_RATIO,
            color="grey",
            linestyle="--",
            linewidth=1,
            label=f"target: {TARGET_RATIO:.0%} of the {base['size']} file's rows/s",
        )
    for r, x, y in zip(by_size, sizes, rates, strict=True):
        ax.annotate(
            f"{r['rows_per_s']:,.0f} rows/s\n{r['mb_per_s']:.1f} MB/s, {r['chunks']['total']} chunks",
            (x, y),
            textcoords="offset points",
            xytext=(0, -26),
            ha="center",
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_xticks(sizes, labels=[human(r["bytes"]) for r in by_size])
    ax.minorticks_off()
    ax.set_xlim(min(sizes) / 1.6, max(sizes) * 1.6)
    ax.set_xlabel("file size (log scale)")
    ax.set_ylabel("rows/s")
    ax.set_ylim(0, max(rates + phase) * 1.25)
    store = "PostgreSQL" if postgres else "SQLite"
    chunk_mib = chunk_bytes / 2**20
    title = f"mysimbdp big files: `ingest` with `up` running, {store}, chunks of {chunk_mib:g} MiB, {info['cpus']} CPUs"
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100M,1G,5G", help="file sizes, decimal units (M = 10^6 bytes)")
    parser.add_argument("--chunk-mb", type=float, default=64, help="big_files.chunk_bytes in MiB [64]")
    parser.add_argument("--postgres", action="store_true", help="meta store and coredms in PostgreSQL")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the files and homes go [system temp]")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "bigfile.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "bigfile.png")
    args = parser.parse_args()
    labels = [s.strip() for s in args.sizes.split(",") if s.strip()]
    chunk_bytes = int(args.chunk_mb * 1024 * 1024)
    work = Path(tempfile.mkdtemp(prefix="mysimbdp-bigfile-", dir=args.work_dir))
    info = machine()
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    try:
        t0 = time.perf_counter()
        block = make_block(work)
        block_rows = block[1].count(b"\n")
        print(f"row block: {human(len(block[1]))}, {block_rows:,} rows, in {time.perf_counter() - t0:.1f} s")
        for label in labels:
            size = parse_size(label)
            need = size * DISK_FACTOR + DISK_MARGIN_BYTES
            free = free_disk(work, args.postgres)
            print(f"\n== {label}: {human(size)}, chunks of {chunk_bytes / 2**20:g} MiB ==")
            print("  free disk: " + ", ".join(f"{human(b)} at {where}" for where, b in free.items()))
            print(f"  this size needs about {human(need)} ({DISK_FACTOR}x the file + {human(DISK_MARGIN_BYTES)})")
            if min(free.values()) < need:
                print(f"  SKIPPED: not enough free disk for {label}")
                skipped.append({"size": label, "bytes": size, "needed_bytes": need, "free_bytes": free})
                continue
            result = run_size(work, label, size, block, chunk_bytes, args.postgres)
            print_result(result)
            results.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not results:
        raise SystemExit("no size was run")
    print_table(results)
    ratio = size_ratio(results)
    if ratio is not None:
        verdict = "met" if ratio["met"] else "NOT met"
        print(
            f"\nrows/s of {ratio['largest']} / rows/s of {ratio['reference']}: {ratio['ratio']:.2f} "
            f"(target >= {TARGET_RATIO:.2f}: {verdict})"
        )
    summary = {
        "machine": info,
        "store": "postgres" if args.postgres else "sqlite",
        "chunk_bytes": chunk_bytes,
        "results": results,
        "skipped": skipped,
        "ratio_largest_vs_reference": ratio,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    plot(results, args.plot, info, args.postgres, chunk_bytes)
    print(f"written {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
