"""Write modes and reads benchmark: a merge ingest vs an append, an NDJSON export through the
read API vs a raw ``SELECT doc``, and a filtered query on an indexed field; SQLite and PostgreSQL.

In one run, per backend, into one platform home (bench/_platform.py: `mysimbdp up` running,
tenant ``bench`` with ``key_fields: [id]``, ``write: {mode: merge}``, ``indexes: [[sensor_id]]``):

  (a) `ingest --json` of bench/batch.py's CSV (default 1,000,000 rows) into dataset
      ``merged`` (empty: the rows are inserted); then the same rows with changed values
      (another temperature and note in every row) into ``merged`` again: every key is stored,
      every document differs, so every row is an update (the *merge*); then a file of the same
      rows and size (another note, so not a duplicate) into the empty dataset ``appended``
      (``write: {mode: append}`` for it): the *append*.
      Ratio: merge rows/s / append rows/s (target ≥ 0.7).
  (b) `GET /v1/datasets/merged/documents` with ``Accept: application/x-ndjson`` streamed to
      a file with httpx, vs a plain script streaming ``SELECT doc`` of the same table to a
      file (sqlite3; psycopg with a server-side cursor). Ratio: API docs/s / raw docs/s
      (target ≥ 0.7); the peak RSS of `up`'s processes (sampled every 50 ms) while it ran.
  (c) ``--queries`` (200) requests ``filter={"sensor_id": "S-nnnn"}&limit=100`` (each sensor
      has rows/5000 documents): p50 and p99 latency.

``--only export``: (b) alone, after one ingest of the CSV into ``merged`` (no merge, append
or queries), ``--rounds`` times (API then raw in each round; the figures of each round and
their medians). Prints every figure and writes bench/out/reads.json (``--only export``:
bench/out/reads-export.json).
Run: `make bench-reads` or `.venv/bin/python bench/reads.py [--rows N] [--skip-postgres]
[--only export [--rounds N]]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _platform as bp
import batch
import httpx
import psycopg

OUT = batch.ROOT / "bench" / "out" / "reads.json"
PROFILE = """\
limits: {max_file_size_bytes: 10000000000}
key_fields: [id]
write: {mode: merge}
indexes: [[sensor_id]]
datasets:
  appended: {write: {mode: append}}
"""


class ReadsPlatform(bp.BenchPlatform):
    """A BenchPlatform that keeps the tenant's API key (printed once by `tenant add`)."""

    api_key = ""

    def _cli(self, *args: str) -> str:
        out = super()._cli(*args)
        if args[:2] == ("tenant", "add"):
            self.api_key = next(line for line in out.splitlines() if line.startswith("api key")).split(": ")[-1]
        return out

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['MYSIMBDP_API_PORT']}"


def changed_copy(src: Path, dst: Path, note_text: str) -> None:
    """``src``'s rows, same ids, with another temperature and note: every document differs."""
    with open(src, newline="") as fin, open(dst, "w", newline="") as fout:
        reader, writer = csv.reader(fin), csv.writer(fout)
        header = next(reader)
        t, note = header.index("temperature_c"), header.index("note")
        writer.writerow(header)
        for row in reader:
            row[t] = f"{float(row[t]) + 0.5:.2f}"
            row[note] = note_text
            writer.writerow(row)


def ingest(plat: ReadsPlatform, path: Path) -> dict[str, Any]:
    done = plat.ingest(path)
    return {
        "rows_written": done.rows,
        "rows_in_store": done.rows_in_store,
        "seconds": round(done.seconds, 3),
        "rows_per_s": round(done.rows_in_store / done.seconds),
        "run_s": done.summary["durations_s"]["run"],
    }


def api_export(plat: ReadsPlatform, dataset: str, out: Path) -> dict[str, Any]:
    sampler = bp.TreeSampler(0.05)
    assert plat.up is not None
    sampler.watch("up", plat.up.pid)
    headers = {"Authorization": f"Bearer {plat.api_key}", "Accept": "application/x-ndjson"}
    t0 = time.perf_counter()
    url = f"{plat.api}/v1/datasets/{dataset}/documents"
    with (
        sampler,
        httpx.Client(timeout=600) as client,
        open(out, "wb") as fh,
        client.stream("GET", url, headers=headers) as resp,
    ):
        resp.raise_for_status()
        for chunk in resp.iter_raw(1 << 16):
            fh.write(chunk)
    seconds = time.perf_counter() - t0
    with open(out, "rb") as fh:
        docs = sum(1 for _ in fh)
    return {
        "docs": docs,
        "seconds": round(seconds, 3),
        "docs_per_s": round(docs / seconds),
        "bytes": out.stat().st_size,
        "up_peak_rss_bytes": {role: int(v["peak_rss_bytes"]) for role, v in sampler.by_role().items()},
        "up_peak_rss_largest_bytes": sampler.largest(),
    }


def raw_export(plat: ReadsPlatform, dataset: str, out: Path) -> dict[str, Any]:
    table = f"ds_{dataset}"
    t0 = time.perf_counter()
    docs = 0
    with open(out, "wb") as fh:
        if plat.postgres:
            with psycopg.connect(batch.PG_URL) as conn:
                row = conn.execute(
                    "SELECT table_schema FROM information_schema.tables WHERE table_name = %s AND table_schema LIKE %s",
                    (table, f"{plat.env['MYSIMBDP_PG_PREFIX']}%"),
                ).fetchone()
                assert row is not None
                t0 = time.perf_counter()
                with conn.cursor(name="export") as cur:
                    cur.itersize = 5000
                    cur.execute(f'SELECT doc::text FROM "{row[0]}"."{table}"')
                    for (doc,) in cur:
                        fh.write(doc.encode() + b"\n")
                        docs += 1
        else:
            db = next(p for p in (plat.home).rglob("*.db") if "coredms" in str(p) or "bench" in p.name)
            conn = sqlite3.connect(db)
            try:
                t0 = time.perf_counter()
                for (doc,) in conn.execute(f'SELECT doc FROM "{table}"'):
                    fh.write((doc if isinstance(doc, bytes) else doc.encode()) + b"\n")
                    docs += 1
            finally:
                conn.close()
    seconds = time.perf_counter() - t0
    return {"docs": docs, "seconds": round(seconds, 3), "docs_per_s": round(docs / seconds)}


def filtered(plat: ReadsPlatform, dataset: str, queries: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {plat.api_key}"}
    latencies: list[float] = []
    returned = 0
    with httpx.Client(timeout=60, headers=headers) as client:
        for n in range(queries):
            params = {"filter": json.dumps({"sensor_id": f"S-{(n * 37) % 5000:04d}"}), "limit": "100"}
            t0 = time.perf_counter()
            resp = client.get(f"{plat.api}/v1/datasets/{dataset}/documents", params=params)
            latencies.append(time.perf_counter() - t0)
            resp.raise_for_status()
            body = resp.json()
            returned += len(body["documents"] if isinstance(body, dict) else body)
    latencies.sort()
    return {
        "queries": queries,
        "docs_returned": returned,
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2),
    }


def backend_run(work: Path, original: Path, changed: Path, other: Path, postgres: bool, queries: int) -> dict[str, Any]:
    name = "postgres" if postgres else "sqlite"
    first, second, third = (work / name / d for d in ("v1", "v2", "v3"))
    for d in (first, second, third):
        d.mkdir(parents=True)
    (first / "merged.csv").symlink_to(original)
    (second / "merged.csv").symlink_to(changed)
    (third / "appended.csv").symlink_to(other)
    load = os.getloadavg()
    with ReadsPlatform(work, name, PROFILE, postgres=postgres) as plat:
        insert = ingest(plat, first / "merged.csv")
        merge = ingest(plat, second / "merged.csv")
        append = ingest(plat, third / "appended.csv")
        api = api_export(plat, "merged", work / f"{name}-api.ndjson")
        raw = raw_export(plat, "merged", work / f"{name}-raw.ndjson")
        query = filtered(plat, "merged", queries)
    return {
        "load_avg_at_start": [round(x, 2) for x in load],
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "insert_into_empty_merge_dataset": insert,
        "merge": merge,
        "append": append,
        "merge_vs_append": round(merge["rows_per_s"] / append["rows_per_s"], 3),
        "export_api": api,
        "export_raw": raw,
        "export_api_vs_raw": round(api["docs_per_s"] / raw["docs_per_s"], 3),
        "filtered_query": query,
    }


def export_run(work: Path, original: Path, postgres: bool, rounds: int) -> dict[str, Any]:
    """(b) alone: one ingest into ``merged``, then ``rounds`` of the API export and the raw one."""
    name = "postgres" if postgres else "sqlite"
    first = work / name / "v1"
    first.mkdir(parents=True)
    (first / "merged.csv").symlink_to(original)
    load = os.getloadavg()
    with ReadsPlatform(work, name, PROFILE, postgres=postgres) as plat:
        insert = ingest(plat, first / "merged.csv")
        api, raw = [], []
        for _ in range(rounds):
            api.append(api_export(plat, "merged", work / f"{name}-api.ndjson"))
            raw.append(raw_export(plat, "merged", work / f"{name}-raw.ndjson"))
    api_rate = statistics.median(a["docs_per_s"] for a in api)
    raw_rate = statistics.median(r["docs_per_s"] for r in raw)
    return {
        "load_avg_at_start": [round(x, 2) for x in load],
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "insert_into_empty_merge_dataset": insert,
        "export_api_rounds": api,
        "export_raw_rounds": raw,
        "export_api_vs_raw_per_round": [
            round(a["docs_per_s"] / r["docs_per_s"], 3) for a, r in zip(api, raw, strict=True)
        ],
        "export_api_docs_per_s_median": round(api_rate),
        "export_raw_docs_per_s_median": round(raw_rate),
        "export_api_vs_raw": round(api_rate / raw_rate, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--only", choices=["all", "export"], default="all", help="export: the NDJSON export alone")
    parser.add_argument("--rounds", type=int, default=1, help="--only export: API + raw export rounds")
    args = parser.parse_args()
    out = OUT if args.only == "all" else OUT.with_name("reads-export.json")
    results: dict[str, Any] = {"rows": args.rows, "machine": {**bp.machine(), "platform": platform.platform()}}
    with tempfile.TemporaryDirectory(prefix="bench-reads-") as tmp:
        work = Path(tmp)
        original, changed, other = work / "original.csv", work / "changed.csv", work / "other.csv"
        batch.generate(original, args.rows)
        if args.only == "all":
            changed_copy(original, changed, "corrected reading")
            changed_copy(original, other, "appended reading")  # the same size; not a duplicate of the merged file
        for postgres in (False, True) if not args.skip_postgres else (False,):
            name = "postgres" if postgres else "sqlite"
            print(f"{name}: ...", flush=True)
            if args.only == "export":
                res = export_run(work, original, postgres, max(args.rounds, 1))
            else:
                res = backend_run(work, original, changed, other, postgres, args.queries)
            results[name] = res
            print(json.dumps(res, indent=2), flush=True)
    results["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
