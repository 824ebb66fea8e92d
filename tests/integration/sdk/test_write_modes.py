"""The batch SDK (the generic app as a subprocess) and the stream loop write in the mode
MYSIMBDP_WRITE gives, on SQLite and PostgreSQL: merge by order, re-runs change nothing,
replace writes the file's generation only."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from mysimbdp import contract
from mysimbdp.adapters.broker import Message
from mysimbdp.adapters.coredms import open_admin, open_store
from mysimbdp.domain.envelope import Envelope, encode_batch
from mysimbdp.domain.writespec import WriteMode, WriteSpec
from mysimbdp.sdk.stream import StreamConfig, StreamContext

MERGE_BY_TS = WriteSpec(WriteMode.MERGE, "ts")


@pytest.fixture
def store_url(coredms_url: str, pg_prefix: str) -> Iterator[str]:
    admin = open_admin(coredms_url, pg_prefix=pg_prefix)
    try:
        yield admin.provision("acme")
    finally:
        admin.close()


def _ingest(
    url: str, tmp_path: Path, name: str, text: str, spec: WriteSpec, file_id: str, fmt: str = "csv"
) -> dict[str, Any]:
    data = tmp_path / name
    data.write_text(text)
    run_dir = tmp_path / f"run-{file_id}-{len(list(tmp_path.iterdir()))}"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    env.update(
        {
            contract.FILE_ID: file_id,
            contract.INPUT: str(data),
            contract.INPUT_FORMAT: fmt,
            contract.TENANT: "acme",
            contract.INPUT_SHA256: file_id * 8,
            contract.DATASET: "prices",
            contract.KEY_FIELDS: "sku",
            contract.WRITE: spec.to_json(),
            contract.COREDMS_URL: url,
            contract.RESULT: str(run_dir / "result.json"),
            contract.REJECTS: str(run_dir / "rejects.jsonl"),
        }
    )
    proc = subprocess.run([sys.executable, "-m", "mysimbdp.apps.generic"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = orjson.loads((run_dir / "result.json").read_bytes())
    return result


def _prices(url: str) -> dict[str, Any]:
    store = open_store(url)
    try:
        return {doc["sku"]: (doc["price"], doc["ts"]) for doc in store.documents("prices", limit=100)}
    finally:
        store.close()


def test_batch_merge_by_order(store_url: str, tmp_path: Path) -> None:
    """A corrected file updates its keys, a late older file changes nothing, and a re-run of a file writes 0 rows."""
    first = "sku,price,ts\na,1.0,10\nb,2.0,10\n"
    correction = "sku,price,ts\na,1.5,20\n"
    late = "sku,price,ts\na,0.5,15\nb,2.5,30\n"
    assert _ingest(store_url, tmp_path, "p1.csv", first, MERGE_BY_TS, "f1")["rows_written"] == 2
    assert _ingest(store_url, tmp_path, "p2.csv", correction, MERGE_BY_TS, "f2")["rows_written"] == 1
    assert _ingest(store_url, tmp_path, "p3.csv", late, MERGE_BY_TS, "f3")["rows_written"] == 1  # only b is newer
    again = _ingest(store_url, tmp_path, "p3.csv", late, MERGE_BY_TS, "f3")
    assert again["rows_written"] == 0 and again["rows_stored"] == 2
    assert _prices(store_url) == {"a": (1.5, 20), "b": (2.5, 30)}


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("csv", "sku,price,ts\na,1.0,10\nb,2.0,\nc,3.0,11\n"),
        ("jsonl", '{"sku":"a","price":1.0,"ts":10}\n{"sku":"b","price":2.0}\n{"sku":"c","price":3.0,"ts":11}\n'),
    ],
)
def test_batch_merge_quarantines_a_row_without_order_by(store_url: str, tmp_path: Path, fmt: str, text: str) -> None:
    """Mode merge by ts: a row without ts (or with it empty) is rejected with the reason; the others are written."""
    result = _ingest(store_url, tmp_path, f"p.{fmt}", text, MERGE_BY_TS, "f1", fmt)
    assert (result["rows_written"], result["rows_rejected"]) == (2, 1)
    rejects = [orjson.loads(line) for line in next(tmp_path.glob("run-f1-*/rejects.jsonl")).read_bytes().splitlines()]
    assert [r["line"] for r in rejects] == [3 if fmt == "csv" else 2]
    reason = rejects[0]["reason"]
    assert "tenant 'acme'" in reason and "dataset 'prices'" in reason
    assert "write.order_by_missing" in reason and "'ts'" in reason
    assert set(_prices(store_url)) == {"a", "c"}


def test_batch_replace_writes_only_the_files_generation(store_url: str, tmp_path: Path) -> None:
    """In mode replace the app writes the file's generation: the dataset is unchanged until it is swapped in."""
    _ingest(store_url, tmp_path, "p1.csv", "sku,price,ts\na,1.0,1\n", WriteSpec(), "f1")
    spec = WriteSpec(WriteMode.REPLACE)
    assert _ingest(store_url, tmp_path, "p2.csv", "sku,price,ts\nz,9.0,2\n", spec, "f2")["rows_written"] == 1
    assert _prices(store_url) == {"a": (1.0, 1)}
    store = open_store(store_url)
    try:
        assert store.replace("prices", "f2") == 1
    finally:
        store.close()
    assert _prices(store_url) == {"z": (9.0, 2)}


class _Broker:
    url = "fake://"

    def __init__(self, messages: list[Message]) -> None:
        self.queue = messages

    async def pull(self, tenant: str, stream: str, group: str, *, max_messages: int, timeout_s: float) -> list[Message]:
        batch, self.queue = self.queue, []
        if not batch:
            await asyncio.sleep(timeout_s)
        return batch

    async def ack(self, messages: Sequence[Message]) -> None: ...

    async def nak(self, messages: Sequence[Message]) -> None: ...


async def test_stream_merge_by_order(store_url: str, tmp_path: Path) -> None:
    """A stream app in mode merge keeps the newest version of each key; a redelivery changes nothing."""
    store = open_store(store_url)
    config = StreamConfig(
        tenant="acme",
        stream="s",
        dataset="s",
        broker_url="fake://",
        coredms_url="-",
        rejects=tmp_path / "rejects.jsonl",
        key_fields=("sku",),
        write=MERGE_BY_TS,
    )

    def message(n: int, *docs: dict[str, Any]) -> Message:
        envelopes = [Envelope(f"e{n}-{i}", doc) for i, doc in enumerate(docs)]
        return Message(encode_batch("acme", "s", envelopes), 1, f"m{n}")

    first = message(1, {"sku": "a", "ts": 2, "v": "new"}, {"sku": "b", "ts": 1, "v": "b1"})
    late = message(2, {"sku": "a", "ts": 1, "v": "old"}, {"sku": "b", "ts": 3, "v": "b3"})
    ctx = StreamContext(config, _Broker([first, late, first]), store)  # type: ignore[arg-type]
    try:
        await ctx.step(lambda data: data)
        docs = {d["sku"]: d["v"] for d in store.documents("s", limit=10)}
    finally:
        await ctx.give_back()
        ctx.close()
        store.close()
    assert docs == {"a": "new", "b": "b3"}


async def test_stream_merge_quarantines_a_record_without_order_by(store_url: str, tmp_path: Path) -> None:
    """A stream app merging by ts quarantines a record without ts (or ts null), naming the rule; the rest is stored."""
    store = open_store(store_url)
    rejects = tmp_path / "rejects.jsonl"
    config = StreamConfig(
        tenant="acme",
        stream="s",
        dataset="s",
        broker_url="fake://",
        coredms_url="-",
        rejects=rejects,
        key_fields=("sku",),
        write=MERGE_BY_TS,
    )
    docs_in = [{"sku": "a", "ts": 2}, {"sku": "b"}, {"sku": "c", "ts": None}, {"sku": "d", "ts": 1}]
    envelopes = [Envelope(f"e{i}", doc) for i, doc in enumerate(docs_in)]
    ctx = StreamContext(config, _Broker([Message(encode_batch("acme", "s", envelopes), 1, "m1")]), store)  # type: ignore[arg-type]
    try:
        await ctx.step(lambda data: data)
        stored = {d["sku"] for d in store.documents("s", limit=10)}
    finally:
        await ctx.give_back()
        ctx.close()
        store.close()
    assert stored == {"a", "d"}
    reasons = [orjson.loads(line)["reason"] for line in rejects.read_bytes().splitlines()]
    assert len(reasons) == 2
    assert all("tenant 'acme'" in r and "dataset 's'" in r and "write.order_by_missing" in r for r in reasons)
