"""clientbatchingestapp of tenant "sensors" for the device register: one CSV row -> one device version.

The platform runs this file as a black box for files named ``devices_*`` in CSV
(``profile.yaml``: batch app ``devices``); ``batch_app.py`` takes the readings. A row is
what the asset-management spreadsheet exports (``data/devices_2024-03-01.csv``)::

    sensor_id,site,model,serial,firmware,installed_on,calibrated_on,offset_c,battery_type,status,updated_at
    S-0003,cold-store,TH 200,TH710865,2.3.0,22/10/2022,16/01/2023,-0.52,CR123A,active,2024-02-28T10:58:00+01:00

The stored document is one version of a device's record: the profile's key
``[sensor_id, ts]`` with ``ts`` = when the row was last changed (``updated_at`` in UTC), so
a re-export of an unchanged device stores nothing new and a changed one adds a version.

- normalising: ``sensor_id`` and ``model`` upper-cased (``th200`` and ``TH 200`` are
  ``TH-200``), ``site`` and ``status`` lower-cased, firmware without its ``v`` and with
  three parts (``2.4`` is ``2.4.0``), dates ``DD/MM/YYYY`` or ISO to ISO, ``updated_at``
  to UTC;
- looked up: the model's rated temperature range (``MODELS``);
- derived: ``age_days`` (installed to updated), ``calibration_due`` (a year after the last
  calibration) and ``calibration_overdue`` (due before ``updated_at``), ``firmware_outdated``
  (older than ``MIN_FIRMWARE``), ``offset_c`` rounded to 0.01 °C;
- filtered: retired devices are skipped (the register keeps them; the fleet does not);
- rejects (quarantined with the reason): an unknown model or status, an active sensor
  without a site, a calibration offset beyond ±2 °C (recalibrate it, do not correct by it),
  a date or firmware that does not parse, an installation after ``updated_at``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from batch_app import _iso

from mysimbdp import sdk

# model -> rated temperature range (°C), from the data sheets
MODELS: dict[str, tuple[float, float]] = {
    "TH-200": (-40.0, 85.0),  # indoor
    "TH-210": (-40.0, 85.0),  # outdoor housing
    "TH-300": (-55.0, 125.0),  # lab reference
}
MODEL_RE = re.compile(r"([A-Z]+)[- ]?(\d+)")
FIRMWARE_RE = re.compile(r"[vV]?(\d+)\.(\d+)(?:\.(\d+))?")
MIN_FIRMWARE = (2, 3, 0)
MAX_OFFSET_C = 2.0
CALIBRATION_EVERY = timedelta(days=365)
STATUSES = ("active", "spare", "retired")


def _text(row: dict[str, Any], field: str) -> str:
    value = row.get(field)
    return value.strip() if isinstance(value, str) else ""


def _model(row: dict[str, Any]) -> str:
    raw = _text(row, "model")
    found = MODEL_RE.fullmatch(raw.upper())
    model = f"{found[1]}-{found[2]}" if found else raw
    if model not in MODELS:
        raise sdk.Reject(f"model: {raw!r} is not a known model ({', '.join(MODELS)})")
    return model


def _firmware(row: dict[str, Any]) -> tuple[int, int, int]:
    raw = _text(row, "firmware")
    found = FIRMWARE_RE.fullmatch(raw)
    if not found:
        raise sdk.Reject(f"firmware: {raw!r} is not a version like 2.4.1")
    return int(found[1]), int(found[2]), int(found[3] or 0)


def _date(row: dict[str, Any], field: str) -> date | None:
    raw = _text(row, field)
    if not raw:
        return None
    for layout in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(raw, layout).date()
        except ValueError:
            continue
    raise sdk.Reject(f"{field}: {raw!r} is not a date (YYYY-MM-DD or DD/MM/YYYY)")


def _updated_at(row: dict[str, Any]) -> datetime:
    raw = _text(row, "updated_at")
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise sdk.Reject(f"updated_at: {raw!r} is not an ISO 8601 date-time") from None
    if ts.tzinfo is None:
        raise sdk.Reject(f"updated_at: {raw!r} has no UTC offset; write e.g. 2024-02-11T17:42:00+01:00")
    return ts.astimezone(UTC)


def _offset_c(row: dict[str, Any]) -> float:
    raw = _text(row, "offset_c") or "0"
    try:
        offset = float(raw)
    except ValueError:
        raise sdk.Reject(f"offset_c: {raw!r} is not a number") from None
    if not abs(offset) <= MAX_OFFSET_C:
        raise sdk.Reject(f"offset_c: {offset:+.2f} °C is beyond ±{MAX_OFFSET_C:g} °C: recalibrate the sensor")
    return round(offset, 2)


def transform(row: dict[str, Any]) -> dict[str, Any] | None:
    """The stored version of one device, None for a retired one."""
    status = _text(row, "status").lower()
    if status not in STATUSES:
        raise sdk.Reject(f"status: {row.get('status')!r} is not one of {', '.join(STATUSES)}")
    if status == "retired":
        return None
    site = _text(row, "site").lower() or None
    if status == "active" and site is None:
        raise sdk.Reject("site: an active sensor needs its site")
    model = _model(row)
    firmware = _firmware(row)
    ts = _updated_at(row)
    installed = _date(row, "installed_on")
    if installed is not None and installed > ts.date():
        raise sdk.Reject(f"installed_on: {installed} is after updated_at {_iso(ts)}")
    calibrated = _date(row, "calibrated_on")
    due = None if calibrated is None else calibrated + CALIBRATION_EVERY
    rated_min, rated_max = MODELS[model]
    return {
        "sensor_id": _text(row, "sensor_id").upper(),
        "ts": _iso(ts),
        "site": site,
        "status": status,
        "model": model,
        "rated_min_c": rated_min,
        "rated_max_c": rated_max,
        "serial": _text(row, "serial") or None,
        "firmware": ".".join(map(str, firmware)),
        "firmware_outdated": firmware < MIN_FIRMWARE,
        "installed_on": None if installed is None else installed.isoformat(),
        "age_days": None if installed is None else (ts.date() - installed).days,
        "calibrated_on": None if calibrated is None else calibrated.isoformat(),
        "calibration_due": None if due is None else due.isoformat(),
        "calibration_overdue": None if due is None else due < ts.date(),
        "offset_c": _offset_c(row),
        "battery_type": _text(row, "battery_type") or None,
    }


if __name__ == "__main__":
    sdk.run_batch(transform)
