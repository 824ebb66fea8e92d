"""Tenant "sensors" with two batch apps and two stream apps: which shipped file and stream
goes to which app, the device register app (``devices_app.py``), the status stream app
(``status_app.py``), their samples and their generator (``generate_devices.py``)."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pytest

from mysimbdp.domain.envelope import parse_post
from mysimbdp.domain.formats import EXTENSIONS
from mysimbdp.domain.profile import load_profile
from mysimbdp.domain.quality import compile_rules
from mysimbdp.domain.routing import routing_warnings
from mysimbdp.sdk import Reject
from tests.helpers import ROOT

SENSORS = ROOT / "examples" / "tenants" / "sensors"
REGISTER = SENSORS / "data" / "devices_2024-03-01.csv"
STATUS_SAMPLE = SENSORS / "data" / "stream" / "status.ndjson"
PROFILE = load_profile(SENSORS / "profile.yaml")


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _load_bundle() -> tuple[ModuleType, ModuleType, ModuleType]:
    """(devices app, status app, device generator). Each does ``from batch_app import ...`` or
    ``from generate import ...``, the files next to it in its own process; here those names
    are bound to this tenant's modules while the three are loaded."""
    batch = _load(SENSORS / "batch_app.py", "example_devices_batch_app")
    generate = _load(SENSORS / "generate.py", "example_devices_generate")
    with mock.patch.dict(sys.modules, {"batch_app": batch, "generate": generate}):
        return (
            _load(SENSORS / "devices_app.py", "example_devices_devices_app"),
            _load(SENSORS / "status_app.py", "example_devices_status_app"),
            _load(SENSORS / "generate_devices.py", "example_devices_generate_devices"),
        )


devices_app, status_app, generator = _load_bundle()

DEVICE = {
    "sensor_id": "S-0002",
    "site": " Warehouse-B ",
    "model": "th200",
    "serial": "TH040385",
    "firmware": "v2.2",
    "installed_on": "2022-11-03",
    "calibrated_on": "14/01/2023",
    "offset_c": "-0.214",
    "battery_type": "CR123A",
    "status": "ACTIVE",
    "updated_at": "2024-02-11T17:42:00+01:00",
}
HEARTBEAT = {
    "sensor_id": " s-0007 ",
    "site": "cold-store",
    "ts": "2024-03-04T01:15:06+01:00",
    "battery_v": 2.95,
    "rssi_dbm": -81,
    "uptime_s": 600,
    "errors": ["e12", "E03", "E12"],
}


# --- which app takes what ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "app"),
    [
        ("readings_001.jsonl", "readings"),
        ("readings_002.jsonl", "readings"),
        ("readings_legacy.csv", None),
        ("devices_2024-03-01.csv", "devices"),
    ],
)
def test_each_shipped_file_goes_to_its_documented_app(file_name: str, app: str | None) -> None:
    """Every file the demo drops finds the app the README names, by name and detected format."""
    assert (SENSORS / "data" / file_name).is_file()
    chosen = PROFILE.app_for(file_name, EXTENSIONS[Path(file_name).suffix])
    assert (None if chosen is None else chosen.name) == app


def test_mixed_names_and_formats_find_exactly_the_right_app() -> None:
    """A readings name in CSV and a devices name in JSON Lines find no app; each app writes its
    own dataset."""
    take = {(n, f): PROFILE.app_for(n, EXTENSIONS[f]) for n in ("readings_9", "devices_9") for f in (".jsonl", ".csv")}
    assert {key: None if app is None else app.name for key, app in take.items()} == {
        ("readings_9", ".jsonl"): "readings",
        ("readings_9", ".csv"): None,
        ("devices_9", ".jsonl"): None,
        ("devices_9", ".csv"): "devices",
    }
    readings, devices = PROFILE.batch_apps
    assert PROFILE.dataset_for(readings, "readings_9.jsonl") == "readings"
    assert PROFILE.dataset_for(devices, "devices_9.csv") == "devices"


def test_two_stream_apps_each_with_its_own_resources_and_scaling() -> None:
    """Streams readings and status go to their own apps, datasets, commands, instance bounds,
    memory and scaling policies; any other stream to none; the profile routes cleanly."""
    readings, status = PROFILE.stream_app_for("readings"), PROFILE.stream_app_for("status")
    assert readings is not None and status is not None
    assert (readings.name, readings.dataset, readings.command[-1]) == ("readings", "readings", "{bundle}/stream_app.py")
    assert (status.name, status.dataset, status.command[-1]) == ("status", "device_status", "{bundle}/status_app.py")
    assert (readings.max_instances, status.max_instances) == (3, 2)
    assert readings.memory_mb != status.memory_mb and readings.batch_size != status.batch_size
    assert readings.scaling.backlog_high != status.scaling.backlog_high
    assert PROFILE.stream_app_for("alerts") is None
    for app in [*PROFILE.batch_apps, *PROFILE.stream_apps]:
        assert (SENSORS / app.command[-1].removeprefix("{bundle}/")).is_file()
    assert routing_warnings(PROFILE) == []


# --- devices app ------------------------------------------------------------------------


def test_devices_transform_normalises_looks_up_and_derives() -> None:
    """A hand-typed register row becomes one version of the device: ids, model, site and
    status normalised, firmware with three parts, dates ISO, updated_at in UTC as ts."""
    assert devices_app.transform(dict(DEVICE)) == {
        "sensor_id": "S-0002",
        "ts": "2024-02-11T16:42:00Z",
        "site": "warehouse-b",
        "status": "active",
        "model": "TH-200",
        "rated_min_c": -40.0,
        "rated_max_c": 85.0,
        "serial": "TH040385",
        "firmware": "2.2.0",
        "firmware_outdated": True,  # older than 2.3.0
        "installed_on": "2022-11-03",
        "age_days": 465,
        "calibrated_on": "2023-01-14",
        "calibration_due": "2024-01-14",
        "calibration_overdue": True,  # due a month before the row was updated
        "offset_c": -0.21,
        "battery_type": "CR123A",
    }


@pytest.mark.parametrize("model", ["TH-200", "th200", "TH 200", " th-200 "])
def test_devices_transform_reads_every_spelling_of_a_model(model: str) -> None:
    """The register's three spellings (and stray blanks) are the same model."""
    assert devices_app.transform(dict(DEVICE, model=model))["model"] == "TH-200"


def test_devices_transform_keeps_spares_and_skips_retired_devices() -> None:
    """A spare has no site and no installation date; a retired device is not stored."""
    spare = devices_app.transform(dict(DEVICE, site="", installed_on="", status="spare"))
    assert (spare["site"], spare["installed_on"], spare["age_days"]) == (None, None, None)
    assert devices_app.transform(dict(DEVICE, status="Retired")) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"model": "TH-900"}, "model: 'TH-900' is not a known model"),
        ({"offset_c": "+3.40"}, "offset_c: +3.40 °C is beyond ±2 °C"),
        ({"offset_c": "warm"}, "offset_c: 'warm' is not a number"),
        ({"status": "lost"}, "status: 'lost' is not one of active, spare, retired"),
        ({"site": ""}, "site: an active sensor needs its site"),
        ({"firmware": "latest"}, "firmware: 'latest' is not a version"),
        ({"calibrated_on": "2023-13-01"}, "calibrated_on: '2023-13-01' is not a date"),
        ({"updated_at": "2024-02-11T17:42:00"}, "updated_at: '2024-02-11T17:42:00' has no UTC offset"),
        ({"installed_on": "2024-03-01"}, "installed_on: 2024-03-01 is after updated_at"),
    ],
)
def test_devices_transform_rejects_what_it_cannot_trust(change: dict[str, str], reason: str) -> None:
    """Each impossible register value raises Reject naming the field and the value."""
    with pytest.raises(Reject) as info:
        devices_app.transform(dict(DEVICE, **change))
    assert reason in str(info.value)


def test_shipped_register_stores_40_devices_and_quarantines_3() -> None:
    """devices_2024-03-01.csv: 46 rows; 1 fails the profile's sensor_id rule, 2 are rejected by
    the app, 3 retired are skipped, 40 versions stored with unique keys, all of known sensors."""
    checker = compile_rules(PROFILE.quality.rules)
    with REGISTER.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_rules = [row for row in rows if checker.check(row)]
    documents, rejected, skipped = [], 0, 0
    for row in rows:
        if row in by_rules:
            continue
        try:
            document = devices_app.transform(row)
        except Reject:
            rejected += 1
            continue
        if document is None:
            skipped += 1
        else:
            documents.append(document)
    assert (len(rows), len(by_rules), rejected, skipped, len(documents)) == (46, 1, 2, 3, 40)
    keys = [tuple(doc[field] for field in PROFILE.key_fields) for doc in documents]
    assert len(set(keys)) == len(keys)
    assert {doc["status"] for doc in documents} == {"active", "spare"}
    assert len(by_rules) / len(rows) <= PROFILE.quality.max_bad_row_ratio  # so the file is accepted


# --- status app -------------------------------------------------------------------------


def test_status_transform_normalises_and_derives_the_device_state() -> None:
    """A heartbeat becomes the sensor's state: UTC time, battery share, signal class, reboot
    and service flags, sorted distinct error codes."""
    assert status_app.transform(dict(HEARTBEAT)) == {
        "sensor_id": "S-0007",
        "ts": "2024-03-04T00:15:06Z",
        "site": "cold-store",
        "battery_v": 2.95,
        "battery_pct": 28,  # (2.95 - 2.7) / (3.6 - 2.7)
        "battery_low": True,
        "rssi_dbm": -81,
        "signal": "poor",
        "uptime_h": 0.2,
        "rebooted": True,  # up 10 minutes: restarted since the last heartbeat
        "errors": ["E03", "E12"],
        "error_count": 2,
        "needs_service": True,
        "hour": "2024-03-04T00:00:00Z",
    }


@pytest.mark.parametrize(
    ("rssi", "signal", "battery_v", "battery_pct"),
    [(-67, "good", 3.6, 100), (-68, "fair", 3.9, 100), (-80, "fair", 2.7, 0), (-81, "poor", 2.5, 0)],
)
def test_status_signal_classes_and_battery_share_at_their_bounds(
    rssi: int, signal: str, battery_v: float, battery_pct: int
) -> None:
    """-67 dBm is still good, -80 still fair; the battery share is clamped to 0..100."""
    document = status_app.transform(dict(HEARTBEAT, rssi_dbm=rssi, battery_v=battery_v, errors=[], uptime_s=86_400))
    assert (document["signal"], document["battery_pct"]) == (signal, battery_pct)
    assert document["rebooted"] is False


def test_status_transform_skips_test_bench_heartbeats() -> None:
    """The lab bench's sensors are not part of the fleet's state."""
    assert status_app.transform(dict(HEARTBEAT, site="test-bench")) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"sensor_id": "sensor-07"}, "sensor_id: 'sensor-07' is not a sensor id"),
        ({"ts": "2024-03-04T01:15:06"}, "ts: '2024-03-04T01:15:06' has no UTC offset"),
        ({"battery_v": -1.0}, "battery_v: -1.0 V is outside 0..4.5 V"),
        ({"rssi_dbm": 5}, "rssi_dbm: 5 dBm is outside -120..0 dBm"),
        ({"rssi_dbm": None}, "rssi_dbm: required but missing"),
        ({"uptime_s": -30}, "uptime_s: -30 is not a whole number"),
        ({"uptime_s": 1.5}, "uptime_s: 1.5 is not a whole number"),
        ({"errors": "E07"}, "errors: 'E07' is not a list of error codes"),
        ({"errors": ["E1x"]}, "errors: ['E1X'] are not error codes"),
    ],
)
def test_status_transform_rejects_impossible_heartbeats(change: dict[str, Any], reason: str) -> None:
    """Each impossible heartbeat value raises Reject naming the field and the value."""
    with pytest.raises(Reject) as info:
        status_app.transform(dict(HEARTBEAT, **change))
    assert reason in str(info.value)


def test_status_sample_has_the_documented_outcome() -> None:
    """status.ndjson: 200 heartbeats in one POST; 6 quarantined (one of each bad kind), 10
    test-bench ones skipped, 184 stored under unique keys."""
    envelopes = parse_post(STATUS_SAMPLE.read_bytes(), ndjson=True)
    outcomes: dict[str, int] = {"stored": 0, "skipped": 0, "rejected": 0}
    reasons: set[str] = set()
    keys = set()
    for envelope in envelopes:
        try:
            document = status_app.transform(envelope.data)
        except Reject as exc:
            outcomes["rejected"] += 1
            reasons.add(exc.reason.split(":", 1)[0])
            continue
        if document is None:
            outcomes["skipped"] += 1
        else:
            outcomes["stored"] += 1
            keys.add(tuple(document[field] for field in PROFILE.key_fields))
    assert (len(envelopes), outcomes) == (200, {"stored": 184, "skipped": 10, "rejected": 6})
    assert reasons == {"rssi_dbm", "errors", "battery_v", "ts", "sensor_id", "uptime_s"}
    assert len(keys) == 184
    assert STATUS_SAMPLE.stat().st_size < PROFILE.stream_limits.max_batch_bytes


# --- generator --------------------------------------------------------------------------


def test_generator_reproduces_the_shipped_register_and_status_sample(tmp_path: Path) -> None:
    """The commands in the sensors README regenerate both files byte for byte."""
    generator.main(["register", "--out", str(tmp_path / "devices.csv")])
    generator.main(
        ["status", "--reports", "5", "--out", str(tmp_path / "status.ndjson"), "--seed", "11", "--bad-ratio", "0.03"]
    )
    assert (tmp_path / "devices.csv").read_bytes() == REGISTER.read_bytes()
    assert (tmp_path / "status.ndjson").read_bytes() == STATUS_SAMPLE.read_bytes()


def test_register_and_heartbeats_cover_the_readings_fleet() -> None:
    """The register lists every sensor of the readings files (plus spares and retired ones) and
    the heartbeats come from exactly the readings fleet."""
    with (SENSORS / "data" / "readings_001.jsonl").open(encoding="utf-8") as handle:
        fleet = {json.loads(line)["sensor_id"] for line in handle}
    registered = {row["sensor_id"] for row in generator.register()}
    beating = {envelope["data"]["sensor_id"] for envelope in generator.status(2, seed=1)}
    assert fleet == beating and len(fleet) == 40
    assert fleet - registered == {"S-0017"}  # its row is the one spoiled with id "S-17"
    assert len(registered - fleet) == 7  # S-17, three spares, three retired
