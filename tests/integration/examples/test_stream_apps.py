"""The example tenants' stream apps run for real: each tenant's bundle copied as the platform
copies it, its profile's stream app command started under the contract, its sample messages
published to the embedded NATS JetStream broker, documents written to SQLite."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import orjson
import pytest

from mysimbdp import contract
from mysimbdp.adapters.broker import open_broker
from mysimbdp.adapters.coredms import open_admin, open_store
from mysimbdp.adapters.process import runner
from mysimbdp.domain.envelope import Envelope, batch_id, encode_batch, parse_post
from mysimbdp.domain.profile import load_profile
from mysimbdp.sdk import Reject
from tests.helpers import ROOT

EXAMPLES = ROOT / "examples" / "tenants"
POST_SIZE = 50  # envelopes per broker message, as a producer posting in chunks would send them


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _expected(bundle: Path, envelopes: list[Envelope]) -> tuple[list[dict[str, Any]], set[str], int]:
    """(documents, ids of the rejected envelopes, skipped count) when the tenant's transform
    runs in this process over ``envelopes``: what the app instance must end with."""
    batch = _load(bundle / "batch_app.py", f"it_{bundle.parent.name}_batch_app")
    with mock.patch.dict(sys.modules, {"batch_app": batch}):
        transform = _load(bundle / "stream_app.py", f"it_{bundle.parent.name}_stream_app").transform
    documents: list[dict[str, Any]] = []
    rejected: set[str] = set()
    skipped = 0
    for envelope in envelopes:
        try:
            doc = transform(envelope.data)
        except Reject:
            rejected.add(envelope.id)
            continue
        if doc is None:
            skipped += 1
        else:
            documents.append(doc)
    return documents, rejected, skipped


def _by_key(documents: list[dict[str, Any]]) -> list[bytes]:
    return sorted(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) for doc in documents)


@pytest.mark.parametrize(
    ("tenant", "stream", "bad", "skipped"),
    [("flights", "status", 9, 3), ("sensors", "readings", 12, 20)],
)
async def test_example_stream_app_stores_good_messages_and_quarantines_bad_ones(
    embedded_nats: str, tmp_path: Path, tenant: str, stream: str, bad: int, skipped: int
) -> None:
    """The sample file's good messages land in the profile's dataset exactly as the tenant's
    transform makes them, the bad ones are quarantined with their reasons, nothing is left."""
    source = EXAMPLES / tenant
    bundle = tmp_path / tenant / "bundle"
    shutil.copytree(source, bundle, ignore=shutil.ignore_patterns("data", "__pycache__", ".*"))
    profile = load_profile(bundle / "profile.yaml")
    app = profile.stream_app_for(stream)
    assert app is not None
    dataset = app.dataset or stream
    envelopes = parse_post((source / "data" / "stream" / f"{stream}.ndjson").read_bytes(), ndjson=True)
    documents, rejected_ids, skipped_count = _expected(bundle, envelopes)
    assert (len(rejected_ids), skipped_count) == (bad, skipped)

    admin = open_admin(f"sqlite:///{tmp_path / 'coredms'}")
    store_url = admin.provision(tenant)
    broker = open_broker(embedded_nats, ack_wait_s=2.0)
    await broker.connect()
    rejects = tmp_path / "rejects.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    env.update(
        {
            contract.TENANT: tenant,
            contract.STREAM: stream,
            contract.GROUP: app.name,
            contract.INSTANCE: "it-1",
            contract.DATASET: dataset,
            contract.BROKER_URL: embedded_nats,
            contract.COREDMS_URL: store_url,
            contract.REJECTS: str(rejects),
            contract.BATCH_SIZE: str(app.batch_size),
            contract.MAX_DELIVERIES: str(app.max_deliveries),
            contract.ACK_WAIT_S: "2",
            contract.KEY_FIELDS: ",".join(profile.key_fields),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    proc: subprocess.Popen[str] | None = None
    err = ""
    try:
        await broker.declare(tenant, stream)
        for start in range(0, len(envelopes), POST_SIZE):
            chunk = envelopes[start : start + POST_SIZE]
            await broker.publish(tenant, stream, [encode_batch(tenant, stream, chunk)], [batch_id(chunk)])
        proc = subprocess.Popen(
            runner.app_argv(app.command, str(bundle)), env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
        )
        store = open_store(store_url)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (
                store.count(dataset) < len(documents) or await broker.backlog(tenant, stream, app.name) > 0
            ):
                await asyncio.sleep(0.2)
            stored = store.documents(dataset, limit=1000)
        finally:
            store.close()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        await broker.close()
        admin.close()
    assert proc is not None and proc.returncode == 0, err
    assert f"{len(documents)} records written, {bad} quarantined, {skipped} skipped" in err
    assert _by_key(stored) == _by_key(documents)
    quarantined = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert {q["id"] for q in quarantined} == rejected_ids and len(quarantined) == bad
    assert all(q["stream"] == stream and q["reason"].split(": ", 1)[0].isidentifier() for q in quarantined)
