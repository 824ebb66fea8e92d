"""Compressed and Parquet files benchmark: the same rows as plain CSV, gzip, zstd and Parquet, in one run.

Generates bench/batch.py's CSV (default 1,000,000 rows, ~133 MB), compresses it with gzip
(level 6, as `gzip` does by default) and zstd (level 3, as `zstd` does) and writes the same
rows as Parquet (snappy, pyarrow's default, in row groups of 122,880 rows, DuckDB's default:
pyarrow's own default is one group of up to 1Mi rows, while Spark/parquet-mr and DuckDB write
many groups per file; `ts` kept as text, so the rows are the CSV's). Then, for each file,
into a fresh platform home on SQLite:

  (a) end to end: `mysimbdp up` running, `mysimbdp ingest FILE --json` → fetchdata
      (decompression into staging for gzip/zstd, then the scan and checks) → batch manager →
      the generic app → coredms; rows/s from the CLI's start to its exit, with the fetch and
      run durations of the summary;

and in the same run the raw building blocks that explain the ratios:

  (b) decompression: Python's `gzip` module / `backports.zstd` reading the file into nothing;
      the platform's own bounded loop (`formats.compression.decompress`: 64 KiB reads, 256 KiB
      pieces, sha256 of the input, written to a file) in this process; and the platform's
      decompress child as fetchdata starts it (`adapters.files.decompress.decompress_contained`:
      a limited process, without the sandbox);
  (c) reading: `csv.reader` over the plain file; `pyarrow.parquet.read_table` of the Parquet
      file; the platform's Parquet reader (`formats.parquet.ParquetRows`: rows as JSON-ready dicts).

Prints every figure and the ratios gzip/plain, zstd/plain (the issue's target: compressed
≥ 0.8 x uncompressed) and Parquet/CSV, and writes them to bench/out/formats.json.
Run: `make bench-formats` or `.venv/bin/python bench/formats.py [--rows N] [--rounds N]`.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import batch
from _platform import BenchPlatform, human, machine

from mysimbdp.adapters.files.decompress import Unpacked, decompress_contained
from mysimbdp.adapters.files.scanjob import ScanLimits
from mysimbdp.formats.compression import Compression, decompress
from mysimbdp.formats.parquet import ParquetRows
from mysimbdp.logs import configure
from mysimbdp.settings import Settings

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

ROOT = batch.ROOT
PROFILE = batch.APPS["generic"]  # the default profile's generic app, keyed by id, as bench/batch.py's (a)
BLOCK = 1024 * 1024
PARQUET_GROUP_ROWS = 122_880  # DuckDB's default row group (pyarrow's: up to 1Mi rows, one group here)
VARIANTS = ("csv", "gzip", "zstd", "parquet")
NAMES = {"csv": "readings.csv", "gzip": "readings.csv.gz", "zstd": "readings.csv.zst", "parquet": "readings.parquet"}


# -- the files ------------------------------------------------------------------------------
def _copy(src: Path, write: Callable[[bytes], object]) -> None:
    with open(src, "rb") as fh:
        while block := fh.read(BLOCK):
            write(block)


def make_files(work: Path, rows: int) -> dict[str, Path]:
    files = {kind: work / name for kind, name in NAMES.items()}
    t0 = time.perf_counter()
    batch.generate(files["csv"], rows)
    print(f"generated {rows:,} rows, {human(files['csv'].stat().st_size)} CSV in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    with gzip.open(files["gzip"], "wb", compresslevel=6) as gz:
        _copy(files["csv"], gz.write)
    with zstd.open(files["zstd"], "wb", level=3) as zst:
        _copy(files["csv"], zst.write)
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    types = {"ts": pa.string()}  # text, as in the CSV (pyarrow would make it a timestamp)
    table = pacsv.read_csv(files["csv"], convert_options=pacsv.ConvertOptions(column_types=types))
    pq.write_table(table, files["parquet"], row_group_size=PARQUET_GROUP_ROWS)
    groups = pq.ParquetFile(files["parquet"]).metadata.num_row_groups
    print(f"compressed and converted in {time.perf_counter() - t0:.1f} s:")
    for kind, path in files.items():
        size = path.stat().st_size
        extra = f", {groups} row group{'s' * (groups > 1)}" if kind == "parquet" else ""
        ratio = files["csv"].stat().st_size / size
        print(f"  {kind:8} {path.name:18} {human(size):>9} (CSV / this: {ratio:.1f}x{extra})")
    return files


# -- (b), (c): the building blocks ----------------------------------------------------------
def _timed(what: Callable[[], int]) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = what()
    return time.perf_counter() - t0, n


def _read_all(opener: Callable[[Path], Any], path: Path) -> int:
    total = 0
    with opener(path) as fh:
        while block := fh.read(BLOCK):
            total += len(block)
    return total


def building_blocks(work: Path, files: dict[str, Path], rows: int) -> dict[str, Any]:
    plain_bytes = files["csv"].stat().st_size
    out: dict[str, Any] = {}
    settings = Settings.from_env({"MYSIMBDP_HOME": str(work / "unused-home")})
    limits = ScanLimits(settings.scan_timeout_s, settings.scan_memory_bytes)
    modules: dict[str, Callable[[Path], Any]] = {"gzip": gzip.GzipFile, "zstd": zstd.ZstdFile}
    for kind in ("gzip", "zstd"):
        packed = files[kind]
        seconds, n = _timed(lambda: _read_all(modules[kind], packed))  # noqa: B023 (called at once)
        assert n == plain_bytes, (kind, n, plain_bytes)
        entry: dict[str, Any] = {"stdlib_read_s": seconds, "stdlib_mb_per_s": plain_bytes / seconds / 1e6}
        target = work / f"plain-from-{kind}.csv"

        def platform_loop(packed: Path = packed, target: Path = target, kind: str = kind) -> int:
            with open(packed, "rb") as src, open(target, "wb") as dst:
                done = decompress(
                    src,
                    dst,
                    Compression(kind),
                    compressed_size=packed.stat().st_size,
                    max_bytes=10**12,
                    max_ratio=1000.0,
                )
            return done.bytes_out

        seconds, n = _timed(platform_loop)
        assert n == plain_bytes
        entry.update(loop_s=seconds, loop_mb_per_s=plain_bytes / seconds / 1e6)
        target.unlink()
        target.touch()

        def child(packed: Path = packed, target: Path = target, kind: str = kind) -> int:
            result = decompress_contained(
                packed,
                target,
                Compression(kind),
                max_bytes=10**12,
                max_ratio=1000.0,
                limits=limits,
                sandbox=None,
                parent_env=os.environ,
            )
            assert isinstance(result, Unpacked), result
            return result.bytes_out

        seconds, n = _timed(child)
        assert n == plain_bytes
        entry.update(child_s=seconds, child_mb_per_s=plain_bytes / seconds / 1e6)
        target.unlink()
        out[kind] = entry
        print(
            f"(b) {kind} → {human(plain_bytes)}: Python {kind} module {entry['stdlib_read_s']:.2f} s "
            f"({entry['stdlib_mb_per_s']:.0f} MB/s); the platform's loop, to a file "
            f"{entry['loop_s']:.2f} s ({entry['loop_mb_per_s']:.0f} MB/s); its decompress child "
            f"{entry['child_s']:.2f} s ({entry['child_mb_per_s']:.0f} MB/s)"
        )

    def csv_rows() -> int:
        with open(files["csv"], newline="") as fh:
            return sum(1 for _ in csv.reader(fh)) - 1

    seconds, n = _timed(csv_rows)
    assert n == rows
    out["csv_reader"] = {"seconds": seconds, "rows_per_s": rows / seconds}

    import pyarrow.parquet as pq

    seconds, n = _timed(lambda: int(pq.read_table(files["parquet"]).num_rows))
    assert n == rows
    out["pyarrow_read_table"] = {"seconds": seconds, "rows_per_s": rows / seconds}
    seconds, n = _timed(lambda: sum(len(docs) for _, docs in ParquetRows(files["parquet"]).batches()))
    assert n == rows
    out["platform_parquet_rows"] = {"seconds": seconds, "rows_per_s": rows / seconds}
    print(
        f"(c) csv.reader over the CSV: {out['csv_reader']['rows_per_s']:,.0f} rows/s; "
        f"pyarrow.parquet.read_table: {out['pyarrow_read_table']['rows_per_s']:,.0f} rows/s "
        f"({out['pyarrow_read_table']['seconds']:.2f} s); the platform's Parquet reader (dicts): "
        f"{out['platform_parquet_rows']['rows_per_s']:,.0f} rows/s ({out['platform_parquet_rows']['seconds']:.2f} s)"
    )
    return out


# -- (a): end to end ------------------------------------------------------------------------
def end_to_end(work: Path, kind: str, path: Path, rows: int, round_no: int) -> dict[str, Any]:
    with BenchPlatform(work, f"{kind}-{round_no}", PROFILE) as plat:
        ingested = plat.ingest(path)
    summary = ingested.summary
    if summary["status"] != "ingested" or ingested.rows_in_store != rows:
        raise SystemExit(
            f"{kind}: {summary['status']}, {ingested.rows_in_store:,} rows in store of {rows:,}: {summary}"
        )
    durations = summary["durations_s"]
    result = {
        "seconds": ingested.seconds,
        "rows_per_s": rows / ingested.seconds,
        "fetch_s": durations["fetch"],
        "run_s": durations["run"],
        "bytes_sent": path.stat().st_size,
    }
    print(
        f"(a) {kind:8} {result['rows_per_s']:>9,.0f} rows/s ({result['seconds']:.1f} s: fetch {result['fetch_s']} s, "
        f"run {result['run_s']} s)"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1, help="end-to-end rounds, the four files in turn [1]")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "formats.json")
    args = parser.parse_args()
    configure("warning")  # the runner's lines of the decompress children measured in (b)
    info = {**machine(), "platform": platform.platform()}
    print(f"{info['cpus']} CPUs, load average {info['load_avg_at_start']}")
    work = Path(tempfile.mkdtemp(prefix="mysimbdp-formats-"))
    try:
        files = make_files(work, args.rows)
        blocks = building_blocks(work, files, args.rows)
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in VARIANTS}
        for round_no in range(args.rounds):
            print(f"\n== round {round_no + 1} of {args.rounds}: SQLite, generic app ==")
            for kind in VARIANTS:
                runs[kind].append(end_to_end(work, kind, files[kind], args.rows, round_no))
        sizes = {kind: path.stat().st_size for kind, path in files.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {kind: statistics.median(r["rows_per_s"] for r in runs[kind]) for kind in VARIANTS}
    ratios = {
        "gzip/plain": median["gzip"] / median["csv"],
        "zstd/plain": median["zstd"] / median["csv"],
        "parquet/csv": median["parquet"] / median["csv"],
    }
    per_round = {
        name: [runs[a][n]["rows_per_s"] / runs[b][n]["rows_per_s"] for n in range(args.rounds)]
        for name, (a, b) in {
            "gzip/plain": ("gzip", "csv"),
            "zstd/plain": ("zstd", "csv"),
            "parquet/csv": ("parquet", "csv"),
        }.items()
    }
    print(f"\nrows/s (median of {args.rounds}): " + ", ".join(f"{k} {v:,.0f}" for k, v in median.items()))
    for name, value in ratios.items():
        target = " (target ≥ 0.8×: " + ("met)" if value >= 0.8 else "NOT met)") if "plain" in name else ""
        rounds = f" (rounds: {', '.join(f'{r:.2f}' for r in per_round[name])})" if args.rounds > 1 else ""
        print(f"ratio {name}: {value:.2f}×{target}{rounds}")
    results = {
        "machine": info,
        "store": "sqlite",
        "app": "generic",
        "file": {"rows": args.rows, "bytes": sizes},
        "building_blocks": blocks,
        "end_to_end": runs,
        "median_rows_per_s": median,
        "ratios": ratios,
        "ratios_per_round": per_round,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
