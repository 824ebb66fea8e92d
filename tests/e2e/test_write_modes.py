"""Write modes end to end through `mysimbdp ingest` (SQLite and PostgreSQL): merge takes a
corrected file (big numbers intact), replace swaps a file's rows in for the dataset's, also
when the file is chunked, and a profile giving a stream app mode replace is refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import orjson

from tests.e2e.conftest import Cli

BIG = "123456789012345678901234567890"


def _query(cli: Cli, dataset: str) -> list[bytes]:
    out = cli.run("query", "--tenant", "acme", "--dataset", dataset, "--limit", "5000", check=True)
    return out.stdout.encode().splitlines()


def _ingest(cli: Cli, path: Path) -> dict[str, object]:
    summary: dict[str, object] = cli.json("ingest", str(path), "--tenant", "acme", "--json")
    assert summary["status"] == "ingested", summary
    return summary


def test_merge_takes_a_correction_and_keeps_big_numbers(
    cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path
) -> None:
    """A corrected row (same key, newer version) replaces the stored one; a 30-digit integer prints back whole."""
    profile = "dataset: prices\nkey_fields: [sku]\nwrite: {mode: merge, order_by: v}\nindexes: [[sku]]\n"
    cli.run("tenant", "add", "acme", "--profile", str(write_tenant("acme", profile)), check=True)
    (tmp_path / "p1.csv").write_text(f"sku,big,v\na,{BIG},1\nb,1,1\n")
    (tmp_path / "p2.csv").write_text(f"sku,big,v\na,-{BIG},2\nb,7,0\n")
    _ingest(cli, tmp_path / "p1.csv")
    _ingest(cli, tmp_path / "p2.csv")
    a, b = _query(cli, "prices")
    assert json.loads(a) == {"sku": "a", "big": -int(BIG), "v": 2}  # json: integers of any size, exact
    assert orjson.loads(b) == {"sku": "b", "big": 1, "v": 1}  # its version 0 came late: older


REPLACE = """
dataset: snap
key_fields: [id]
write: {{mode: replace}}
stream_apps: []
big_files: {{threshold_bytes: {threshold}, chunk_bytes: 4096}}
"""


def test_replace_swaps_in_each_files_rows_also_chunked(
    cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path
) -> None:
    """Each file replaces the dataset's content: a small file, another, then a chunked one."""
    profile = write_tenant("acme", REPLACE.format(threshold=10000))
    cli.run("tenant", "add", "acme", "--profile", str(profile), check=True)
    (tmp_path / "s1.csv").write_text("id,v\n1,a\n2,b\n3,c\n")
    (tmp_path / "s2.csv").write_text("id,v\n8,x\n9,y\n")
    _ingest(cli, tmp_path / "s1.csv")
    assert len(_query(cli, "snap")) == 3
    _ingest(cli, tmp_path / "s2.csv")
    assert [orjson.loads(line)["id"] for line in _query(cli, "snap")] == [8, 9]
    big = tmp_path / "s3.csv"
    big.write_text("id,v\n" + "".join(f"{n},{'z' * 20}\n" for n in range(100, 1600)))
    summary = _ingest(cli, big)
    chunks = summary["chunks"]
    assert isinstance(chunks, dict) and chunks["total"] > 1
    ids = [orjson.loads(line)["id"] for line in _query(cli, "snap")]
    assert sorted(ids) == list(range(100, 1600))


def test_a_stream_app_in_mode_replace_is_refused(cli: Cli, write_tenant: Callable[..., Path]) -> None:
    """tenant add refuses replace for every dataset with the default stream app, naming tenant, app, rule and value."""
    proc = cli.run("tenant", "add", "acme", "--profile", str(write_tenant("acme", "write: {mode: replace}\n")))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "tenant 'acme'" in out and "stream app 'generic'" in out and "write.mode 'replace' is for files only" in out
