"""clientbatchingestapp of tenant "flights": one nycflights13 CSV row -> one flight document.

The platform runs this file as a black box (``profile.yaml``: ``batch_apps[0].command``).
The SDK has already applied the profile's quality rules, so ``transform`` sees rows whose
required fields are present and well-typed; it does the tenant's own wrangling:

- type conversion: whole numbers to ``int``, distance to ``float``, empty (or ``NA``) to None;
- renaming: ``carrier`` -> ``airline``, ``dest`` -> ``destination``, ``tailnum`` ->
  ``tail_number``, minutes and miles get their unit in the name;
- derived fields: ISO ``date``, ``scheduled_departure`` and ``actual_departure`` (local ISO
  date-times), ``delayed`` (arrived more than 15 minutes late), ``avg_speed_mph``;
- filtering: cancelled flights (no ``dep_time``) are skipped;
- rejects: impossible values (``air_time`` <= 0, a day that does not exist, a clock time
  like 1275) are quarantined with the reason.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar

from mysimbdp import sdk

T = TypeVar("T")

DELAYED_AFTER_MIN = 15  # the US DOT definition of a delayed arrival
MISSING = frozenset({"", "NA"})  # nycflights13's own export writes NA for a missing value


def _text(row: dict[str, Any], field: str) -> str | None:
    value = row.get(field)
    if value is None:
        return None
    text = str(value).strip()
    return None if text in MISSING else text


def _int(row: dict[str, Any], field: str) -> int | None:
    text = _text(row, field)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise sdk.Reject(f"{field}: {text!r} is not a whole number") from None


def _float(row: dict[str, Any], field: str) -> float | None:
    text = _text(row, field)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise sdk.Reject(f"{field}: {text!r} is not a number") from None


def _required(value: T | None, field: str) -> T:
    if value is None:
        raise sdk.Reject(f"{field}: required but missing")
    return value


def _clock(row: dict[str, Any], field: str) -> time | None:
    """An ``HHMM`` field as a time of day; nycflights13 writes midnight as 2400."""
    hhmm = _int(row, field)
    if hhmm is None:
        return None
    if hhmm == 2400:
        return time(0, 0)
    hours, minutes = divmod(hhmm, 100)
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise sdk.Reject(f"{field}: {hhmm} is not a clock time HHMM")
    return time(hours, minutes)


def _hhmm(clock: time | None) -> str | None:
    return None if clock is None else clock.strftime("%H:%M")


def transform(row: dict[str, Any]) -> dict[str, Any] | None:
    """The stored document for one flight, None for a cancelled flight."""
    dep_time = _clock(row, "dep_time")
    if dep_time is None:
        return None  # cancelled: it never left, so there is nothing to analyse
    year = _required(_int(row, "year"), "year")
    month = _required(_int(row, "month"), "month")
    day = _required(_int(row, "day"), "day")
    try:
        flight_date = date(year, month, day)
    except ValueError as exc:
        raise sdk.Reject(f"year/month/day {year}-{month}-{day} is not a date: {exc}") from None
    scheduled = datetime.combine(flight_date, _required(_clock(row, "sched_dep_time"), "sched_dep_time"))
    dep_delay = _int(row, "dep_delay")
    arr_delay = _int(row, "arr_delay")
    air_time = _int(row, "air_time")
    distance = _required(_float(row, "distance"), "distance")
    if air_time is not None and air_time <= 0:
        raise sdk.Reject(f"air_time: {air_time} minutes is impossible for a flight that departed")
    if distance <= 0:
        raise sdk.Reject(f"distance: {distance} miles is impossible for a flight between two airports")
    actual = None if dep_delay is None else scheduled + timedelta(minutes=dep_delay)
    return {
        "date": flight_date.isoformat(),
        "airline": _required(_text(row, "carrier"), "carrier"),
        "flight": _required(_int(row, "flight"), "flight"),
        "tail_number": _text(row, "tailnum"),
        "origin": _required(_text(row, "origin"), "origin"),
        "destination": _required(_text(row, "dest"), "dest"),
        "scheduled_departure": scheduled.isoformat(),
        "actual_departure": None if actual is None else actual.isoformat(),
        "dep_time": _hhmm(dep_time),
        "arr_time": _hhmm(_clock(row, "arr_time")),
        "sched_arr_time": _hhmm(_clock(row, "sched_arr_time")),
        "dep_delay_min": dep_delay,
        "arr_delay_min": arr_delay,
        "air_time_min": air_time,
        "distance_mi": distance,
        "delayed": None if arr_delay is None else arr_delay > DELAYED_AFTER_MIN,
        "avg_speed_mph": None if air_time is None else round(distance / (air_time / 60), 1),
    }


if __name__ == "__main__":
    sdk.run_batch(transform)
