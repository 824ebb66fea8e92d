"""A quarantine replay keeps its exactly-once effect in every write mode (SQLite and
PostgreSQL): the fixed rows land once under their original keys, a replay in mode replace
adds to the dataset's content instead of replacing it, and a second replay changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from mysimbdp.runtime.platform import Platform
from mysimbdp.services.ingest import ingest_one
from mysimbdp.services.quarantine import Selection
from mysimbdp.services.quarantine_replay import replay
from mysimbdp.services.tenants import add_tenant
from mysimbdp.settings import Settings

PROFILE = """
formats: [csv]
dataset: orders
key_fields: [sku]
write: {write}
stream_apps: []
batch_apps:
  - name: app
    command: ["{{python}}", "{{bundle}}/app.py"]
    memory_mb: 512
"""
APP_V1 = 'from mysimbdp import sdk\nsdk.run_batch(lambda row: {"sku": row["sku"], "qty": int(row["qty"]), "v": 1})\n'
APP_V2 = (
    "from mysimbdp import sdk\n"
    'sdk.run_batch(lambda row: {"sku": row["sku"], "qty": None if row["qty"] == "n/a" else int(row["qty"]), "v": 1})\n'
)


@pytest.fixture
def platform(home: Path, meta_url: str, coredms_url: str, pg_prefix: str) -> Iterator[Platform]:
    settings = Settings(home=home, meta_url=meta_url, coredms_url=coredms_url, pg_prefix=pg_prefix, poll_interval_s=0.2)
    with Platform(settings, {}) as started:
        yield started


def _documents(platform: Platform) -> list[dict[str, Any]]:
    record, _ = platform.tenant("shop")
    with closing(platform.tenant_store(record)) as store:
        return store.documents("orders", limit=100)


@pytest.mark.parametrize("write", ["{mode: merge, order_by: v}", "{mode: merge}", "{mode: replace}"])
async def test_a_replay_lands_each_fixed_row_once(platform: Platform, tmp_path: Path, write: str) -> None:
    """Rows quarantined by v1 of the app are stored by a replay with v2, beside the file's other
    rows; replaying again (or a row already stored) changes nothing."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "profile.yaml").write_text(PROFILE.format(write=write))
    (bundle / "app.py").write_text(APP_V1)
    added = add_tenant(platform, "shop", bundle / "profile.yaml")
    data = tmp_path / "orders.csv"
    data.write_text("sku,qty\na1,3\na2,n/a\na3,4\n")
    record = await ingest_one(platform, "shop", data, wait=True)
    assert record is not None and record.status == "ingested", record
    assert [d["sku"] for d in _documents(platform)] == ["a1", "a3"]
    (Path(added.record.bundle_dir) / "app.py").write_text(APP_V2)

    (outcome,) = await replay(platform, Selection("shop", record.id))
    assert (outcome.replayed, outcome.restored, outcome.remaining) == (1, 1, 0), outcome
    stored = _documents(platform)
    assert stored == [
        {"sku": "a1", "qty": 3, "v": 1},
        {"sku": "a2", "qty": None, "v": 1},
        {"sku": "a3", "qty": 4, "v": 1},
    ]
    again = await replay(platform, Selection("shop", record.id))  # nothing left to replay
    assert sum(o.replayed for o in again) == 0 and _documents(platform) == stored
