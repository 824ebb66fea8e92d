"""Quarantine replay and purge over real ingestion, on SQLite and PostgreSQL: a file with bad
rows is ingested by the tenant's own batch app (a subprocess), the app or the profile is
fixed, and the replay stores each row once under the key it would have had the first time;
a stream message quarantined by a raising transform is republished and stored once."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from mysimbdp.adapters.broker import Broker, open_broker
from mysimbdp.adapters.coredms import open_store
from mysimbdp.domain.envelope import Envelope, batch_id, encode_batch
from mysimbdp.domain.records import QuarantinedRow
from mysimbdp.managers.streamingest import StreamIngestManager
from mysimbdp.runtime.platform import Platform
from mysimbdp.services import quarantine
from mysimbdp.services.ingest import ingest_one
from mysimbdp.services.quarantine import Selection
from mysimbdp.services.quarantine_replay import replay
from mysimbdp.services.tenants import add_tenant, update_tenant
from mysimbdp.settings import Settings
from tests import clifork
from tests.helpers import until_async

PROFILE = """
formats: [csv]
dataset: orders
quality:
  max_bad_row_ratio: 0.9
  rules: [{rules}]
key_fields: [{keys}]
batch_apps:
  - name: app
    command: ["{{python}}", "{{bundle}}/app.py"]
    memory_mb: 512
stream_apps:
  - name: clicker
    command: ["{{python}}", "{{bundle}}/stream_app.py"]
    streams: [clicks]
    batch_size: 10
    min_instances: 1
    max_instances: 1
    report_period_s: 0.5
"""
NEGATIVE_QTY = "{field: qty, type: int, min: 0}"

# v1 of the batch app cannot read a quantity written "n/a"; v2 stores it as null but still
# refuses "??" (with another reason).
APP_V1 = """
from mysimbdp import sdk
sdk.run_batch(lambda row: {"sku": row["sku"], "qty": int(row["qty"])})
"""
APP_V2 = """
from mysimbdp import sdk

def transform(row):
    if row["qty"] == "??":
        raise sdk.Reject("qty '??' means nothing, even to v2")
    return {"sku": row["sku"], "qty": None if row["qty"] == "n/a" else int(row["qty"])}

sdk.run_batch(transform)
"""
STREAM_V1 = """
from mysimbdp import sdk

def transform(data):
    if data.get("boom"):
        raise ValueError("v1 cannot take boom")
    return data

sdk.run_stream(transform)
"""
STREAM_V2 = STREAM_V1.replace('raise ValueError("v1 cannot take boom")', 'return {**data, "fixed": True}')

ORDERS = "sku,qty\na1,3\na2,n/a\na3,4\na4,??\na5,n/a\na6,7\n"  # lines 3 and 6 wait for v2, 5 stays bad


@pytest.fixture
def platform(home: Path, meta_url: str, coredms_url: str, pg_prefix: str) -> Iterator[Platform]:
    settings = Settings(home=home, meta_url=meta_url, coredms_url=coredms_url, pg_prefix=pg_prefix, poll_interval_s=0.2)
    with Platform(settings, {}) as started:
        yield started


@dataclass
class Tenant:
    id: str
    bundle: Path

    def fix(self, name: str, text: str) -> None:
        (self.bundle / name).write_text(text, encoding="utf-8")


def _add(
    platform: Platform, tmp_path: Path, tenant: str, *, rules: str = "", keys: str = "", app: str = APP_V1
) -> Tenant:
    source = tmp_path / "bundles" / tenant
    source.mkdir(parents=True)
    (source / "profile.yaml").write_text(PROFILE.format(rules=rules, keys=keys), encoding="utf-8")
    (source / "app.py").write_text(app, encoding="utf-8")
    (source / "stream_app.py").write_text(STREAM_V1, encoding="utf-8")
    added = add_tenant(platform, tenant, source / "profile.yaml")
    return Tenant(tenant, Path(added.record.bundle_dir))


def _set_profile(platform: Platform, tmp_path: Path, tenant: str, profile: str) -> None:
    """The tenant fixes its profile: `tenant update` with a new bundle (same apps)."""
    source = tmp_path / "bundles" / f"{tenant}-fixed"
    shutil.copytree(platform.home.bundle(tenant), source)
    (source / "profile.yaml").write_text(profile, encoding="utf-8")
    update_tenant(platform, tenant, source / "profile.yaml")


async def _ingest(platform: Platform, tenant: str, tmp_path: Path, text: str, name: str = "orders.csv") -> str:
    folder = tmp_path / "drop" / tenant
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    record = await ingest_one(platform, tenant, folder / name, wait=True)
    assert record is not None and record.status == "ingested", record
    return record.id


def _documents(platform: Platform, tenant: str, dataset: str = "orders") -> list[dict[str, Any]]:
    record, _ = platform.tenant(tenant)
    store = open_store(record.coredms_url)
    try:
        return store.documents(dataset, limit=1000)
    finally:
        store.close()


def _lines(platform: Platform, tenant: str, file_id: str) -> dict[int, str]:
    entries, _ = quarantine.show(platform, Selection(tenant, file_id), limit=100, offset=0)
    return {e.line: e.reason for e in entries}


async def test_a_fixed_app_replays_rows_under_their_original_keys(platform: Platform, tmp_path: Path) -> None:
    """After the app is fixed, a replay stores the rows it now accepts exactly where a clean
    ingestion would have (same keys, same documents, same count), keeps the row still bad
    with its new reason, and a second replay changes nothing in the store."""
    shop = _add(platform, tmp_path, "shop")
    file_id = await _ingest(platform, "shop", tmp_path, ORDERS)
    assert set(_lines(platform, "shop", file_id)) == {3, 5, 6}
    shop.fix("app.py", APP_V2)

    (outcome,) = await replay(platform, Selection("shop", file_id))
    assert (outcome.replayed, outcome.restored, outcome.already_stored, outcome.quarantined_again) == (3, 2, 0, 1)
    assert outcome.errors == [] and outcome.remaining == 1
    left = _lines(platform, "shop", file_id)
    assert list(left) == [5] and "means nothing, even to v2" in left[5], "the row still bad has the new reason"

    _add(platform, tmp_path, "clean", app=APP_V2)  # the same file, ingested by the fixed app from the start
    await _ingest(platform, "clean", tmp_path, ORDERS)
    clean = _documents(platform, "clean")
    assert _documents(platform, "shop") == clean, "same keys (read in key order), same documents"
    assert len(clean) == 5

    (again,) = await replay(platform, Selection("shop", file_id))
    assert (again.replayed, again.restored, again.quarantined_again) == (1, 0, 1)
    assert _documents(platform, "shop") == clean and list(_lines(platform, "shop", file_id)) == [5]
    record = platform.meta.get_file(file_id)
    assert record is not None and (record.rows_written, record.rows_rejected) == (5, 1)


async def test_a_row_replayed_after_it_was_stored_is_not_stored_twice(platform: Platform, tmp_path: Path) -> None:
    """A replay cut short after the store wrote but before the quarantine was settled leaves
    an entry of a stored row: the next replay finds it already stored under its key."""
    shop = _add(platform, tmp_path, "shop")
    file_id = await _ingest(platform, "shop", tmp_path, ORDERS)
    shop.fix("app.py", APP_V2)
    await replay(platform, Selection("shop", file_id))
    stored = _documents(platform, "shop")
    platform.meta.add_quarantine([QuarantinedRow("shop", file_id, "r_lost", 3, "a2,n/a", "v1 failed")])

    (outcome,) = await replay(platform, Selection("shop", file_id))
    assert (outcome.replayed, outcome.restored, outcome.already_stored) == (2, 0, 1)
    assert _documents(platform, "shop") == stored
    assert list(_lines(platform, "shop", file_id)) == [5]


async def test_a_relaxed_profile_rule_replays_rows_keyed_by_their_fields(platform: Platform, tmp_path: Path) -> None:
    """Rows the profile's quality rule refused land once the rule is relaxed, keyed by the
    profile's key fields as in a clean ingestion; replaying twice is a no-op."""
    _add(platform, tmp_path, "shop", rules=NEGATIVE_QTY, keys="sku", app=APP_V2)
    text = "sku,qty\na1,3\na2,-1\na3,4\na4,-5\n"
    file_id = await _ingest(platform, "shop", tmp_path, text)
    assert set(_lines(platform, "shop", file_id)) == {3, 5}
    _set_profile(platform, tmp_path, "shop", PROFILE.format(rules="", keys="sku"))

    (outcome,) = await replay(platform, Selection("shop", file_id))
    assert (outcome.replayed, outcome.restored, outcome.remaining) == (2, 2, 0)
    _add(platform, tmp_path, "clean", keys="sku", app=APP_V2)
    await _ingest(platform, "clean", tmp_path, text)
    assert _documents(platform, "shop") == _documents(platform, "clean")
    assert await replay(platform, Selection("shop", file_id)) == [], "nothing left: a no-op"
    assert len(_documents(platform, "shop")) == 4


async def test_a_failing_replay_changes_nothing(platform: Platform, tmp_path: Path) -> None:
    """An app that crashes on the replay leaves every entry as it was and says why."""
    shop = _add(platform, tmp_path, "shop")
    file_id = await _ingest(platform, "shop", tmp_path, ORDERS)
    before = _lines(platform, "shop", file_id)
    shop.fix("app.py", "raise SystemExit('v3 is broken')\n")
    (outcome,) = await replay(platform, Selection("shop", file_id))
    assert outcome.replayed == 0 and outcome.errors and "entries stay quarantined" in outcome.errors[0]
    assert _lines(platform, "shop", file_id) == before
    runs = [r for r in platform.meta.list_runs("shop") if r.file_id == file_id]
    assert [str(r.status) for r in runs] == ["succeeded", "failed"], "the replay run is recorded"


async def test_purge_records_who_and_when_and_removes_the_entries(platform: Platform, tmp_path: Path) -> None:
    """A purge deletes the selection only and records who, when, how many and why."""
    _add(platform, tmp_path, "shop")
    file_id = await _ingest(platform, "shop", tmp_path, ORDERS)
    other = await _ingest(platform, "shop", tmp_path, "sku,qty\nb1,n/a\n", name="more.csv")
    before = time.time()
    record = quarantine.purge(platform, Selection("shop", file_id), purged_by="alice", via="test")
    assert (record.entries, record.purged_by, record.selection) == (3, "alice", f"file {file_id}")
    assert before <= record.at <= time.time()
    assert record.reasons == [("transform raised ValueError: invalid literal for int() with base 10: …", 3)]
    assert _lines(platform, "shop", file_id) == {} and list(_lines(platform, "shop", other)) == [2]
    records, total = quarantine.purges(platform, "shop")
    assert total == 1 and records[0].id == record.id and records[0].via == "test"
    _add(platform, tmp_path, "other")
    with pytest.raises(quarantine.UnknownSource, match="tenant 'other': no file"):
        quarantine.purge(platform, Selection("other", other), purged_by="mallory", via="test")
    assert list(_lines(platform, "shop", other)) == [2], "another tenant's purge touched nothing"


# -- the CLI, as a subprocess over the same home and stores ------------------------------------
def _cli(platform: Platform) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSIMBDP_")}
    settings = platform.settings
    env.update(
        MYSIMBDP_HOME=str(settings.home),
        MYSIMBDP_META_URL=settings.meta_url,
        MYSIMBDP_COREDMS_URL=settings.coredms_url,
        MYSIMBDP_PG_PREFIX=settings.pg_prefix,
        MYSIMBDP_LOG_FORMAT="json",
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return clifork.run(["quarantine", *args], env=env)

    return run


async def test_the_cli_lists_shows_replays_and_purges_one_tenants_entries(platform: Platform, tmp_path: Path) -> None:
    """`mysimbdp quarantine`: list counts per file with reasons, show pages the entries,
    replay reports what happened, purge records --by; another tenant's file is an error
    and its listing never shows this tenant's entries."""
    shop = _add(platform, tmp_path, "shop")
    _add(platform, tmp_path, "other")
    file_id = await _ingest(platform, "shop", tmp_path, ORDERS)
    await _ingest(platform, "other", tmp_path, "sku,qty\nz1,n/a\n")
    cli = _cli(platform)

    listed = orjson.loads(cli("list", "--tenant", "shop", "--json").stdout)
    assert [(s["source"], s["name"], s["entries"]) for s in listed] == [(file_id, "orders.csv", 3)]
    assert "invalid literal for int()" in listed[0]["reasons"][0]["reason"]
    page = orjson.loads(cli("show", "--tenant", "shop", "--file", file_id, "--limit", "2", "--json").stdout)
    assert page["total"] == 3 and [e["line"] for e in page["items"]] == [3, 5] and page["items"][0]["raw"] == "a2,n/a"
    text = cli("show", "--tenant", "shop", "--file", file_id).stdout
    assert "a4,??" in text and "entries 1-3 of 3" in text

    foreign = cli("replay", "--tenant", "other", "--file", file_id, "--json")
    assert foreign.returncode == 1 and f"no file {file_id!r}" in foreign.stderr
    assert [s["entries"] for s in orjson.loads(cli("list", "--tenant", "other", "--json").stdout)] == [1]
    assert cli("purge", "--tenant", "other", "--file", file_id, "--yes").returncode == 1
    assert len(_lines(platform, "shop", file_id)) == 3, "the other tenant touched nothing"

    shop.fix("app.py", APP_V2)
    replayed = cli("replay", "--tenant", "shop", "--file", file_id, "--json")
    assert replayed.returncode == 0, replayed.stderr
    (report,) = orjson.loads(replayed.stdout)
    assert (report["restored"], report["quarantined_again"], report["remaining"]) == (2, 1, 1)
    human = cli("replay", "--tenant", "shop")
    assert "1 of 1 replayed: 0 stored" in human.stdout and "1 quarantined again" in human.stdout

    assert cli("purge", "--tenant", "shop", "--yes").returncode == 2, "a purge names what it deletes"
    purged = cli("purge", "--tenant", "shop", "--file", file_id, "--by", "bob", "--json")
    assert orjson.loads(purged.stdout)["entries"] == 1 and orjson.loads(purged.stdout)["purged_by"] == "bob"
    history = orjson.loads(cli("purges", "--tenant", "shop", "--json").stdout)
    assert history["total"] == 1 and history["items"][0]["via"] == "cli"
    assert orjson.loads(cli("purges", "--tenant", "other", "--json").stdout)["total"] == 0


# -- a stream ------------------------------------------------------------------------------------
@pytest.fixture
def broker_url(embedded_nats: str) -> str:
    return embedded_nats


@pytest.fixture
async def streaming(platform: Platform, broker_url: str) -> AsyncIterator[Broker]:
    """The stream ingest manager of ``up``, in this process, on an embedded NATS."""
    broker = open_broker(broker_url, ack_wait_s=2.0)
    await broker.connect()
    manager = StreamIngestManager(platform, broker, lambda _tenant: broker_url)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        yield broker
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await broker.close()


async def test_a_stream_message_quarantined_by_its_transform_is_stored_once_after_the_fix(
    platform: Platform, tmp_path: Path, streaming: Broker
) -> None:
    """A record whose transform raised is republished with its envelope id after the app is
    fixed and stored once; a second replay has nothing to do, and republishing it again
    (the message quarantined a second time) still stores it once."""
    shop = _add(platform, tmp_path, "shop")
    platform.meta.streams.set_target("shop", "clicks", "clicker", 1)
    run = uuid.uuid4().hex[:8]  # JetStream drops a message id it saw in the last 2 minutes: one per test
    envelopes = [Envelope(f"{run}-e{n}", {"n": n, "boom": n == 3}) for n in range(1, 6)]
    await streaming.publish("shop", "clicks", [encode_batch("shop", "clicks", envelopes)], [batch_id(envelopes)])
    sel = Selection("shop", stream="clicks")
    await until_async(lambda: len(_documents(platform, "shop", "clicks")) == 4, what="the good records")
    await until_async(
        lambda: platform.meta.quarantine.count("shop", stream="clicks") == 1, what="the quarantined record"
    )
    (entry,), _ = quarantine.show(platform, sel, limit=10, offset=0)
    assert entry.reason.startswith(f"message {run}-e3: transform raised ValueError")

    shop.fix("stream_app.py", STREAM_V2)
    platform.meta.streams.set_target("shop", "clicks", "clicker", 0)  # restart on the fixed code
    running = lambda: [i for i in platform.meta.streams.instances("shop") if i.state == "running"]  # noqa: E731
    await until_async(lambda: not running(), what="the old instance to stop")
    platform.meta.streams.set_target("shop", "clicks", "clicker", 1)

    (outcome,) = await replay(platform, sel, broker=streaming)
    assert (outcome.kind, outcome.replayed, outcome.records, outcome.errors) == ("stream", 1, 1, [])
    assert platform.meta.quarantine.count("shop", stream="clicks") == 0
    await until_async(lambda: len(_documents(platform, "shop", "clicks")) == 5, what="the replayed record")
    docs = _documents(platform, "shop", "clicks")
    assert [d for d in docs if d["n"] == 3] == [{"n": 3, "boom": True, "fixed": True}]
    assert await replay(platform, sel, broker=streaming) == []

    # The same message quarantined once more (another entry: another broker message id).
    platform.meta.add_quarantine(
        [QuarantinedRow("shop", entry.file_id, "", entry.line + 1000, entry.raw, entry.reason)]
    )
    (again,) = await replay(platform, sel, broker=streaming)
    assert again.replayed == 1
    deadline = time.monotonic() + 30
    while await streaming.backlog("shop", "clicks", "clicker") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the backlog counts it until the instance acks it, after its write
    assert await streaming.backlog("shop", "clicks", "clicker") == 0
    assert len(_documents(platform, "shop", "clicks")) == 5, "the same envelope id: stored once"
    assert platform.meta.quarantine.count("shop", stream="clicks") == 0
