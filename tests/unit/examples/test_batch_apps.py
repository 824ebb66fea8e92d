"""The example tenants under ``examples/tenants``: profiles, batch apps, generator, data."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.profile import Profile, load_profile
from mysimbdp.domain.quality import compile_rules
from mysimbdp.sdk import Reject
from tests.helpers import ROOT

EXAMPLES = ROOT / "examples" / "tenants"
FLIGHTS = EXAMPLES / "flights"
SENSORS = EXAMPLES / "sensors"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


flights_app = _load(FLIGHTS / "batch_app.py", "example_flights_batch_app")
sensors_app = _load(SENSORS / "batch_app.py", "example_sensors_batch_app")
generator = _load(SENSORS / "generate.py", "example_sensors_generate")

FLIGHT_ROW = {
    "year": "2013",
    "month": "1",
    "day": "1",
    "dep_time": "517",
    "sched_dep_time": "515",
    "dep_delay": "2",
    "arr_time": "830",
    "sched_arr_time": "819",
    "arr_delay": "11",
    "carrier": "UA",
    "flight": "1545",
    "tailnum": "N14228",
    "origin": "EWR",
    "dest": "IAH",
    "air_time": "227",
    "distance": "1400",
    "hour": "5",
    "minute": "15",
    "time_hour": "2013-01-01T10:00:00Z",
}
READING = {
    "sensor_id": "S-0007",
    "ts": "2024-03-01T12:34:56Z",
    "temperature_c": 20.0,
    "humidity_pct": 50.0,
    "battery_v": 2.95,
    "site": "warehouse-a",
}


def _profile(tenant_dir: Path) -> Profile:
    return load_profile(tenant_dir / "profile.yaml")


def _rows(path: Path) -> Iterator[Any]:
    """Every row of a data file as the SDK hands it over (CSV dicts of strings, JSON values)."""
    with path.open(encoding="utf-8", newline="") as handle:
        if path.suffix == ".csv":
            yield from csv.DictReader(handle)
        else:
            for line in handle:
                yield json.loads(line)


def _documents(profile: Profile, path: Path, transform: Any) -> tuple[list[dict[str, Any]], int]:
    """The documents the app stores from ``path``, and how many rows were quarantined."""
    checker = compile_rules(profile.quality.rules)
    documents: list[dict[str, Any]] = []
    quarantined = 0
    for row in _rows(path):
        if not isinstance(row, dict) or checker.check(row):
            quarantined += 1
            continue
        try:
            document = transform(row)
        except Reject:
            quarantined += 1
            continue
        if document is not None:
            documents.append(document)
    return documents, quarantined


# --- profiles ---------------------------------------------------------------------------


def test_both_profiles_load_and_differ_in_their_constraints() -> None:
    """Both example profiles validate and set different formats, limits, ratios and apps."""
    flights, sensors = _profile(FLIGHTS), _profile(SENSORS)
    assert flights.formats == [FileFormat.CSV]
    assert sensors.formats == [FileFormat.JSONL, FileFormat.CSV]
    assert flights.limits.max_file_size_bytes > sensors.limits.max_file_size_bytes
    assert sensors.limits.max_line_length_bytes == 1024
    assert (flights.quality.max_bad_row_ratio, sensors.quality.max_bad_row_ratio) == (0.02, 0.05)
    assert (flights.dataset, sensors.dataset) == ("flights", "readings")
    assert flights.app_for("flights_2013-01-01.csv", FileFormat.CSV) is not None
    assert [app.name for app in flights.batch_apps] == ["flights"]
    assert [app.name for app in sensors.batch_apps] == ["readings", "devices"]
    for profile in (flights, sensors):
        assert profile.batch_apps[0].command == ["{python}", "{bundle}/batch_app.py"]


def test_flights_bad_header_file_lacks_a_required_column() -> None:
    """The demo's bad-header file misses a column the flights profile requires."""
    with (FLIGHTS / "data" / "flights_bad_header.csv").open(encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert set(_profile(FLIGHTS).required_columns) - set(header) == {"carrier"}


def test_shipped_good_flight_files_carry_every_required_column() -> None:
    """Every per-day flights file has the original nycflights13 header, a superset of required_columns."""
    required = set(_profile(FLIGHTS).required_columns)
    for path in sorted((FLIGHTS / "data").glob("flights_2013-*.csv")):
        with path.open(encoding="utf-8") as handle:
            header = next(csv.reader(handle))
        assert header == list(FLIGHT_ROW), path.name
        assert required <= set(header)


def test_dirty_flights_file_is_within_the_tolerated_bad_row_ratio() -> None:
    """The dirty day has a few rule-breaking rows, more than none and fewer than the profile tolerates."""
    profile = _profile(FLIGHTS)
    checker = compile_rules(profile.quality.rules)
    rows = list(_rows(FLIGHTS / "data" / "flights_2013-01-04_dirty.csv"))
    bad = sum(1 for row in rows if checker.check(row))
    assert bad == 4
    assert bad / len(rows) <= profile.quality.max_bad_row_ratio


def test_legacy_readings_file_is_a_csv_no_sensors_app_takes() -> None:
    """readings_legacy.csv is a real CSV of readings: CSV is allowed (for the device register),
    its name matches the readings app, but that app takes JSON Lines only, so no app takes it."""
    rows = list(_rows(SENSORS / "data" / "readings_legacy.csv"))
    assert len(rows) > 0 and set(rows[0]) == set(generator.FIELDS)
    profile = _profile(SENSORS)
    assert FileFormat.CSV in profile.formats
    assert profile.app_for("readings_legacy.csv", FileFormat.CSV) is None
    assert profile.app_for("readings_legacy.jsonl", FileFormat.JSONL) is not None


# --- flights app --------------------------------------------------------------------------


def test_flights_transform_converts_renames_and_derives() -> None:
    """A real nycflights13 row becomes a typed, renamed document with correct derived values."""
    document = flights_app.transform(dict(FLIGHT_ROW))
    assert document == {
        "date": "2013-01-01",
        "airline": "UA",
        "flight": 1545,
        "tail_number": "N14228",
        "origin": "EWR",
        "destination": "IAH",
        "scheduled_departure": "2013-01-01T05:15:00",
        "actual_departure": "2013-01-01T05:17:00",
        "dep_time": "05:17",
        "arr_time": "08:30",
        "sched_arr_time": "08:19",
        "dep_delay_min": 2,
        "arr_delay_min": 11,
        "air_time_min": 227,
        "distance_mi": 1400.0,
        "delayed": False,
        "avg_speed_mph": 370.0,  # 1400 mi / (227 / 60) h = 370.04
    }


def test_flights_transform_flags_delays_and_crosses_midnight() -> None:
    """arr_delay above 15 min sets delayed, and a late departure's actual time rolls into the next day."""
    row = dict(FLIGHT_ROW, sched_dep_time="2359", dep_time="110", dep_delay="71", arr_delay="60")
    document = flights_app.transform(row)
    assert document["delayed"] is True
    assert document["scheduled_departure"] == "2013-01-01T23:59:00"
    assert document["actual_departure"] == "2013-01-02T01:10:00"
    assert flights_app.transform(dict(FLIGHT_ROW, arr_delay="15"))["delayed"] is False


def test_flights_transform_turns_empty_values_into_none() -> None:
    """A diverted flight (no arrival, no air time) keeps its row with None, not a made-up number."""
    row = dict(FLIGHT_ROW, arr_time="", arr_delay="", air_time="", tailnum="")
    document = flights_app.transform(row)
    assert document["arr_time"] is None
    assert document["arr_delay_min"] is None
    assert document["delayed"] is None
    assert document["air_time_min"] is None
    assert document["avg_speed_mph"] is None
    assert document["tail_number"] is None


def test_flights_transform_skips_cancelled_flights() -> None:
    """A flight without dep_time (cancelled) is filtered out by returning None."""
    assert flights_app.transform(dict(FLIGHT_ROW, dep_time="", dep_delay="", arr_time="")) is None
    assert flights_app.transform(dict(FLIGHT_ROW, dep_time="NA")) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"air_time": "0"}, "air_time"),
        ({"air_time": "-5"}, "air_time"),
        ({"month": "2", "day": "30"}, "not a date"),
        ({"sched_dep_time": "1275"}, "not a clock time"),
        ({"distance": "0"}, "distance"),
        ({"flight": "12a"}, "flight"),
    ],
)
def test_flights_transform_rejects_impossible_values(change: dict[str, str], reason: str) -> None:
    """Impossible values raise Reject with a reason naming the problem."""
    with pytest.raises(Reject) as info:
        flights_app.transform(dict(FLIGHT_ROW, **change))
    assert reason in str(info.value)


def test_flights_key_fields_are_unique_in_every_shipped_file() -> None:
    """The profile's key fields, read from the returned documents, never repeat within a data file."""
    profile = _profile(FLIGHTS)
    for path in sorted((FLIGHTS / "data").glob("flights_2013-*.csv")):
        documents, _ = _documents(profile, path, flights_app.transform)
        keys = [tuple(doc[field] for field in profile.key_fields) for doc in documents]
        assert len(keys) > 800, path.name
        assert len(set(keys)) == len(keys), path.name


# --- sensors app --------------------------------------------------------------------------


def test_sensors_transform_renames_converts_and_derives() -> None:
    """A reading gets temp_c/temp_f, a Magnus dew point, a battery flag and its UTC hour."""
    document = sensors_app.transform(dict(READING))
    assert document == {
        "sensor_id": "S-0007",
        "ts": "2024-03-01T12:34:56Z",
        "site": "warehouse-a",
        "temp_c": 20.0,
        "temp_f": 68.0,
        "humidity_pct": 50.0,
        "dew_point_c": 9.26,  # 20 °C at 50 % RH: dew point 9.26 °C
        "battery_v": 2.95,
        "battery_low": True,
        "hour": "2024-03-01T12:00:00Z",
    }


def test_sensors_transform_rounds_and_normalises_time_to_utc() -> None:
    """Values are rounded and a timestamp with an offset is stored in UTC (so keys compare)."""
    row = dict(READING, ts="2024-03-01T14:05:00+02:00", temperature_c="-3.14159", humidity_pct=87.66, battery_v=3.3)
    document = sensors_app.transform(row)
    assert document["ts"] == "2024-03-01T12:05:00Z"
    assert document["hour"] == "2024-03-01T12:00:00Z"
    assert document["temp_c"] == -3.14
    assert document["temp_f"] == 26.35
    assert document["humidity_pct"] == 87.7
    assert document["dew_point_c"] == -4.9  # Magnus: 243.12 * g / (17.62 - g), g = -0.36237
    assert document["battery_low"] is False


def test_sensors_dew_point_is_undefined_at_zero_humidity() -> None:
    """At 0 % humidity the dew point is None instead of a math error."""
    assert sensors_app.transform(dict(READING, humidity_pct=0))["dew_point_c"] is None


def test_sensors_transform_skips_test_bench_readings() -> None:
    """Readings from the test-bench site are filtered out by returning None."""
    assert sensors_app.transform(dict(READING, site="test-bench")) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"battery_v": 0.0}, "battery_v"),
        ({"battery_v": -1}, "battery_v"),
        ({"ts": "2024-03-01T12:00:00"}, "UTC offset"),
        ({"temperature_c": True}, "temperature_c"),
        ({"ts": None}, "ts: required but missing"),
        ({"ts": ""}, "ts: required but missing"),
        ({"temperature_c": None}, "temperature_c and humidity_pct are both required"),
        ({"humidity_pct": ""}, "temperature_c and humidity_pct are both required"),
    ],
)
def test_sensors_transform_rejects_impossible_values(change: dict[str, Any], reason: str) -> None:
    """A dead battery, a timestamp without offset, a non-number or a missing ts, temperature or
    humidity (the profile's rules require only sensor_id: the device register has no readings)
    raise Reject naming the field."""
    with pytest.raises(Reject) as info:
        sensors_app.transform(dict(READING, **change))
    assert reason in str(info.value)


def test_sensors_key_fields_are_unique_in_every_shipped_file() -> None:
    """(sensor_id, ts) in the returned documents never repeats within a shipped readings file."""
    profile = _profile(SENSORS)
    for path in sorted((SENSORS / "data").glob("readings_*.jsonl")):
        documents, _ = _documents(profile, path, sensors_app.transform)
        keys = [tuple(doc[field] for field in profile.key_fields) for doc in documents]
        assert len(keys) > 1500, path.name
        assert len(set(keys)) == len(keys), path.name


def test_shipped_readings_files_have_the_documented_bad_rows() -> None:
    """readings_001 is clean and readings_002 has 1 % bad rows, within the profile's tolerated ratio."""
    profile = _profile(SENSORS)
    _, clean = _documents(profile, SENSORS / "data" / "readings_001.jsonl", sensors_app.transform)
    _, dirty = _documents(profile, SENSORS / "data" / "readings_002.jsonl", sensors_app.transform)
    assert (clean, dirty) == (0, 20)
    assert dirty / 2000 <= profile.quality.max_bad_row_ratio


# --- generator ----------------------------------------------------------------------------


def test_generator_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    """The same seed writes the same bytes; another seed writes other readings."""
    args = ["--rows", "500", "--bad-ratio", "0.02"]
    generator.main([*args, "--seed", "9", "--out", str(tmp_path / "a.jsonl")])
    generator.main([*args, "--seed", "9", "--out", str(tmp_path / "b.jsonl")])
    generator.main([*args, "--seed", "10", "--out", str(tmp_path / "c.jsonl")])
    first = (tmp_path / "a.jsonl").read_bytes()
    assert first == (tmp_path / "b.jsonl").read_bytes()
    assert first != (tmp_path / "c.jsonl").read_bytes()
    assert len(first.splitlines()) == 500


def test_generator_reproduces_the_shipped_files(tmp_path: Path) -> None:
    """The commands in the sensors README regenerate readings_001/002.jsonl byte for byte."""
    out_1, out_2 = tmp_path / "readings_001.jsonl", tmp_path / "readings_002.jsonl"
    generator.main(["--rows", "2000", "--out", str(out_1), "--seed", "1"])
    generator.main(
        ["--rows", "2000", "--out", str(out_2), "--seed", "2", "--bad-ratio", "0.01", "--start", "2024-03-02T00:00:00Z"]
    )
    assert out_1.read_bytes() == (SENSORS / "data" / "readings_001.jsonl").read_bytes()
    assert out_2.read_bytes() == (SENSORS / "data" / "readings_002.jsonl").read_bytes()


@pytest.mark.parametrize("bad_ratio", [0.0, 0.01, 0.1, 0.25])
def test_generator_makes_the_requested_share_of_bad_rows(tmp_path: Path, bad_ratio: float) -> None:
    """Exactly round(rows * ratio) rows end up quarantined (quality rules, reader or Reject)."""
    out = tmp_path / "readings.jsonl"
    generator.main(["--rows", "1000", "--seed", "4", "--bad-ratio", str(bad_ratio), "--out", str(out)])
    _, quarantined = _documents(_profile(SENSORS), out, sensors_app.transform)
    assert quarantined == round(1000 * bad_ratio)


def test_generator_cycles_through_every_kind_of_bad_row() -> None:
    """Bad rows include an out-of-range temperature, a missing sensor_id, a non-object and a dead battery."""
    items = generator.generate(400, seed=5, bad_ratio=0.05)
    not_objects = [item for item in items if not isinstance(item, dict)]
    readings = [item for item in items if isinstance(item, dict)]
    assert len(not_objects) == 5
    assert sum(1 for r in readings if "sensor_id" not in r) == 5
    assert sum(1 for r in readings if not -40 <= r["temperature_c"] <= 85) == 5
    assert sum(1 for r in readings if r["battery_v"] == 0.0) == 5
    assert all(len(json.dumps(item)) < _profile(SENSORS).limits.max_line_length_bytes for item in items)
