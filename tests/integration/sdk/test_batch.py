"""Batch apps built on the SDK, run as real subprocesses under the contract, over both stores."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from mysimbdp import contract
from mysimbdp.adapters.coredms import open_admin, open_store
from tests.conftest import POSTGRES_URL

QUALITY = '{"max_bad_row_ratio": 0.5, "rules": [{"field": "qty", "type": "int", "required": true}]}'
CSV = "id,name,qty,price\n1,apple,3,1.5\n2,pear,x,2\n3,plum\n4,fig,5,\n"
CUSTOM_APP = """
from mysimbdp import sdk

def transform(row):
    if row["name"] == "pear":
        return None
    if row["name"] == "fig":
        raise sdk.Reject("no figs today")
    if row["name"] == "kiwi":
        raise ValueError("kiwi is not fruit enough")
    if row["name"] == "nokey":
        return {"qty": 1}
    return {"sku": row["name"].upper(), "qty": int(row["qty"])}

if __name__ == "__main__":
    sdk.run_batch(transform, batch_size=2)
"""


@pytest.fixture
def store_url(backend: str, tmp_path: Path, pg_prefix: str) -> Iterator[str]:
    """A provisioned tenant's scoped coredms URL on the parametrized backend."""
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
            contract.RUN_ID: "run1",
            contract.FILE_ID: "file1",
            contract.INPUT: str(data),
            contract.INPUT_NAME: data.name,
            contract.INPUT_FORMAT: data.suffix.lstrip("."),
            contract.INPUT_SHA256: "ab" * 32,
            contract.DATASET: "things",
            contract.KEY_FIELDS: "",
            contract.QUALITY: "{}",
            contract.MAX_LINE_BYTES: "1048576",
            contract.COREDMS_URL: url,
            contract.RESULT: str(run_dir / "result.json"),
            contract.REJECTS: str(run_dir / "rejects.jsonl"),
            contract.PROGRESS: str(run_dir / "progress.json"),
        }
    )
    env.update(extra)
    return env


def _run(argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=120)
    result_path = Path(env[contract.RESULT])
    result = orjson.loads(result_path.read_bytes()) if result_path.exists() else {}
    return proc, result


def _rejects(env: dict[str, str]) -> dict[int, dict[str, Any]]:
    path = Path(env[contract.REJECTS])
    if not path.exists():
        return {}
    return {item["line"]: item for item in map(orjson.loads, path.read_bytes().splitlines())}


GENERIC = ["-m", "mysimbdp.apps.generic"]


def test_generic_app_types_rejects_and_stores(store_url: str, tmp_path: Path) -> None:
    """The generic app stores typed documents, quarantines a quality failure and a ragged row
    with line and reason, reports exact counts, and a second run adds nothing."""
    data = tmp_path / "things.csv"
    data.write_text(CSV)
    env = _env(tmp_path / "run1", data, store_url, **{contract.QUALITY: QUALITY})
    proc, result = _run(GENERIC, env)
    assert proc.returncode == 0, proc.stderr
    assert result == {
        "rows_written": 2,
        "rows_rejected": 2,
        "rows_skipped": 0,
        "rows_total": 4,
        "bytes_read": len(CSV),
        "dataset": "things",
        "rows_stored": 2,
    }
    rejects = _rejects(env)
    assert set(rejects) == {3, 4}
    assert "qty" in rejects[3]["reason"] and rejects[3]["raw"] == "2,pear,x,2"
    assert rejects[4]["reason"] == "expected 4 fields, got 2" and rejects[4]["raw"] == "3,plum"
    assert "2 written, 2 rejected" in proc.stderr
    progress = orjson.loads(Path(env[contract.PROGRESS]).read_bytes())
    assert progress == {"rows": 4, "bytes": len(CSV), "size": len(CSV)}
    store = open_store(store_url)
    try:
        assert store.documents("things", limit=10) == [
            {"id": 1, "name": "apple", "qty": 3, "price": 1.5},
            {"id": 4, "name": "fig", "qty": 5, "price": None},
        ]
        again_env = _env(tmp_path / "run2", data, store_url, **{contract.QUALITY: QUALITY})
        proc, again = _run(GENERIC, again_env)
        assert proc.returncode == 0, proc.stderr
        assert (again["rows_written"], again["rows_rejected"], again["rows_total"]) == (0, 2, 4)
        assert store.count("things") == 2
    finally:
        store.close()


def test_generic_app_keeps_json_types(store_url: str, tmp_path: Path) -> None:
    """JSON Lines values keep their JSON types; a line that is not JSON is rejected, not fatal."""
    data = tmp_path / "events.jsonl"
    data.write_text('{"a": "1", "b": [1, 2], "c": null}\nnot json\n{"a": 2.5, "b": {"x": true}}\n')
    env = _env(tmp_path / "run", data, store_url, **{contract.DATASET: "events"})
    proc, result = _run(GENERIC, env)
    assert proc.returncode == 0, proc.stderr
    assert (result["rows_written"], result["rows_rejected"], result["rows_total"]) == (2, 1, 3)
    assert set(_rejects(env)) == {2}
    store = open_store(store_url)
    try:
        assert store.documents("events", limit=5) == [{"a": "1", "b": [1, 2], "c": None}, {"a": 2.5, "b": {"x": True}}]
    finally:
        store.close()


def test_custom_app_rejects_filters_and_dedups(store_url: str, tmp_path: Path) -> None:
    """A ten-line run_batch app: Reject, any exception and a missing key field quarantine the
    row with a reason, None skips it, and rows with the same key field land once."""
    app = tmp_path / "app.py"
    app.write_text(CUSTOM_APP)
    data = tmp_path / "fruit.csv"
    data.write_text("name,qty\napple,3\npear,1\nfig,2\nkiwi,4\nnokey,1\nplum,5\napple,7\n")
    env = _env(tmp_path / "run", data, store_url, **{contract.KEY_FIELDS: "sku"})
    proc, result = _run([str(app)], env)
    assert proc.returncode == 0, proc.stderr
    assert result["rows_total"] == 7
    assert (result["rows_written"], result["rows_rejected"], result["rows_skipped"]) == (2, 3, 1)
    reasons = {line: item["reason"] for line, item in _rejects(env).items()}
    assert reasons == {
        4: "no figs today",
        5: "transform raised ValueError: kiwi is not fruit enough",
        6: "key field 'sku' is missing from the document",
    }
    assert _rejects(env)[4]["raw"] == "fig,2"
    store = open_store(store_url)
    try:
        assert store.documents("things", limit=5) == [{"sku": "APPLE", "qty": 3}, {"sku": "PLUM", "qty": 5}]
    finally:
        store.close()


def test_unavailable_store_exits_75(tmp_path: Path) -> None:
    """A store that cannot be reached makes the app exit 75 (retry later) with the error in its result."""
    data = tmp_path / "things.csv"
    data.write_text(CSV)
    env = _env(tmp_path / "run", data, "postgresql://acme:pw@127.0.0.1:1/test?options=-csearch_path%3Dacme")
    proc, result = _run(GENERIC, env)
    assert proc.returncode == 75, proc.stderr
    assert "store unavailable" in result["error"]
    assert result["rows_written"] == 0


def test_unreadable_file_exits_65(store_url: str, tmp_path: Path) -> None:
    """A file that cannot be parsed as a whole (an unterminated quote) exits 65 with the reason."""
    data = tmp_path / "things.csv"
    data.write_text('a,b\n1,"never closed\n2,3\n')
    env = _env(tmp_path / "run", data, store_url)
    proc, result = _run(GENERIC, env)
    assert proc.returncode == 65, proc.stderr
    assert "unterminated quote" in result["error"]


def test_contract_problem_exits_65(tmp_path: Path) -> None:
    """A broken contract environment exits 65 and the result names every problem."""
    data = tmp_path / "things.csv"
    data.write_text(CSV)
    env = _env(tmp_path / "run", data, "sqlite:///nowhere.db", **{contract.INPUT_FORMAT: "xml"})
    del env[contract.DATASET]
    proc, result = _run(GENERIC, env)
    assert proc.returncode == 65
    assert "MYSIMBDP_DATASET is not set" in result["error"] and "'xml'" in result["error"]
    assert "MYSIMBDP_DATASET is not set" in proc.stderr


def test_document_the_store_refuses_is_rejected_alone(backend: str, store_url: str, tmp_path: Path) -> None:
    """A document PostgreSQL's jsonb refuses (a NUL character) is quarantined on its own and
    the rest of its batch lands; SQLite stores it as is."""
    data = tmp_path / "events.jsonl"
    data.write_text('{"a": 1}\n{"a": "x\\u0000y"}\n{"a": 3}\n')
    env = _env(tmp_path / "run", data, store_url, **{contract.DATASET: "events"})
    proc, result = _run(GENERIC, env)
    assert proc.returncode == 0, proc.stderr
    if backend == "postgres":
        assert (result["rows_written"], result["rows_rejected"]) == (2, 1)
        assert "refused" in _rejects(env)[2]["reason"]
    else:
        assert (result["rows_written"], result["rows_rejected"]) == (3, 0)


def _big_csv(path: Path, rows: int) -> Path:
    """Quote-free CSV (~84 bytes a row) with a few ragged and failing rows spread through it."""
    with open(path, "w") as fh:
        fh.write("id,sensor,qty,note\n")
        for n in range(rows):
            if n % 5_000 == 7:
                fh.write(f"{n},s{n % 97}\n")  # ragged
            elif n % 6_000 == 11:
                fh.write(f"{n},s{n % 97},minus,bad qty\n")  # fails the qty rule
            else:
                fh.write(
                    f"{n},s{n % 97},{n % 1000},a reading that pads the row out to a realistic width for a sensor\n"
                )
    return path


def test_parallel_parts_store_exactly_what_one_process_stores(store_url: str, tmp_path: Path, backend: str) -> None:
    """A large file ingested by 2 processes (line-aligned spans) gives the same counts, the
    same rejected lines and the same stored keys as 1 process, and re-running either adds nothing."""
    data = _big_csv(tmp_path / "big.csv", 42_000)
    part_min_bytes = 1024 * 1024  # the SDK's default is 16 MiB: the same split, on a tenth of the rows
    assert data.stat().st_size > 2 * part_min_bytes, "two spans of at least MYSIMBDP_PART_MIN_BYTES"
    quality = '{"rules": [{"field": "qty", "type": "int"}], "max_bad_row_ratio": 0.5}'
    results = {}
    for parallelism in ("1", "2"):
        dataset = f"p{parallelism}"
        env = _env(
            tmp_path / f"run{parallelism}",
            data,
            store_url,
            **{
                contract.QUALITY: quality,
                contract.DATASET: dataset,
                contract.PARALLELISM: parallelism,
                contract.PART_MIN_BYTES: str(part_min_bytes),
            },
        )
        proc, result = _run(GENERIC, env)
        assert proc.returncode == 0, proc.stderr
        assert ("2 parts" in proc.stderr) == (parallelism == "2"), proc.stderr
        results[parallelism] = (result, _rejects(env))
        again, second = _run(GENERIC, env)
        assert again.returncode == 0 and second["rows_written"] == 0 and second["rows_stored"] == result["rows_stored"]
    (one, one_rejects), (two, two_rejects) = results["1"], results["2"]
    for name in ("rows_total", "rows_rejected", "rows_written", "rows_stored", "bytes_read"):
        assert one[name] == two[name], name
    assert sorted(one_rejects) == sorted(two_rejects) and len(one_rejects) == 16
    store = open_store(store_url)
    try:
        assert store.count("p1") == store.count("p2") == 42_000 - 16
        first = store.documents("p1", limit=3, offset=20_000)
        assert first == store.documents("p2", limit=3, offset=20_000)
    finally:
        store.close()


BLOCK_APP = """
from mysimbdp import sdk

def transform(row):
    return {"id": int(row["id"]), "how": "row"}

def block(header, rows):
    if any(row[1] == "boom" for row in rows):
        raise RuntimeError("this block goes row by row")
    return [None if row[1] == "skip" else {"id": int(row[0]), "how": "block"} for row in rows]

if __name__ == "__main__":
    sdk.run_batch(transform, batch_size=2, block_transform=block)
"""


def test_block_transform_skips_and_falls_back_to_rows(store_url: str, tmp_path: Path) -> None:
    """A block transform converts whole blocks; None skips a row; a block it raises on is
    converted row by row by ``transform``; ragged rows are still quarantined by line."""
    app = tmp_path / "app.py"
    app.write_text(BLOCK_APP)
    data = tmp_path / "rows.csv"
    data.write_text("id,name\n1,a\n2,skip\n3,boom\n4,b\n5\n6,c\n")
    env = _env(tmp_path / "run1", data, store_url)
    proc, result = _run([str(app)], env)
    assert proc.returncode == 0, proc.stderr
    assert (result["rows_written"], result["rows_skipped"], result["rows_rejected"]) == (4, 1, 1)
    assert set(_rejects(env)) == {6}
    store = open_store(store_url)
    try:
        docs = {doc["id"]: doc["how"] for doc in store.documents("things", limit=10)}
    finally:
        store.close()
    assert docs == {1: "block", 3: "row", 4: "row", 6: "block"}
