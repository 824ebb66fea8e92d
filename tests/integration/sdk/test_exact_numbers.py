"""Big integers and long decimals keep every digit through the batch path (the generic app on
CSV and JSON Lines, a real subprocess) and the stream path (post -> broker batch -> stream
loop), on SQLite and PostgreSQL, and come back out of the store the same."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path

import orjson
import psycopg
import pytest

from mysimbdp import contract
from mysimbdp.adapters.broker import Message
from mysimbdp.adapters.coredms import DocumentStore, open_admin, open_store, sqlite_path
from mysimbdp.domain import exactjson
from mysimbdp.domain.envelope import encode_batch, parse_post
from mysimbdp.sdk.stream import StreamConfig, StreamContext

BIG = "123456789012345678901234567890"
DECIMAL = "3.14159265358979323846264338327950288"
TINY = "1e-400"


@pytest.fixture
def store_url(coredms_url: str, pg_prefix: str) -> Iterator[str]:
    admin = open_admin(coredms_url, pg_prefix=pg_prefix)
    try:
        yield admin.provision("acme")
    finally:
        admin.close()


def _stored_text(url: str, dataset: str) -> list[str]:
    """The documents as the backend holds them (SQLite's text, PostgreSQL's jsonb as text)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(url)) as conn:
            return [doc for (doc,) in conn.execute(f'SELECT doc FROM "ds_{dataset}" ORDER BY key')]
    with psycopg.connect(url) as conn:
        return [str(doc) for (doc,) in conn.execute(f'SELECT doc::text FROM "ds_{dataset}" ORDER BY key')]


def _run_generic(url: str, data: Path, run_dir: Path) -> subprocess.CompletedProcess[str]:
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    env.update(
        {
            contract.INPUT: str(data),
            contract.INPUT_FORMAT: data.suffix.lstrip("."),
            contract.INPUT_SHA256: "ab" * 32,
            contract.DATASET: "nums",
            contract.KEY_FIELDS: "id",
            contract.COREDMS_URL: url,
            contract.RESULT: str(run_dir / "result.json"),
            contract.REJECTS: str(run_dir / "rejects.jsonl"),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "mysimbdp.apps.generic"], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_batch_keeps_every_digit(store_url: str, tmp_path: Path, fmt: str) -> None:
    """A 30-digit integer, a 36-digit decimal and 1e-400 are stored and read back digit for digit."""
    data = tmp_path / f"nums.{fmt}"
    if fmt == "csv":
        data.write_text(f"id,big,dec,tiny,small\n1,{BIG},{DECIMAL},{TINY},2.5\n2,-{BIG},1.5,0.5,3\n")
    else:
        data.write_text(
            f'{{"id": 1, "big": {BIG}, "dec": {DECIMAL}, "tiny": {TINY}, "small": 2.5}}\n'
            f'{{"id": 2, "big": -{BIG}, "dec": 1.5, "tiny": 0.5, "small": 3}}\n'
        )
    proc = _run_generic(store_url, data, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "run" / "rejects.jsonl").exists()
    store = open_store(store_url)
    try:
        out = orjson.dumps(store.documents("nums", limit=10))
    finally:
        store.close()
    assert f'"big":{BIG}'.encode() in out and f'"big":-{BIG}'.encode() in out
    assert f'"dec":{DECIMAL}'.encode() in out
    first = exactjson.loads(out)[0]
    assert first == {"id": 1, "big": int(BIG), "dec": Decimal(DECIMAL), "tiny": Decimal(TINY), "small": 2.5}
    stored = _stored_text(store_url, "nums")
    assert BIG in stored[0] and DECIMAL in stored[0]


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


async def test_stream_keeps_every_digit(store_url: str, tmp_path: Path) -> None:
    """A posted document's big integer and long decimal reach the store and come back the same."""
    body = f'{{"id": "m1", "data": {{"big": {BIG}, "dec": {DECIMAL}, "n": 1}}}}'.encode()
    envelopes = parse_post(body, ndjson=True)
    message = Message(encode_batch("acme", "s", envelopes), 1, "b1")
    store: DocumentStore = open_store(store_url)
    config = StreamConfig(
        tenant="acme",
        stream="s",
        dataset="s",
        broker_url="fake://",
        coredms_url="-",
        rejects=tmp_path / "rejects.jsonl",
        batch_size=10,
    )
    ctx = StreamContext(config, _Broker([message]), store)  # type: ignore[arg-type]
    try:
        assert await ctx.step(lambda data: data) == 1
        out = orjson.dumps(store.documents("s", limit=10))
    finally:
        await ctx.give_back()
        ctx.close()
        store.close()
    assert f'"big":{BIG}'.encode() in out and f'"dec":{DECIMAL}'.encode() in out
    assert exactjson.loads(out) == [{"big": int(BIG), "dec": Decimal(DECIMAL), "n": 1}]
    assert BIG in _stored_text(store_url, "s")[0]
