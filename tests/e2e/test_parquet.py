"""Parquet files end to end: `mysimbdp ingest --wait` through fetch and the generic app into
coredms (SQLite and PostgreSQL), typed values as documented, keys stable on a re-run; a big
Parquet file chunked by row groups and run by the CLI's own workers, each row once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from tests.e2e.conftest import Cli
from tests.helpers import on_backends

PROFILE = """
dataset: readings
key_fields: [id]
"""
BIG = """
dataset: readings
big_files: {threshold_bytes: 10000, chunk_bytes: 4096}
"""


def _readings(path: Path, rows: int, group_rows: int) -> Path:
    start = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "at": pa.array([start + dt.timedelta(seconds=n) for n in range(rows)], pa.timestamp("us", tz="UTC")),
            "price": pa.array([Decimal(n) / 100 for n in range(rows)], pa.decimal128(12, 2)),
            "where": pa.array([{"site": f"s{n % 3}", "floor": n % 5} for n in range(rows)]),
        }
    )
    pq.write_table(table, path, row_group_size=group_rows)
    return path


def _documents(cli: Cli, rows: int) -> list[dict[str, object]]:
    out = cli.run("query", "--tenant", "acme", "--dataset", "readings", "--limit", str(rows * 2), check=True)
    return [orjson.loads(line) for line in out.stdout.splitlines()]


def test_a_parquet_file_is_ingested_with_its_types_and_a_rerun_writes_nothing_twice(
    cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path
) -> None:
    """500 rows in 5 row groups: all stored, decimal and timestamp as exact ISO/decimal text,
    the struct as an object; the same rows again (another file) store nothing twice."""
    rows = 500
    cli.run("tenant", "add", "acme", "--profile", str(write_tenant("acme", PROFILE)), check=True)
    summary = cli.json(
        "ingest", str(_readings(tmp_path / "readings.parquet", rows, 100)), "--tenant", "acme", "--wait", "--json"
    )
    assert summary["status"] == "ingested", summary
    assert summary["rows_written"] == rows
    docs = _documents(cli, rows)
    assert sorted(int(str(d["id"])) for d in docs) == list(range(rows))
    doc = next(d for d in docs if d["id"] == 123)
    assert doc == {"id": 123, "at": "2026-12-03T12:02:03.000000Z", "price": "1.23", "where": {"site": "s0", "floor": 3}}
    again = cli.json("ingest", str(_readings(tmp_path / "again.parquet", rows, 50)), "--tenant", "acme", "--json")
    assert again["status"] == "ingested", again
    assert len(_documents(cli, rows)) == rows  # the same keys: no document twice


@on_backends("postgres")
def test_a_big_parquet_file_is_chunked_by_row_groups_and_each_row_stored_once(
    cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path
) -> None:
    """Tiny big_files thresholds: several chunks of whole row groups, run by the CLI itself;
    the counts are exact and every row (keyed by file and row number) is stored once."""
    rows = 3000
    cli.run("tenant", "add", "acme", "--profile", str(write_tenant("acme", BIG)), check=True)
    data = _readings(tmp_path / "big.parquet", rows, 200)
    summary = cli.json("ingest", str(data), "--tenant", "acme", "--json")
    assert summary["status"] == "ingested", summary
    assert summary["chunks"]["total"] == summary["chunks"]["done"] > 1
    assert summary["rows_written"] == rows
    docs = _documents(cli, rows)
    assert sorted(int(str(d["id"])) for d in docs) == list(range(rows))
