"""clientstreamingestapp of tenant "sensors" for stream ``status``: one heartbeat -> one device status.

The platform runs this file as a black box (``profile.yaml``: stream app ``status``), one
process per instance, next to ``batch_app.py`` in the tenant's bundle; the ``readings``
stream has its own app (``stream_app.py``). Every 15 minutes each sensor's gateway posts
a heartbeat (``data/stream/status.ndjson``)::

    {"sensor_id": "S-0007", "site": "cold-store", "ts": "2024-03-04T00:15:06Z", "battery_v": 3.214,
     "rssi_dbm": -71, "uptime_s": 93600, "errors": ["E12"]}

The documents go to dataset ``device_status``, keyed by the profile's ``[sensor_id, ts]``.

- normalising: ``sensor_id`` trimmed and upper-cased, then checked (``S-`` and 4 digits);
  ``ts`` to UTC (``...Z``); error codes upper-cased, de-duplicated and sorted;
- derived: ``battery_pct`` (linear between ``BATTERY_EMPTY_V`` and ``BATTERY_FULL_V``),
  ``battery_low`` (below the readings app's 3.0 V), ``signal`` (``good`` from -67 dBm,
  ``fair`` from -80 dBm, else ``poor``), ``uptime_h``, ``rebooted`` (up for less than one
  heartbeat period), ``error_count``, ``needs_service`` (low battery, poor signal or an
  error), ``hour`` (the UTC hour bucket);
- filtered: heartbeats from the lab's ``test-bench`` are skipped, as their readings are;
- rejects (quarantined with the reason, naming the field and the value): a bad sensor id,
  a ``ts`` without offset, a battery voltage outside 0..4.5 V, a signal outside
  -120..0 dBm, a negative or fractional uptime, error codes that are not a list of
  ``E`` + two digits.
"""

from __future__ import annotations

import re
from typing import Any

from batch_app import BATTERY_LOW_V, TEST_SITE, _iso, _number, _utc

from mysimbdp import sdk

SENSOR_ID_RE = re.compile(r"S-\d{4}")
ERROR_RE = re.compile(r"E\d{2}")
BATTERY_EMPTY_V, BATTERY_FULL_V = 2.7, 3.6  # a lithium cell's usable range
BATTERY_MAX_V = 4.5  # above this the reading is wrong, not the battery
RSSI_MIN_DBM, RSSI_MAX_DBM = -120, 0
SIGNAL_GOOD_DBM, SIGNAL_FAIR_DBM = -67, -80
HEARTBEAT_S = 900


def _sensor_id(data: dict[str, Any]) -> str:
    raw = data.get("sensor_id")
    sensor_id = raw.strip().upper() if isinstance(raw, str) else ""
    if not SENSOR_ID_RE.fullmatch(sensor_id):
        raise sdk.Reject(f"sensor_id: {raw!r} is not a sensor id like 'S-0007'")
    return sensor_id


def _battery(data: dict[str, Any]) -> float | None:
    volts = _number(data, "battery_v")
    if volts is not None and not 0 < volts <= BATTERY_MAX_V:
        raise sdk.Reject(f"battery_v: {data['battery_v']!r} V is outside 0..{BATTERY_MAX_V:g} V")
    return volts


def _rssi(data: dict[str, Any]) -> int:
    rssi = _number(data, "rssi_dbm")
    if rssi is None:
        raise sdk.Reject("rssi_dbm: required but missing")
    if not RSSI_MIN_DBM <= rssi <= RSSI_MAX_DBM:
        raise sdk.Reject(f"rssi_dbm: {data['rssi_dbm']!r} dBm is outside {RSSI_MIN_DBM}..{RSSI_MAX_DBM} dBm")
    return round(rssi)


def _uptime_s(data: dict[str, Any]) -> int:
    uptime = _number(data, "uptime_s")
    if uptime is None or uptime < 0 or not uptime.is_integer():
        raise sdk.Reject(f"uptime_s: {data.get('uptime_s')!r} is not a whole number of seconds >= 0")
    return int(uptime)


def _errors(data: dict[str, Any]) -> list[str]:
    raw = data.get("errors", [])
    if not isinstance(raw, list) or not all(isinstance(code, str) for code in raw):
        raise sdk.Reject(f"errors: {raw!r} is not a list of error codes")
    codes = sorted({code.strip().upper() for code in raw})
    if bad := [code for code in codes if not ERROR_RE.fullmatch(code)]:
        raise sdk.Reject(f"errors: {bad} are not error codes like 'E07'")
    return codes


def _signal(rssi_dbm: int) -> str:
    if rssi_dbm >= SIGNAL_GOOD_DBM:
        return "good"
    return "fair" if rssi_dbm >= SIGNAL_FAIR_DBM else "poor"


def transform(data: dict[str, Any]) -> dict[str, Any] | None:
    """The stored status of one heartbeat, None for a test-bench sensor."""
    site = data.get("site")
    site = site.strip() if isinstance(site, str) and site.strip() else None
    if site == TEST_SITE:
        return None
    sensor_id = _sensor_id(data)
    ts = _utc(data.get("ts"))
    volts = _battery(data)
    rssi = _rssi(data)
    uptime = _uptime_s(data)
    errors = _errors(data)
    battery_low = None if volts is None else volts < BATTERY_LOW_V
    signal = _signal(rssi)
    return {
        "sensor_id": sensor_id,
        "ts": _iso(ts),
        "site": site,
        "battery_v": None if volts is None else round(volts, 3),
        "battery_pct": None if volts is None else _battery_pct(volts),
        "battery_low": battery_low,
        "rssi_dbm": rssi,
        "signal": signal,
        "uptime_h": round(uptime / 3600, 1),
        "rebooted": uptime < HEARTBEAT_S,
        "errors": errors,
        "error_count": len(errors),
        "needs_service": bool(battery_low) or signal == "poor" or bool(errors),
        "hour": _iso(ts.replace(minute=0, second=0, microsecond=0)),
    }


def _battery_pct(volts: float) -> int:
    share = (volts - BATTERY_EMPTY_V) / (BATTERY_FULL_V - BATTERY_EMPTY_V)
    return round(100 * min(1.0, max(0.0, share)))


if __name__ == "__main__":
    sdk.run_stream(transform)
