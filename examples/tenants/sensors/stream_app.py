"""clientstreamingestapp of tenant "sensors": one live reading -> one stored reading.

The platform runs this file as a black box (``profile.yaml``: stream app ``readings``; stream
``status`` has its own app, ``status_app.py``), one process per instance, next to
``batch_app.py`` in the tenant's bundle. A message is what a sensor gateway pushes
(``data/stream/readings.ndjson``)::

    {"sensor_id": "S-0003", "ts": "2024-03-04T01:00:02+01:00", "temperature": 64.81, "unit": "F",
     "humidity_pct": 46.3, "battery_v": 3.271, "site": "cold-store"}

No quality rules run on the stream path, so ``transform`` checks what the profile's rules
check for files, converts the temperature to °C and hands ``batch_app.transform`` a row
(its number parser ``_number`` is reused too): the stored document is exactly a
batch-ingested reading (same dataset, same key).

- normalising: ``sensor_id`` trimmed and upper-cased, then checked (``S-`` and 4 digits);
- unit conversion: ``temperature`` in ``unit`` C (the default), F or K -> °C, to 0.01 °C
  (so a reading sent in °F is stored exactly as the same reading sent in °C);
- then ``batch_app.transform``: ``ts`` to UTC (``...Z``), ``temp_f``, dew point, battery
  flag, hour bucket, rounding; test-bench readings skipped (None);
- rejects (quarantined by the SDK with the reason, which names the field and the value):
  a malformed or missing ``sensor_id``, an unknown ``unit``, a missing or out-of-range
  temperature (the sensors' range -40..85 °C) or humidity (0..100 %), and whatever ``batch_app.transform``
  rejects (a ``ts`` without a UTC offset, ``battery_v`` <= 0, a non-numeric value).
"""

from __future__ import annotations

import re
from typing import Any

from batch_app import _number
from batch_app import transform as batch_transform

from mysimbdp import sdk

SENSOR_ID_RE = re.compile(r"S-\d{4}")
TEMP_MIN_C, TEMP_MAX_C = -40.0, 85.0  # the sensors' rated range, as profile.yaml's rule for files
UNITS = {"C": "°C", "F": "°F", "K": "K"}  # accepted ``unit`` values (a leading ° is ignored) and their symbol
KELVIN_AT_0_C = 273.15


def _sensor_id(data: dict[str, Any]) -> str:
    raw = data.get("sensor_id")
    if raw is None:
        raise sdk.Reject("sensor_id: required but missing")
    sensor_id = raw.strip().upper() if isinstance(raw, str) else ""
    if not SENSOR_ID_RE.fullmatch(sensor_id):
        raise sdk.Reject(f"sensor_id: {raw!r} is not a sensor id like 'S-0007'")
    return sensor_id


def _celsius(data: dict[str, Any]) -> float:
    raw_unit = data.get("unit", "C")
    unit = raw_unit.strip().removeprefix("°").upper() if isinstance(raw_unit, str) else ""
    if unit not in UNITS:
        raise sdk.Reject(f"unit: {raw_unit!r} is not one of {', '.join(UNITS)}")
    temperature = _number(data, "temperature")
    if temperature is None:
        raise sdk.Reject("temperature: required but missing")
    if unit == "F":
        celsius = (temperature - 32) * 5 / 9
    elif unit == "K":
        celsius = temperature - KELVIN_AT_0_C
    else:
        celsius = temperature
    if not TEMP_MIN_C <= celsius <= TEMP_MAX_C:
        raise sdk.Reject(
            f"temperature: {data['temperature']!r} {UNITS[unit]} is {celsius:.2f} °C, "
            f"outside the sensors' range {TEMP_MIN_C:g}..{TEMP_MAX_C:g} °C"
        )
    return round(celsius, 2)  # to 0.01 °C as a file carries it, before anything is derived from it


def transform(data: dict[str, Any]) -> dict[str, Any] | None:
    """The stored document for one reading, None for a test-bench reading."""
    sensor_id = _sensor_id(data)
    celsius = _celsius(data)
    humidity = _number(data, "humidity_pct")
    if humidity is None:
        raise sdk.Reject("humidity_pct: required but missing")
    if not 0 <= humidity <= 100:
        raise sdk.Reject(f"humidity_pct: {data['humidity_pct']!r} is outside 0..100 %")
    row = {
        "sensor_id": sensor_id,
        "ts": data.get("ts"),
        "temperature_c": celsius,
        "humidity_pct": humidity,
        "battery_v": data.get("battery_v"),
        "site": data.get("site"),
    }
    return batch_transform(row)


if __name__ == "__main__":
    sdk.run_stream(transform)
