"""Compressed batch files end to end through `mysimbdp ingest`, over SQLite and PostgreSQL:
gzip, bzip2 and zstd (CSV and JSON Lines) ingested with every row exactly once, and a big
gzip file decompressed into staging and then cut into chunks like any big plain file."""

from __future__ import annotations

import bz2
import gzip
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from backports import zstd

from tests.e2e.conftest import Cli

PACK: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": (".gz", gzip.compress),
    "bzip2": (".bz2", bz2.compress),
    "zstd": (".zst", zstd.compress),
}
PROFILE = """
formats: [csv, jsonl]
dataset: readings
big_files: {{threshold_bytes: {threshold}, chunk_bytes: 8192}}
batch_apps:
  - name: app
    command: ["{{python}}", "-m", "mysimbdp.apps.generic"]
"""


def _rows(fmt: str, rows: int) -> bytes:
    if fmt == "csv":
        return ("id,sensor,value\n" + "".join(f"{n},s{n % 13},{n * 0.25}\n" for n in range(rows))).encode()
    return b"".join(orjson.dumps({"id": n, "sensor": f"s{n % 13}", "value": n * 0.25}) + b"\n" for n in range(rows))


def _ids(cli: Cli, rows: int) -> list[int]:
    out = cli.run("query", "--tenant", "acme", "--dataset", "readings", "--limit", str(rows * 2), check=True)
    return sorted(int(str(orjson.loads(line)["id"])) for line in out.stdout.splitlines())


# each compression with each format, and each on both stores, in six runs rather than twelve
# (the store sees only the decompressed rows; tests/helpers.py on_backends says why)
CASES = [
    ("sqlite", "gzip", "csv"),
    ("postgres", "gzip", "jsonl"),
    ("sqlite", "bzip2", "jsonl"),
    ("postgres", "bzip2", "csv"),
    ("sqlite", "zstd", "jsonl"),
    ("postgres", "zstd", "csv"),
]


@pytest.mark.parametrize(("backend", "kind", "fmt"), CASES, indirect=["backend"])
def test_a_compressed_file_is_ingested_with_every_row_once(
    cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path, kind: str, fmt: str
) -> None:
    rows = 700
    cli.run(
        "tenant", "add", "acme", "--profile", str(write_tenant("acme", PROFILE.format(threshold=10**9))), check=True
    )
    suffix, pack = PACK[kind]
    sent = tmp_path / f"readings.{fmt}{suffix}"
    sent.write_bytes(pack(_rows(fmt, rows)))
    summary = cli.json("ingest", str(sent), "--tenant", "acme", "--json")
    assert summary["status"] == "ingested", summary
    assert summary["rows_written"] == rows
    assert _ids(cli, rows) == list(range(rows))


def test_a_big_gzip_file_is_decompressed_then_ingested_in_chunks(
    cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path
) -> None:
    """Without `up` the CLI runs the chunks itself; the threshold holds the plain size (the
    compressed file is far below it), so the chunker cuts the decompressed copy."""
    rows = 3000
    cli.run(
        "tenant", "add", "acme", "--profile", str(write_tenant("acme", PROFILE.format(threshold=20000))), check=True
    )
    plain = _rows("csv", rows)
    sent = tmp_path / "readings.csv.gz"
    sent.write_bytes(gzip.compress(plain))
    assert sent.stat().st_size < 20000 < len(plain)
    summary = cli.json("ingest", str(sent), "--tenant", "acme", "--json")
    assert summary["status"] == "ingested", summary
    assert summary["chunks"]["total"] == summary["chunks"]["done"] >= len(plain) // 8192
    assert summary["rows_written"] == rows
    assert _ids(cli, rows) == list(range(rows))
