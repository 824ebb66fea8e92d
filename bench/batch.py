"""Batch ingestion benchmark: the platform end to end vs raw baselines, in one run.

Generates a CSV (default 1,000,000 rows, ~140 MB), then measures rows/s and peak RSS of:

  (a) the platform: `mysimbdp up` running, `mysimbdp ingest FILE --json` → fetchdata →
      batch manager → tenant app → coredms; into SQLite and into PostgreSQL; twice: with
      the built-in generic app (typed documents) and with a pass-through app that stores
      each row as it is (the very documents the baselines write);
  (b) raw baselines on the same file and table shape (key + JSON document): plain Python
      csv → json → one executemany transaction into SQLite; csv → json → psycopg COPY into
      a PostgreSQL table with a primary key and a jsonb column;
  (c) C-speed ceilings: `sqlite3 .import` and `psql \\copy` into a typed table with a
      primary key.

Prints every figure and the ratios and writes them to bench/out/batch.json.
Run: `make bench` or `.venv/bin/python bench/batch.py [--rows N] [--skip-postgres]`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("MYSIMBDP_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
COLUMNS = [
    "id",
    "ts",
    "sensor_id",
    "site",
    "lat",
    "lon",
    "temperature_c",
    "humidity_pct",
    "pressure_hpa",
    "battery_v",
    "status",
    "note",
]
TYPED = (
    "id bigint primary key, ts text, sensor_id text, site text, lat double precision, "
    "lon double precision, temperature_c double precision, humidity_pct double precision, "
    "pressure_hpa double precision, battery_v double precision, status text, note text"
)


def generate(path: Path, rows: int) -> None:
    rnd = random.Random(42)
    sites = ["helsinki-north", "espoo-campus", "tampere-lab", "oulu-harbour", "turku-east"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for n in range(rows):
            w.writerow(
                [
                    n,
                    f"2026-01-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{n % 59:02d}Z",
                    f"S-{n % 5000:04d}",
                    sites[n % 5],
                    f"{60 + rnd.random():.6f}",
                    f"{24 + rnd.random():.6f}",
                    f"{rnd.uniform(-20, 35):.2f}",
                    f"{rnd.uniform(10, 100):.1f}",
                    f"{rnd.uniform(950, 1050):.1f}",
                    f"{rnd.uniform(2.5, 4.2):.3f}",
                    rnd.choice(["ok", "ok", "ok", "warn"]),
                    "reading within the expected envelope",
                ]
            )


class PeakRss:
    """Samples the RSS of one process tree (or one process) until stopped."""

    def __init__(self, pid: int, tree: bool = True) -> None:
        self.pid, self.tree, self.peak = pid, tree, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        per_process: dict[int, int] = {}
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)] if self.tree else [root]
                for p in procs:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        per_process[p.pid] = max(per_process.get(p.pid, 0), p.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            self.peak = max(per_process.values(), default=0)
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def self_rss() -> int:
    return psutil.Process().memory_info().rss


# -- (b) raw baselines ---------------------------------------------------------------------
def baseline_sqlite(path: Path, work: Path) -> dict[str, Any]:
    db = work / "baseline.db"
    t0 = time.perf_counter()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE docs (key TEXT PRIMARY KEY, doc TEXT NOT NULL)")
    with open(path, newline="") as fh:
        rows = ((row["id"], json.dumps(row)) for row in csv.DictReader(fh))
        with conn:
            conn.executemany("INSERT INTO docs VALUES (?, ?)", rows)
    n = conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
    conn.close()
    seconds = time.perf_counter() - t0
    return {"rows": n, "seconds": seconds, "rows_per_s": n / seconds, "peak_rss_bytes": self_rss()}


def baseline_postgres(path: Path) -> dict[str, Any]:
    table = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (key text PRIMARY KEY, doc jsonb NOT NULL)")
        try:
            t0 = time.perf_counter()
            copy_sql = f"COPY {table} (key, doc) FROM STDIN"
            with conn.transaction(), conn.cursor() as cur, open(path, newline="") as fh, cur.copy(copy_sql) as copy:
                for row in csv.DictReader(fh):
                    copy.write_row((row["id"], json.dumps(row)))
            seconds = time.perf_counter() - t0
            n = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        finally:
            conn.execute(f"DROP TABLE {table}")
    return {"rows": n, "seconds": seconds, "rows_per_s": n / seconds, "peak_rss_bytes": self_rss()}


# -- (c) C-speed ceilings ------------------------------------------------------------------
def ceiling_sqlite(path: Path, work: Path, rows: int) -> dict[str, Any] | None:
    if not shutil.which("sqlite3"):
        return None
    db = work / "ceiling.db"
    columns = TYPED.replace("bigint primary key", "INTEGER PRIMARY KEY")
    script = f"CREATE TABLE t ({columns});\n.mode csv\n.import --skip 1 {path} t\n"
    t0 = time.perf_counter()
    subprocess.run(["sqlite3", str(db)], input=script, text=True, check=True)
    seconds = time.perf_counter() - t0
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def ceiling_postgres(path: Path, rows: int) -> dict[str, Any] | None:
    if not shutil.which("psql"):
        return None
    table = f"bench_{uuid.uuid4().hex[:8]}"
    base = ["psql", PG_URL, "-v", "ON_ERROR_STOP=1", "-q"]
    subprocess.run([*base, "-c", f"CREATE TABLE {table} ({TYPED})"], check=True)
    try:
        t0 = time.perf_counter()
        subprocess.run(
            [*base, "-c", f"\\copy {table} FROM '{path}' WITH (FORMAT csv, HEADER true)"],
            check=True,
        )
        seconds = time.perf_counter() - t0
    finally:
        subprocess.run([*base, "-c", f"DROP TABLE {table}"], check=True)
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


# -- (a) the platform ----------------------------------------------------------------------
APPS = {
    # the default profile's built-in app: documents typed per column
    "generic": "limits: {max_file_size_bytes: 10000000000}\nkey_fields: [id]\n",
    # a tenant app storing each row as it is: the very documents the baselines write
    "passthrough": (
        "limits: {max_file_size_bytes: 10000000000}\nkey_fields: [id]\n"
        'batch_apps: [{name: passthrough, command: ["{python}", "{bundle}/app.py"]}]\n'
    ),
}
PASSTHROUGH_APP = "from mysimbdp import sdk\n\nif __name__ == '__main__':\n    sdk.run_batch(lambda row: row)\n"


def platform_run(
    path: Path, work: Path, backend: str, rows: int, app: str, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One ingestion of ``path`` through a fresh ``up``; ``extra_env`` adds settings (the
    sandbox bench runs it with MYSIMBDP_SANDBOX on and off)."""
    home = work / f"home-{backend}-{app}"
    shutil.rmtree(home, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    env.update(MYSIMBDP_HOME=str(home), MYSIMBDP_LOG_FORMAT="json", MYSIMBDP_LOG_LEVEL="warning")
    env.update(extra_env or {})
    prefix = f"b{uuid.uuid4().hex[:6]}"
    schema = f"{prefix}_meta"
    if backend == "postgres":
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        env.update(
            MYSIMBDP_META_URL=f"{PG_URL}?options=-csearch_path%3D{schema}",
            MYSIMBDP_COREDMS_URL=PG_URL,
            MYSIMBDP_PG_PREFIX=prefix,
        )
    mysimbdp = [sys.executable, "-m", "mysimbdp"]
    bench_profile = work / f"profile-{backend}-{app}" / "profile.yaml"
    bench_profile.parent.mkdir(parents=True, exist_ok=True)
    bench_profile.write_text(APPS[app])
    (bench_profile.parent / "app.py").write_text(PASSTHROUGH_APP)
    subprocess.run(
        [*mysimbdp, "tenant", "add", "bench", "--profile", str(bench_profile)], env=env, check=True, capture_output=True
    )
    up = subprocess.Popen([*mysimbdp, "up"], env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        time.sleep(2.0)  # let up register its heartbeats
        t0 = time.perf_counter()
        with PeakRss(up.pid, tree=True) as up_rss:
            cli = subprocess.Popen(
                [*mysimbdp, "ingest", str(path), "--tenant", "bench", "--json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            with PeakRss(cli.pid, tree=False) as cli_rss:
                out, err = cli.communicate()
        seconds = time.perf_counter() - t0
    finally:
        up.terminate()
        up.wait(timeout=120)
    if cli.returncode != 0:
        raise SystemExit(f"platform ingest failed ({cli.returncode}): {out.decode()} {err.decode()}")
    summary = json.loads(out)
    count = subprocess.run(
        [*mysimbdp, "query", "--tenant", "bench", "--dataset", summary["dataset"], "--count"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    app_rss = _app_peak_rss(env)
    subprocess.run([*mysimbdp, "tenant", "remove", "bench", "--yes"], env=env, check=True, capture_output=True)
    if backend == "postgres":
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return {
        "rows": int(count),
        "seconds": seconds,
        "rows_per_s": int(count) / seconds,
        "fetch_s": summary["durations_s"]["fetch"],
        "run_s": summary["durations_s"]["run"],
        "peak_rss_bytes": {
            "up (largest process of the tree)": up_rss.peak,
            "ingest CLI": cli_rss.peak,
            "app (runner)": app_rss,
        },
    }


def _app_peak_rss(env: dict[str, str]) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from mysimbdp.adapters.metastore import MetaStore
    from mysimbdp.settings import Settings

    settings = Settings.from_env(env)
    meta = MetaStore(settings.meta_url)
    meta.start()
    try:
        return max((r.peak_rss_bytes for r in meta.list_runs("bench")), default=0)
    finally:
        meta.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "batch.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mysimbdp-bench-"))
    try:
        data = work / "readings.csv"
        t0 = time.perf_counter()
        generate(data, args.rows)
        size = data.stat().st_size
        print(f"generated {args.rows:,} rows, {size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
        results: dict[str, Any] = {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
            },
            "file": {"rows": args.rows, "bytes": size},
        }
        backends = ["sqlite"] if args.skip_postgres else ["sqlite", "postgres"]
        for backend in backends:
            print(f"\n== {backend} ==")
            base = baseline_sqlite(data, work) if backend == "sqlite" else baseline_postgres(data)
            base_name = "executemany" if backend == "sqlite" else "COPY"
            print(f"(b) baseline csv→json→{base_name}: {base['rows_per_s']:,.0f} rows/s")
            ceil = ceiling_sqlite(data, work, args.rows) if backend == "sqlite" else ceiling_postgres(data, args.rows)
            if ceil:
                ceil_name = "sqlite3 .import" if backend == "sqlite" else "psql \\copy"
                print(f"(c) ceiling {ceil_name}: {ceil['rows_per_s']:,.0f} rows/s")
            results[backend] = {"baseline": base, "ceiling": ceil}
            for app, label in (
                ("generic", "(a) platform, generic app (typed documents)"),
                ("passthrough", "(a') platform, pass-through app (the baseline's documents)"),
            ):
                plat = platform_run(data, work, backend, args.rows, app)
                print(
                    f"{label}: {plat['rows_per_s']:,.0f} rows/s ({plat['seconds']:.1f} s; "
                    f"fetch {plat['fetch_s']} s, run {plat['run_s']} s)"
                )
                for name, rss in plat["peak_rss_bytes"].items():
                    print(f"    peak RSS {name}: {rss / 1e6:.0f} MB")
                ratio = plat["rows_per_s"] / base["rows_per_s"]
                ceiling_ratio = f"; / ceiling (c): {plat['rows_per_s'] / ceil['rows_per_s']:.2f}×" if ceil else ""
                print(f"    ratio platform / baseline (b): {ratio:.2f}×{ceiling_ratio}")
                results[backend][app] = {"platform": plat, "ratio_vs_baseline": ratio}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"\nwritten {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
