"""The example tenants' stream apps (``examples/tenants/*/stream_app.py``): their transforms,
their sample messages (``data/stream/*.ndjson``) and their profiles' ``stream_apps``."""

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
from mysimbdp.domain.profile import Profile, load_profile
from mysimbdp.sdk import Reject
from tests.helpers import ROOT

EXAMPLES = ROOT / "examples" / "tenants"
FLIGHTS = EXAMPLES / "flights"
SENSORS = EXAMPLES / "sensors"
FLIGHTS_SAMPLE = FLIGHTS / "data" / "stream" / "status.ndjson"
SENSORS_SAMPLE = SENSORS / "data" / "stream" / "readings.ndjson"
# (messages, quarantined, skipped) of each sample, as the tenants' READMEs state them
FLIGHTS_COUNTS = (305, 9, 3)
SENSORS_COUNTS = (400, 12, 20)


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _load_stream_app(tenant_dir: Path) -> tuple[ModuleType, ModuleType]:
    """A tenant's (stream app, batch app). The stream app does ``import batch_app``, which in
    its process is the batch app next to it; here both tenants share one process, so the
    name is bound to the right tenant's batch app while the stream app is loaded."""
    prefix = f"example_stream_{tenant_dir.name}"
    batch = _load(tenant_dir / "batch_app.py", f"{prefix}_batch_app")
    with mock.patch.dict(sys.modules, {"batch_app": batch}):
        stream = _load(tenant_dir / "stream_app.py", f"{prefix}_stream_app")
    return stream, batch


flights_stream, flights_batch = _load_stream_app(FLIGHTS)
sensors_stream, sensors_batch = _load_stream_app(SENSORS)
flights_generator = _load(FLIGHTS / "generate_stream.py", "example_stream_flights_generate")
sensors_generator = _load(SENSORS / "generate.py", "example_stream_sensors_generate")

STATUS = {
    "carrier": " ua ",
    "flight": "1545",
    "tailnum": "N14228",
    "origin": "ewr",
    "dest": "iah",
    "status": "Landed",
    "scheduled_departure": "2013-01-01T05:15:00-05:00",
    "actual_departure": "2013-01-01T10:17:00Z",
    "arr_delay": 11,
    "air_time": 227,
    "distance": 1400,
}
READING = {
    "sensor_id": " s-0007",
    "ts": "2024-03-01T13:34:56+01:00",
    "temperature": 68.0,
    "unit": "°f",
    "humidity_pct": 50.0,
    "battery_v": 2.95,
    "site": "warehouse-a",
}


def _outcomes(transform: Any, path: Path) -> tuple[list[dict[str, Any]], list[tuple[str, str]], int]:
    """(documents, (id, reason) of each rejected message, skipped count) of a sample file."""
    documents: list[dict[str, Any]] = []
    rejected: list[tuple[str, str]] = []
    skipped = 0
    for envelope in parse_post(path.read_bytes(), ndjson=True):
        try:
            doc = transform(envelope.data)
        except Reject as exc:
            rejected.append((envelope.id, exc.reason))
            continue
        if doc is None:
            skipped += 1
        else:
            documents.append(doc)
    return documents, rejected, skipped


# --- flights ----------------------------------------------------------------------------------


def test_flights_stream_normalises_codes_times_and_derives_delays() -> None:
    """A status message becomes the batch app's flight document plus status and UTC times."""
    assert flights_stream.transform(STATUS) == {
        "date": "2013-01-01",
        "airline": "UA",
        "flight": 1545,
        "tail_number": "N14228",
        "origin": "EWR",
        "destination": "IAH",
        "scheduled_departure": "2013-01-01T05:15:00",
        "actual_departure": "2013-01-01T05:17:00",
        "dep_time": "05:17",
        "dep_delay_min": 2,
        "arr_delay_min": 11,
        "air_time_min": 227,
        "distance_mi": 1400.0,
        "delayed": False,
        "avg_speed_mph": 370.0,
        "status": "landed",
        "scheduled_departure_utc": "2013-01-01T10:15:00Z",
        "actual_departure_utc": "2013-01-01T10:17:00Z",
    }


def test_flights_stream_reads_any_offset_and_crosses_midnight() -> None:
    """An actual departure in the origin's offset or in UTC gives the same document; a late
    evening departure lands on the next local day, as in the batch app."""
    utc = flights_stream.transform(STATUS)
    local = flights_stream.transform({**STATUS, "actual_departure": "2013-01-01T05:17:00-05:00"})
    assert local == utc
    late = flights_stream.transform(
        {**STATUS, "scheduled_departure": "2013-01-01T23:59:00-05:00", "actual_departure": "2013-01-02T05:32:00Z"}
    )
    assert late is not None
    assert (late["date"], late["actual_departure"], late["dep_time"], late["dep_delay_min"]) == (
        "2013-01-01",
        "2013-01-02T00:32:00",
        "00:32",
        33,
    )
    assert late["actual_departure_utc"] == "2013-01-02T05:32:00Z"


def test_flights_stream_skips_cancelled_and_keeps_diverted_flights() -> None:
    """A cancelled flight is skipped (None); a diverted one is stored with ``delayed`` unknown."""
    cancelled = {**STATUS, "status": "cancelled", "actual_departure": None, "arr_delay": None, "air_time": None}
    assert flights_stream.transform(cancelled) is None
    diverted = flights_stream.transform({**STATUS, "status": "diverted", "arr_delay": None, "air_time": None})
    assert diverted is not None
    assert (diverted["status"], diverted["delayed"], diverted["avg_speed_mph"]) == ("diverted", None, None)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"carrier": "u-a"}, "carrier: 'u-a' is not a two-character airline code"),
        ({"carrier": None}, "carrier: None is not a two-character airline code"),
        ({"origin": "JF"}, "origin: 'JF' is not a three-letter airport code"),
        ({"dest": 123}, "dest: 123 is not a three-letter airport code"),
        ({"flight": "15x45"}, "flight: '15x45' is not a positive flight number"),
        ({"flight": 0}, "flight: 0 is not a positive flight number"),
        ({"flight": True}, "flight: True is not a positive flight number"),
        ({"status": "boarding"}, "status: 'boarding' is not one of cancelled, diverted, landed"),
        ({"scheduled_departure": None}, "scheduled_departure: required but missing"),
        (
            {"scheduled_departure": "2013-01-01T05:15:00"},
            "scheduled_departure: '2013-01-01T05:15:00' has no UTC offset; send e.g. 2013-01-03T05:15:00-05:00",
        ),
        ({"actual_departure": "yesterday"}, "actual_departure: 'yesterday' is not an ISO 8601 date-time"),
        (
            {"actual_departure": "2013-01-01T00:15:00-05:00"},
            "actual_departure: '2013-01-01T00:15:00-05:00' is -300 minutes from scheduled_departure "
            "'2013-01-01T05:15:00-05:00', outside -120..2880",
        ),
        (
            {"actual_departure": "2013-01-04T10:17:00Z"},
            "actual_departure: '2013-01-04T10:17:00Z' is 4322 minutes from scheduled_departure "
            "'2013-01-01T05:15:00-05:00', outside -120..2880",
        ),
        ({"actual_departure": None}, "actual_departure: None is impossible for a flight with status 'landed'"),
        ({"status": "cancelled"}, "status: 'cancelled' but actual_departure is '2013-01-01T10:17:00Z'"),
        ({"arr_delay": None}, "arr_delay: None is impossible for a flight with status 'landed'"),
        ({"arr_delay": 11.5}, "arr_delay: '11.5' is not a whole number"),
        ({"air_time": 0}, "air_time: 0 minutes is impossible for a flight that departed"),
        ({"distance": -1}, "distance: -1.0 miles is impossible for a flight between two airports"),
    ],
)
def test_flights_stream_rejects_impossible_values(change: dict[str, Any], reason: str) -> None:
    """Each kind of bad status message raises ``Reject`` naming the field and the value."""
    with pytest.raises(Reject) as caught:
        flights_stream.transform({**STATUS, **change})
    assert caught.value.reason == reason


def test_flights_stream_document_is_the_batch_document_of_the_same_flight() -> None:
    """For every good sample message, the stream document holds exactly what the batch app
    makes of that flight's CSV row (minus the arrival clock times the feed lacks)."""
    with (FLIGHTS / "data" / "flights_2013-01-03.csv").open(encoding="utf-8", newline="") as handle:
        by_key = {}
        for row in csv.DictReader(handle):
            doc = flights_batch.transform(row)
            if doc is not None:
                by_key[(doc["airline"], doc["flight"], doc["origin"])] = doc
    documents, _, _ = _outcomes(flights_stream.transform, FLIGHTS_SAMPLE)
    assert len(documents) == FLIGHTS_COUNTS[0] - FLIGHTS_COUNTS[1] - FLIGHTS_COUNTS[2]
    for doc in documents:
        stream_only = {k: doc.pop(k) for k in ("status", "scheduled_departure_utc", "actual_departure_utc")}
        batch = by_key[(doc["airline"], doc["flight"], doc["origin"])]
        assert doc == {k: v for k, v in batch.items() if k not in ("arr_time", "sched_arr_time")}
        assert stream_only["status"] == "landed"


# --- sensors ----------------------------------------------------------------------------------


def test_sensors_stream_converts_units_and_normalises_time_to_utc() -> None:
    """A °F reading in local time becomes the batch app's reading document, in °C and UTC."""
    assert sensors_stream.transform(READING) == {
        "sensor_id": "S-0007",
        "ts": "2024-03-01T12:34:56Z",
        "site": "warehouse-a",
        "temp_c": 20.0,
        "temp_f": 68.0,
        "humidity_pct": 50.0,
        "dew_point_c": 9.26,
        "battery_v": 2.95,
        "battery_low": True,
        "hour": "2024-03-01T12:00:00Z",
    }


@pytest.mark.parametrize(
    "temperature",
    [
        {"temperature": 20.0, "unit": "C"},
        {"temperature": 20.0},  # no unit: °C
        {"temperature": 293.15, "unit": "K"},
        {"temperature": "68", "unit": " F "},
    ],
)
def test_sensors_stream_stores_the_same_reading_whatever_the_unit(temperature: dict[str, Any]) -> None:
    """°C (explicit or by default), K and °F (even as text) give the same stored document."""
    data = {k: v for k, v in READING.items() if k not in ("temperature", "unit")}
    assert sensors_stream.transform({**data, **temperature}) == sensors_stream.transform(READING)


def test_sensors_stream_skips_test_bench_readings() -> None:
    """A reading from the test bench is skipped (None), as in the batch app."""
    assert sensors_stream.transform({**READING, "site": "test-bench"}) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"sensor_id": None}, "sensor_id: required but missing"),
        ({"sensor_id": "sensor-39"}, "sensor_id: 'sensor-39' is not a sensor id like 'S-0007'"),
        ({"sensor_id": 7}, "sensor_id: 7 is not a sensor id like 'S-0007'"),
        ({"unit": "X"}, "unit: 'X' is not one of C, F, K"),
        ({"unit": "celsius"}, "unit: 'celsius' is not one of C, F, K"),
        (
            {"temperature": 250.0},
            "temperature: 250.0 °F is 121.11 °C, outside the sensors' range -40..85 °C",
        ),
        (
            {"temperature": 10, "unit": "K"},
            "temperature: 10 K is -263.15 °C, outside the sensors' range -40..85 °C",
        ),
        ({"temperature": "warm"}, "temperature: 'warm' is not a number"),
        ({"temperature": None}, "temperature: required but missing"),
        ({"humidity_pct": 120.5}, "humidity_pct: 120.5 is outside 0..100 %"),
        ({"humidity_pct": None}, "humidity_pct: required but missing"),
        ({"ts": "2024-03-01T12:34:56"}, "ts: '2024-03-01T12:34:56' has no UTC offset; send e.g. 2024-03-01T12:00:00Z"),
        ({"battery_v": 0}, "battery_v: 0.0 V is impossible for a working sensor"),
    ],
)
def test_sensors_stream_rejects_invalid_readings(change: dict[str, Any], reason: str) -> None:
    """Each kind of bad reading raises ``Reject`` naming the field and the value."""
    with pytest.raises(Reject) as caught:
        sensors_stream.transform({**READING, **change})
    assert caught.value.reason == reason


def test_sensors_stream_document_is_the_batch_document_of_the_same_reading() -> None:
    """Every generated reading, sent as a stream message in its sensor's unit and clock,
    is stored exactly as the batch app stores the reading from a file."""
    readings = sensors_generator.generate(400, seed=7)
    for index, reading in enumerate(readings):
        message = sensors_generator.stream_message(reading, index)
        assert sensors_stream.transform(message["data"]) == sensors_batch.transform(reading), message


# --- sample messages --------------------------------------------------------------------------


@pytest.mark.parametrize(("tenant_dir", "sample"), [(FLIGHTS, FLIGHTS_SAMPLE), (SENSORS, SENSORS_SAMPLE)])
def test_samples_are_envelopes_that_fit_one_post(tenant_dir: Path, sample: Path) -> None:
    """Each sample line is an envelope with a unique id, and the whole file is one valid
    ``application/x-ndjson`` POST within the tenant's stream limits."""
    body = sample.read_bytes()
    limits = load_profile(tenant_dir / "profile.yaml").stream_limits
    lines = body.splitlines()
    assert all(set(json.loads(line)) == {"id", "data"} for line in lines)
    envelopes = parse_post(body, ndjson=True)
    assert len(envelopes) == len(lines)
    assert len({e.id for e in envelopes}) == len(envelopes)
    assert max(len(line) for line in lines) <= limits.max_message_bytes
    assert len(body) <= min(limits.max_batch_bytes, 100 * 1024)
    assert len(envelopes) <= limits.max_batch_messages


@pytest.mark.parametrize(
    ("transform", "sample", "counts"),
    [
        (flights_stream.transform, FLIGHTS_SAMPLE, FLIGHTS_COUNTS),
        (sensors_stream.transform, SENSORS_SAMPLE, SENSORS_COUNTS),
    ],
    ids=["flights", "sensors"],
)
def test_samples_have_the_documented_share_of_bad_messages(
    transform: Any, sample: Path, counts: tuple[int, int, int]
) -> None:
    """The stream app quarantines exactly the documented bad messages (2-5 %), each with a
    reason that names a field and its value, and skips the documented ones."""
    documents, rejected, skipped = _outcomes(transform, sample)
    messages, bad, skip = counts
    assert (len(documents) + len(rejected) + skipped, len(rejected), skipped) == (messages, bad, skip)
    assert 0.02 <= bad / messages <= 0.05
    assert all(": " in reason and reason.split(": ", 1)[0].isidentifier() for _, reason in rejected)


def test_flights_sample_has_every_kind_of_bad_message() -> None:
    """The flights sample spoils messages in every way the generator knows."""
    _, rejected, _ = _outcomes(flights_stream.transform, FLIGHTS_SAMPLE)
    fields = {reason.split(":", 1)[0] for _, reason in rejected}
    assert fields == {
        "carrier",
        "origin",
        "scheduled_departure",
        "actual_departure",
        "air_time",
        "distance",
        "status",
        "flight",
    }


def test_sensors_sample_has_every_kind_of_bad_message() -> None:
    """The sensors sample spoils messages in every way the generator knows."""
    _, rejected, _ = _outcomes(sensors_stream.transform, SENSORS_SAMPLE)
    fields = sorted(reason.split(":", 1)[0] for _, reason in rejected)
    assert fields == sorted(["temperature", "unit", "sensor_id", "ts", "humidity_pct", "battery_v"] * 2)


def test_generators_reproduce_the_shipped_samples(tmp_path: Path) -> None:
    """The README's commands regenerate both sample files byte for byte."""
    flights_generator.main(["--out", str(tmp_path / "status.ndjson")])
    sensors_generator.main(
        [
            *("--stream", "--rows", "400", "--out", str(tmp_path / "readings.ndjson"), "--seed", "7"),
            *("--bad-ratio", "0.03", "--start", "2024-03-04T00:00:00Z"),
        ]
    )
    assert (tmp_path / "status.ndjson").read_bytes() == FLIGHTS_SAMPLE.read_bytes()
    assert (tmp_path / "readings.ndjson").read_bytes() == SENSORS_SAMPLE.read_bytes()


def _keys(profile: Profile, documents: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(doc[field] for field in profile.key_fields) for doc in documents]


def test_sample_keys_are_unique_and_never_collide_with_the_batch_files() -> None:
    """The profiles' key fields key stream documents too: each sample's keys are unique, and
    the sensors sample (same dataset as the files) shares no key with any shipped file."""
    flights_profile, sensors_profile = load_profile(FLIGHTS / "profile.yaml"), load_profile(SENSORS / "profile.yaml")
    flight_keys = _keys(flights_profile, _outcomes(flights_stream.transform, FLIGHTS_SAMPLE)[0])
    reading_keys = _keys(sensors_profile, _outcomes(sensors_stream.transform, SENSORS_SAMPLE)[0])
    assert len(set(flight_keys)) == len(flight_keys) and len(set(reading_keys)) == len(reading_keys)
    file_keys = set()
    for path in sorted((SENSORS / "data").glob("readings_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            try:
                doc = sensors_batch.transform(row) if isinstance(row, dict) else None
            except Reject:
                continue
            if doc is not None:
                file_keys.add(tuple(doc[field] for field in sensors_profile.key_fields))
    assert len(file_keys) > 3000
    assert file_keys.isdisjoint(reading_keys)


# --- profiles ---------------------------------------------------------------------------------


def test_profiles_route_each_sample_stream_to_its_stream_app() -> None:
    """Each profile's stream app serves the sample's stream (and no other), runs the bundle's
    stream_app.py next to the unchanged batch app, writes the documented dataset and scales
    between 1 and 3 instances."""
    for tenant_dir, stream, dataset in ((FLIGHTS, "status", "flight_status"), (SENSORS, "readings", "readings")):
        profile = load_profile(tenant_dir / "profile.yaml")
        app = profile.stream_app_for(stream)
        assert app is not None, tenant_dir.name
        assert (app.name, app.command, app.dataset) == (stream, ["{python}", "{bundle}/stream_app.py"], dataset)
        assert (app.min_instances, app.max_instances) == (1, 3)
        assert profile.stream_app_for("other") is None
        assert profile.batch_apps[0].command == ["{python}", "{bundle}/batch_app.py"]  # sensors has a 2nd app
