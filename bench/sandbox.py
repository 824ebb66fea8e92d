"""What the tenant-app sandbox costs: app start time and batch rows/s, confined vs unconfined, in one run.

(a) start: the one runner (`adapters/runner.run`) starts a trivial app (`python -c pass`) and
    an app importing the SDK, N times each, alternating confined (Landlock + seccomp + no
    capabilities) and unconfined (MYSIMBDP_SANDBOX=off), so machine noise hits both alike;
    median and p90 start-to-exit times, and the time `Sandbox.prepare` takes in the parent
    (building the Landlock ruleset: one `open` and one `landlock_add_rule` per granted path).
(b) rows/s: bench/batch.py's platform path (`up` + `ingest --json`, SQLite, pass-through app)
    on the same file, rounds alternating sandbox on and off; medians.

Prints every figure and the ratios and writes them to bench/out/sandbox.json.
Run: `make bench-sandbox` or `.venv/bin/python bench/sandbox.py [--rows N] [--rounds R] [--starts N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import batch

from mysimbdp import logs
from mysimbdp.adapters.runner import Limits, build_env, run
from mysimbdp.adapters.sandbox import Sandbox, app_grant, probe

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
        for _ in range(starts):
            for mode, sandbox in sandboxes.items():
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


def rows_per_s(work: Path, rows: int, rounds: int) -> dict[str, Any]:
    path = work / "bench.csv"
    batch.generate(path, rows)
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for index in range(rounds):
        order = ("on", "off") if index % 2 == 0 else ("off", "on")  # neither always runs first
        for mode in order:
            result = batch.platform_run(path, work, "sqlite", rows, "passthrough", {"MYSIMBDP_SANDBOX": mode})
            assert result["rows"] == rows, result
            rates[mode].append(result["rows_per_s"])
            print(f"  round {index + 1} sandbox {mode}: {result['rows_per_s']:,.0f} rows/s", flush=True)
    medians = {mode: statistics.median(values) for mode, values in rates.items()}
    return {"rounds": rates, "median_rows_per_s": medians, "ratio_on_off": medians["on"] / medians["off"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--starts", type=int, default=30)
    args = parser.parse_args()
    logs.configure("error", "console")  # the runner's per-app lines would drown the figures
    status = probe("on")
    if not status.available:
        raise SystemExit(f"no sandbox on this machine: {status.problem}")
    print(f"sandbox bench: {platform.node()} {platform.release()}, {status.summary()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mysimbdp-bench-sandbox-") as tmp:
        work = Path(tmp)
        starts = start_times(work, args.starts)
        for name in APPS:
            s = starts[name]
            print(
                f"start {name}: confined {s['on']['median_ms']:.1f} ms (p90 {s['on']['p90_ms']:.1f}), "
                f"unconfined {s['off']['median_ms']:.1f} ms (p90 {s['off']['p90_ms']:.1f}): "
                f"{s['ratio_on_off']:.3f}x"
            )
        print(f"Sandbox.prepare (ruleset in the parent): {starts['prepare_median_ms']:.2f} ms median")
        rates = rows_per_s(work, args.rows, args.rounds)
        on, off = rates["median_rows_per_s"]["on"], rates["median_rows_per_s"]["off"]
        print(f"batch rows/s ({args.rows:,} rows, SQLite, median of {args.rounds}): confined {on:,.0f}, ")
        print(f"  unconfined {off:,.0f}: {rates['ratio_on_off']:.3f}x (target >= 0.95x)")
    OUT.parent.mkdir(exist_ok=True)
    figures = {"kernel": platform.release(), "landlock_abi": status.landlock_abi, "start": starts, "batch": rates}
    OUT.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
