"""The generic app on a Parquet file of several row groups, in parallel parts (ranges of
whole row groups) under the contract, over both stores: the same documents, the same
rejects under the same (global) row numbers as one process, and exactly once on a re-run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mysimbdp import contract
from mysimbdp.adapters.coredms import open_admin, open_store
from tests.conftest import POSTGRES_URL

GENERIC = ["-m", "mysimbdp.apps.generic"]
ROWS = 4_000
QUALITY = '{"max_bad_row_ratio": 1.0, "rules": [{"field": "qty", "type": "int", "max": 8.0}]}'


@pytest.fixture
def store_url(backend: str, tmp_path: Path, pg_prefix: str) -> Iterator[str]:
    admin = open_admin(
        f"sqlite:///{tmp_path / 'coredms'}" if backend == "sqlite" else POSTGRES_URL, pg_prefix=pg_prefix
    )
    try:
        yield admin.provision("acme")
    finally:
        admin.close()


def _env(run_dir: Path, data: Path, url: str, **extra: str) -> dict[str, str]:
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    env.update(
        {
            contract.TENANT: "acme",
            contract.RUN_ID: run_dir.name,
            contract.FILE_ID: "file1",
            contract.INPUT: str(data),
            contract.INPUT_NAME: data.name,
            contract.INPUT_FORMAT: "parquet",
            contract.INPUT_SHA256: "cd" * 32,
            contract.DATASET: "things",
            contract.QUALITY: QUALITY,
            contract.COREDMS_URL: url,
            contract.RESULT: str(run_dir / "result.json"),
            contract.REJECTS: str(run_dir / "rejects.jsonl"),
            contract.PROGRESS: str(run_dir / "progress.json"),
            contract.PART_MIN_BYTES: "1024",
        }
    )
    env.update(extra)
    return env


def _run(env: dict[str, str]) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    proc = subprocess.run([sys.executable, *GENERIC], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = orjson.loads(Path(env[contract.RESULT]).read_bytes())
    rejects_path = Path(env[contract.REJECTS])
    rejects = [orjson.loads(line) for line in rejects_path.read_bytes().splitlines()] if rejects_path.exists() else []
    rejects_path.unlink(missing_ok=True)
    return proc.stderr, result, rejects


def _things(path: Path) -> Path:
    table = pa.table(
        {
            "id": list(range(ROWS)),
            "qty": [n % 10 for n in range(ROWS)],
            "note": [f"reading {n} of sensor s{n % 97}" for n in range(ROWS)],
        }
    )
    pq.write_table(table, path, row_group_size=400)  # 10 row groups
    return path


def test_row_group_parts_store_exactly_what_one_process_stores(store_url: str, tmp_path: Path) -> None:
    data = _things(tmp_path / "things.parquet")
    assert pq.ParquetFile(data).metadata.num_row_groups == 10
    runs = {}
    for parallelism in ("1", "2"):
        env = _env(
            tmp_path / f"run{parallelism}",
            data,
            store_url,
            **{contract.PARALLELISM: parallelism, contract.DATASET: f"p{parallelism}"},
        )
        stderr, result, rejects = _run(env)
        assert ("2 parts" in stderr) == (parallelism == "2"), stderr
        assert result.get("parts", 1) == int(parallelism), result
        runs[parallelism] = (result, rejects)
        _, again, _ = _run(env)  # exactly once: a re-run writes nothing
        assert again["rows_written"] == 0 and again["rows_stored"] == result["rows_stored"]
    (one, one_rejects), (two, two_rejects) = runs["1"], runs["2"]
    for name in ("rows_total", "rows_rejected", "rows_written", "rows_stored", "bytes_read"):
        assert one[name] == two[name], name
    assert (one["rows_written"], one["rows_rejected"]) == (ROWS - ROWS // 10, ROWS // 10)
    assert sorted(r["line"] for r in two_rejects) == [r["line"] for r in one_rejects] == list(range(10, ROWS + 1, 10))
    by_line = {r["line"]: r for r in one_rejects}
    assert all(by_line[r["line"]] == r for r in two_rejects)
    assert orjson.loads(by_line[ROWS]["raw"])["id"] == ROWS - 1  # global row numbers, not per part
    store = open_store(store_url)
    try:
        assert store.count("p1") == store.count("p2") == ROWS - ROWS // 10
        assert store.documents("p1", limit=ROWS) == store.documents("p2", limit=ROWS)
    finally:
        store.close()
    # The same keys: two parts run into the dataset one process filled write nothing.
    env = _env(tmp_path / "into-p1", data, store_url, **{contract.PARALLELISM: "2", contract.DATASET: "p1"})
    stderr, result, _ = _run(env)
    assert "2 parts" in stderr and result["rows_written"] == 0 and result["rows_stored"] == one["rows_stored"]


def test_a_file_of_one_row_group_is_one_process(store_url: str, tmp_path: Path) -> None:
    data = tmp_path / "one.parquet"
    pq.write_table(pa.table({"id": list(range(5_000)), "qty": [n % 9 for n in range(5_000)]}), data)
    assert pq.ParquetFile(data).metadata.num_row_groups == 1
    stderr, result, _ = _run(_env(tmp_path / "run", data, store_url, **{contract.PARALLELISM: "2"}))
    assert "parts" not in stderr and "parts" not in result and result["rows_written"] == 5_000
