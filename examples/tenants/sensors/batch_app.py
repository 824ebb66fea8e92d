"""clientbatchingestapp of tenant "sensors": one JSON Lines reading -> one stored reading.

The platform runs this file as a black box (``profile.yaml``: batch app ``readings``) for
files named ``readings_*`` in JSON Lines; ``devices_app.py`` takes the device register.
The SDK has already applied the profile's quality rules (sensor id pattern, ISO ``ts``,
temperature -40..85 °C, humidity 0..100 %, each where the row has the field), so
``transform`` checks that a reading has them all and does the tenant's wrangling:

- renaming: ``temperature_c`` -> ``temp_c``;
- unit conversion: ``temp_f`` from ``temp_c``; ``ts`` normalised to UTC (``...Z``);
- derived fields: ``dew_point_c`` (Magnus formula), ``battery_low`` (below 3.0 V),
  ``hour`` (the UTC hour the reading falls in, for hourly roll-ups);
- rounding: temperatures and dew point to 0.01, humidity to 0.1, battery to 0.001 V;
- filtering: readings from the ``test-bench`` site are skipped;
- rejects: a reading without ``ts``, ``temperature_c`` or ``humidity_pct``, ``battery_v`` <= 0
  (a dead or unplugged sensor reports garbage) and a ``ts`` without a UTC offset are
  quarantined with the reason.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from mysimbdp import sdk

TEST_SITE = "test-bench"
BATTERY_LOW_V = 3.0
# Magnus formula coefficients (Sonntag 1990), good for -45..60 °C over water.
MAGNUS_B = 17.62
MAGNUS_C_DEG = 243.12


def _number(row: dict[str, Any], field: str) -> float | None:
    value = row.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise sdk.Reject(f"{field}: {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise sdk.Reject(f"{field}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise sdk.Reject(f"{field}: {value!r} is not a finite number")
    return number


def _utc(value: Any) -> datetime:
    try:
        ts = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise sdk.Reject(f"ts: {value!r} is not an ISO 8601 date-time") from None
    if ts.tzinfo is None:
        raise sdk.Reject(f"ts: {value!r} has no UTC offset; send e.g. 2024-03-01T12:00:00Z")
    return ts.astimezone(UTC)


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def dew_point_c(temp_c: float, humidity_pct: float) -> float | None:
    """Dew point by the Magnus formula; None at 0 % humidity, where it is undefined."""
    if humidity_pct <= 0:
        return None
    gamma = math.log(humidity_pct / 100) + MAGNUS_B * temp_c / (MAGNUS_C_DEG + temp_c)
    return MAGNUS_C_DEG * gamma / (MAGNUS_B - gamma)


def transform(row: dict[str, Any]) -> dict[str, Any] | None:
    """The stored document for one reading, None for a test-bench reading."""
    site = row.get("site")
    site = site.strip() if isinstance(site, str) and site.strip() else None
    if site == TEST_SITE:
        return None
    sensor_id = row.get("sensor_id")
    if not isinstance(sensor_id, str) or not sensor_id:
        raise sdk.Reject("sensor_id: required but missing")
    if row.get("ts") in (None, ""):
        raise sdk.Reject("ts: required but missing")
    ts = _utc(row.get("ts"))
    temp_c = _number(row, "temperature_c")
    humidity = _number(row, "humidity_pct")
    if temp_c is None or humidity is None:
        raise sdk.Reject("temperature_c and humidity_pct are both required")
    battery_v = _number(row, "battery_v")
    if battery_v is not None and battery_v <= 0:
        raise sdk.Reject(f"battery_v: {battery_v} V is impossible for a working sensor")
    dew_point = dew_point_c(temp_c, humidity)
    return {
        "sensor_id": sensor_id,
        "ts": _iso(ts),
        "site": site,
        "temp_c": round(temp_c, 2),
        "temp_f": round(temp_c * 9 / 5 + 32, 2),
        "humidity_pct": round(humidity, 1),
        "dew_point_c": None if dew_point is None else round(dew_point, 2),
        "battery_v": None if battery_v is None else round(battery_v, 3),
        "battery_low": None if battery_v is None else battery_v < BATTERY_LOW_V,
        "hour": _iso(ts.replace(minute=0, second=0, microsecond=0)),
    }


if __name__ == "__main__":
    sdk.run_batch(transform)
