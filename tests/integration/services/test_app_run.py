"""A tenant with two batch apps, end to end: the example tenant "sensors" gets a mixed drop
of files (readings and device registers, JSON Lines and CSV, names no app serves) and each
file is fetched, checked and run by the real subprocess app its name and format choose;
the meta store records which app ran each file and each app's dataset gets its rows. Over
SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson

from mysimbdp.adapters.coredms import open_store
from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.states import FileStatus
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.ingest import ingest_one
from mysimbdp.services.tenants import add_tenant
from tests.helpers import ROOT

SENSORS = ROOT / "examples" / "tenants" / "sensors"
DATA = SENSORS / "data"
LATE_LINES = 100  # readings_late.ndjson: the first lines of readings_002.jsonl, as .ndjson


def _mixed_drop(folder: Path) -> list[Path]:
    """Shipped files plus three made from them: readings as .ndjson (JSON Lines by another
    extension), the register as JSON Lines (a devices name in a format its app refuses) and
    the register under a name no app serves."""
    folder.mkdir()
    for name in ("readings_001.jsonl", "devices_2024-03-01.csv", "readings_legacy.csv"):
        shutil.copy(DATA / name, folder / name)
    lines = (DATA / "readings_002.jsonl").read_bytes().splitlines(keepends=True)[:LATE_LINES]
    (folder / "readings_late.ndjson").write_bytes(b"".join(lines))
    shutil.copy(DATA / "devices_2024-03-01.csv", folder / "inventory.csv")
    with (DATA / "devices_2024-03-01.csv").open(encoding="utf-8") as handle:
        header, *rows = [line.rstrip("\n").split(",") for line in handle]
    (folder / "devices_2024-03-02.jsonl").write_bytes(
        b"".join(orjson.dumps(dict(zip(header, r, strict=True))) + b"\n" for r in rows)
    )
    return sorted(folder.iterdir())


async def test_each_file_of_a_mixed_drop_is_run_by_the_app_its_name_and_format_choose(
    operator_platform: Platform, tmp_path: Path
) -> None:
    """readings_* in JSON Lines (.jsonl or .ndjson) run the readings app into ``readings``,
    devices_* in CSV the devices app into ``devices``; a readings CSV, a devices JSON Lines
    file and an unknown name are rejected by rule ``app`` with a reason that names each app's
    pattern and formats. Files, runs and datasets agree."""
    platform = operator_platform
    add_tenant(platform, "sensors", SENSORS / "profile.yaml")
    for path in _mixed_drop(tmp_path / "drop"):
        record = await ingest_one(platform, "sensors", path, wait=True)
        assert record is not None and record.status in (FileStatus.INGESTED, FileStatus.REJECTED), record

    files: dict[str, FileRecord] = {f.name: f for f in platform.meta.list_files(tenant="sensors")}
    chosen = {name: (str(f.status), f.app, f.dataset) for name, f in files.items()}
    assert chosen == {
        "readings_001.jsonl": ("ingested", "readings", "readings"),
        "readings_late.ndjson": ("ingested", "readings", "readings"),
        "devices_2024-03-01.csv": ("ingested", "devices", "devices"),
        "readings_legacy.csv": ("rejected", "", ""),
        "devices_2024-03-02.jsonl": ("rejected", "", ""),
        "inventory.csv": ("rejected", "", ""),
    }
    runs = {run.file_id: run.app for run in platform.meta.list_runs(tenant="sensors")}
    assert {files[name].id: files[name].app for name in chosen if files[name].app} == runs

    late = files["readings_late.ndjson"]
    assert (files["readings_001.jsonl"].rows_written, files["devices_2024-03-01.csv"].rows_written) == (1900, 40)
    assert late.rows_written > 0 and late.rows_written + late.rows_rejected + late.rows_skipped == LATE_LINES
    record, _ = platform.tenant("sensors")
    store = open_store(record.coredms_url)
    try:
        assert sorted(store.datasets()) == ["devices", "readings"]
        assert store.count("readings") == 1900 + late.rows_written
        assert store.count("devices") == 40
        assert all("temp_c" in doc for doc in store.documents("readings", limit=50))
        assert all("firmware_outdated" in doc for doc in store.documents("devices", limit=50))
    finally:
        store.close()

    reasons = {
        name: files[name].reasons for name in ("readings_legacy.csv", "devices_2024-03-02.jsonl", "inventory.csv")
    }
    for name, (reason,) in reasons.items():
        assert reason.startswith(f"tenant 'sensors': file '{name}': rule app: no batch app takes this file (format ")
        assert "'readings' takes 'readings_*' as jsonl" in reason and "'devices' takes 'devices_*' as csv" in reason
    assert "(format csv)" in reasons["readings_legacy.csv"][0]
    assert "'readings' takes 'readings_*' as jsonl: the format does not match" in reasons["readings_legacy.csv"][0]
    assert "'devices' takes 'devices_*' as csv: the format does not match" in reasons["devices_2024-03-02.jsonl"][0]
    assert reasons["inventory.csv"][0].count("the name does not match") == 2
