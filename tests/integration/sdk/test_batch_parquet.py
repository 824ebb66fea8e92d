"""The generic app on Parquet under the contract, over both stores: chunks of row groups run
as real subprocesses store every row once, a chunk run again writes nothing, and a row that
breaks a quality rule is rejected under its row number."""

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
from mysimbdp.adapters.files.chunker import plan_parquet
from tests.conftest import POSTGRES_URL

GENERIC = ["-m", "mysimbdp.apps.generic"]


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
            contract.INPUT_FORMAT: "parquet",
            contract.INPUT_SHA256: "cd" * 32,
            contract.DATASET: "things",
            contract.COREDMS_URL: url,
            contract.RESULT: str(run_dir / "result.json"),
            contract.REJECTS: str(run_dir / "rejects.jsonl"),
        }
    )
    env.update(extra)
    return env


def _run(env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, *GENERIC], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = orjson.loads(Path(env[contract.RESULT]).read_bytes())
    return result


def _things(path: Path, rows: int) -> Path:
    pq.write_table(pa.table({"id": list(range(rows)), "qty": [n % 10 for n in range(rows)]}), path, row_group_size=100)
    return path


def test_chunks_store_every_row_once_and_a_chunk_run_again_writes_nothing(store_url: str, tmp_path: Path) -> None:
    data = _things(tmp_path / "things.parquet", 1000)
    chunks = plan_parquet(data, 3000)
    assert len(chunks) > 2
    written = 0
    for chunk in chunks:
        bounds = {
            contract.INPUT_START: str(chunk.start),
            contract.INPUT_END: str(chunk.end),
            contract.INPUT_FIRST_LINE: str(chunk.first_line),
        }
        result = _run(_env(tmp_path / f"run{chunk.index}", data, store_url, **bounds))
        assert result["rows_total"] == result["rows_written"] > 0
        written += result["rows_written"]
    assert written == 1000
    chunk = chunks[1]
    again = {
        contract.INPUT_START: str(chunk.start),
        contract.INPUT_END: str(chunk.end),
        contract.INPUT_FIRST_LINE: str(chunk.first_line),
    }
    result = _run(_env(tmp_path / "rerun", data, store_url, **again))
    assert result["rows_written"] == 0 and result["rows_stored"] == result["rows_total"] > 0


def test_a_row_breaking_a_quality_rule_is_rejected_under_its_row_number(store_url: str, tmp_path: Path) -> None:
    data = _things(tmp_path / "things.parquet", 250)
    quality = '{"max_bad_row_ratio": 1.0, "rules": [{"field": "qty", "type": "int", "max": 8.0}]}'
    env = _env(tmp_path / "run", data, store_url, **{contract.QUALITY: quality})
    result = _run(env)
    assert (result["rows_written"], result["rows_rejected"]) == (225, 25)
    rejects = [orjson.loads(line) for line in Path(env[contract.REJECTS]).read_bytes().splitlines()]
    assert rejects[0]["line"] == 10 and orjson.loads(rejects[0]["raw"]) == {"id": 9, "qty": 9}


def test_the_same_rows_as_csv_and_as_parquet_are_stored_as_the_same_documents(store_url: str, tmp_path: Path) -> None:
    """Where the CSV's inferred types are the Parquet columns' (int, float, bool, text, nulls,
    a 64-bit integer at its limit), the generic app stores the same documents from either
    file: the typed Parquet values, taken as they are, are what the CSV's text becomes."""
    rows = 1500  # more than the CSV's 1,000-row type sample
    columns: dict[str, list[Any]] = {
        "id": list(range(rows)),
        "big": [2**63 - 1 - n for n in range(rows)],
        "x": [n / 7 - 50 for n in range(rows)],
        "ok": [n % 3 == 0 for n in range(rows)],
        "name": [None if n % 5 == 0 else f"n{n}" for n in range(rows)],
        "qty": [None if n % 11 == 0 else n % 10 for n in range(rows)],
    }
    parquet = tmp_path / "things.parquet"
    pq.write_table(pa.table(columns), parquet, row_group_size=400)
    text = {True: "true", False: "false", None: ""}
    lines = [",".join(columns)]
    for n in range(rows):
        values = [columns[name][n] for name in columns]
        lines.append(",".join(text[v] if v is None or isinstance(v, bool) else str(v) for v in values))
    csv_file = tmp_path / "things.csv"
    csv_file.write_text("\n".join(lines) + "\n")
    for data, fmt in ((csv_file, "csv"), (parquet, "parquet")):
        extra = {contract.INPUT_FORMAT: fmt, contract.DATASET: f"from_{fmt}", contract.KEY_FIELDS: "id"}
        result = _run(_env(tmp_path / f"run-{fmt}", data, store_url, **extra))
        assert result["rows_written"] == rows, result
    store = open_store(store_url)
    try:
        from_csv = store.documents("from_csv", limit=rows + 1)
        from_parquet = store.documents("from_parquet", limit=rows + 1)
    finally:
        store.close()
    assert len(from_parquet) == rows and from_parquet == from_csv
    assert [orjson.dumps(doc) for doc in from_parquet] == [orjson.dumps(doc) for doc in from_csv]
    assert from_parquet[0] == {"id": 0, "big": 2**63 - 1, "x": -50.0, "ok": True, "name": None, "qty": None}
