"""What the tenant-app sandbox costs: app start time and batch rows/s, confined vs unconfined, in one run.

(a) start: the one runner (`adapters/runner.run`) starts a trivial app (`python -c pass`) and
    an app importing the SDK, N times each, alternating confined (Landlock + seccomp + no
    capabilities) and unconfined (MYSIMBDP_SANDBOX=off), so machine noise hits both alike;
    median and p90 start-to-exit times, and the time `Sandbox.prepare` takes in the parent
    (building the Landlock ruleset: one `open` and one `landlock_add_rule` per granted path).
(b) rows/s: bench/batch.py's platform path (`up` + `ingest --json`, pass-through app; SQLite,
    and PostgreSQL unless --skip-postgres) on the same file, rounds alternating sandbox on and
    off (and which goes first); medians.

Prints every figure and the ratios and writes them to bench/out/sandbox.json.
Run: `make bench-sandbox` or
`.venv/bin/python bench/sandbox.py [--rows N] [--rounds R] [--starts N] [--skip-postgres]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import batch
from _platform import machine

from mysimbdp import logs
from mysimbdp.adapters.process.runner import Limits, build_env, run
from mysimbdp.adapters.process.sandbox import Sandbox, app_grant, probe

OUT = Path(__file__).resolve().parent / "out" / "sandbox.json"
APPS = {"python -c pass": "pass", "import mysimbdp.sdk": "import mysimbdp.sdk"}


def _p90(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.9) - 1)]


def start_times(work: Path, starts: int) -> dict[str, Any]:
    home = work / "home"
    run_dir = home / "runs" / "r1"
    grant = app_grant("bench", home, bundle=work, writable=[run_dir], coredms_url="")
    sandboxes = {"on": Sandbox(probe("on"), grant), "off": Sandbox(probe("off"), grant)}
    env = build_env({}, os.environ)
    results: dict[str, Any] = {}
    for name, code in APPS.items():
        times: dict[str, list[float]] = {"on": [], "off": []}
        for index in range(starts):
            for mode in ("on", "off") if index % 2 == 0 else ("off", "on"):  # neither always runs first
                sandbox = sandboxes[mode]
                t0 = time.perf_counter()
                outcome = asyncio.run(
                    run([sys.executable, "-c", code], env=env, cwd=run_dir / "work", limits=Limits(60), sandbox=sandbox)
                )
                times[mode].append(time.perf_counter() - t0)
                assert outcome.ok, outcome.stderr_tail
        results[name] = {
            mode: {"median_ms": statistics.median(v) * 1000, "p90_ms": _p90(v) * 1000} for mode, v in times.items()
        }
        results[name]["ratio_on_off"] = results[name]["on"]["median_ms"] / results[name]["off"]["median_ms"]
    prepare = []
    for _ in range(starts):
        t0 = time.perf_counter()
        confinement = sandboxes["on"].prepare()
        prepare.append(time.perf_counter() - t0)
        assert confinement is not None
        confinement.close()
    results["prepare_median_ms"] = statistics.median(prepare) * 1000
    return results


def rows_per_s(work: Path, path: Path, backend: str, rows: int, rounds: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for index in range(rounds):
        order = ("on", "off") if index % 2 == 0 else ("off", "on")  # neither always runs first
        for mode in order:
            result = batch.platform_run(path, work, backend, rows, "passthrough", {"MYSIMBDP_SANDBOX": mode})
            assert result["rows"] == rows, result
            rates[mode].append(result["rows_per_s"])
            print(f"  {backend} round {index + 1} sandbox {mode}: {result['rows_per_s']:,.0f} rows/s", flush=True)
    medians = {mode: statistics.median(values) for mode, values in rates.items()}
    return {"rounds": rates, "median_rows_per_s": medians, "ratio_on_off": medians["on"] / medians["off"]}


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=batch.ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()


def print_table(starts: dict[str, Any], rates: dict[str, Any], rows: int, rounds: int) -> None:
    lines = [("what", "confined", "unconfined", "on/off")]
    for name in APPS:
        s = starts[name]
        lines.append(
            (
                f"start {name}: median (p90) ms",
                f"{s['on']['median_ms']:.1f} ({s['on']['p90_ms']:.1f})",
                f"{s['off']['median_ms']:.1f} ({s['off']['p90_ms']:.1f})",
                f"{s['ratio_on_off']:.3f}x",
            )
        )
    lines.append(("Sandbox.prepare (ruleset, parent): median ms", f"{starts['prepare_median_ms']:.2f}", "-", "-"))
    for backend, r in rates.items():
        on, off = r["median_rows_per_s"]["on"], r["median_rows_per_s"]["off"]
        label = f"batch {backend} {rows:,} rows: rows/s, median of {rounds}"
        lines.append((label, f"{on:,.0f}", f"{off:,.0f}", f"{r['ratio_on_off']:.3f}x"))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    held = all(r["ratio_on_off"] >= 0.95 for r in rates.values())
    print(f"target rows/s confined >= 0.95x unconfined: {'holds' if held else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--starts", type=int, default=30)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    logs.configure("error", "console")  # the runner's per-app lines would drown the figures
    status = probe("on")
    if not status.available:
        raise SystemExit(f"no sandbox on this machine: {status.problem}")
    figures: dict[str, Any] = {
        "machine": machine(),
        "kernel": platform.release(),
        "landlock_abi": status.landlock_abi,
        "commit": _commit(),
        "args": vars(args),
    }
    print(f"sandbox bench: {platform.node()} {platform.release()}, {status.summary()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mysimbdp-bench-sandbox-") as tmp:
        work = Path(tmp)
        starts = start_times(work, args.starts)
        path = work / "bench.csv"
        batch.generate(path, args.rows)
        backends = ["sqlite"] if args.skip_postgres else ["sqlite", "postgres"]
        rates = {backend: rows_per_s(work, path, backend, args.rows, args.rounds) for backend in backends}
    figures.update(start=starts, batch=rates, load_avg_at_end=[round(x, 2) for x in os.getloadavg()])
    print_table(starts, rates, args.rows, args.rounds)
    print(f"load average at start {figures['machine']['load_avg_at_start']}, at end {figures['load_avg_at_end']}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2))
    print(f"written {OUT}")


if __name__ == "__main__":
    main()
