"""clientstreamingestapp of tenant "flights": one live flight status message -> one flight document.

The platform runs this file as a black box (``profile.yaml``: ``stream_apps[0].command``),
one process per instance, next to ``batch_app.py`` in the tenant's bundle. A message is
what the departure board's feed pushes once a flight is settled (``data/stream/status.ndjson``)::

    {"carrier": "ua", "flight": 1545, "tailnum": "N14228", "origin": "EWR", "dest": "IAH",
     "status": "landed", "scheduled_departure": "2013-01-03T05:15:00-05:00",
     "actual_departure": "2013-01-03T10:17:00Z", "arr_delay": 11, "air_time": 227, "distance": 1400}

No quality rules run on the stream path, so ``transform`` checks what the profile's rules
check for files, then hands the batch app a row and keeps its wrangling (one source of truth):

- normalising: carrier and airport codes trimmed and upper-cased, then checked;
  ``status`` lower-cased and one of ``landed``, ``diverted``, ``cancelled``;
- times: ``scheduled_departure`` must carry the origin's UTC offset (it defines the local
  ``date``); ``actual_departure`` may use any offset; both are also stored in UTC (``...Z``);
- derived: ``dep_delay_min`` = actual - scheduled in minutes, then everything
  ``batch_app.transform`` derives (``date``, renames, ``delayed``, ``avg_speed_mph``, ...);
- filtering: a cancelled flight (no ``actual_departure``) returns None, as in the batch app;
- rejects (quarantined by the SDK with the reason, which names the field and the value):
  a malformed code or flight number, a time without an offset, a departure more than
  ``EARLIEST_MIN`` minutes early or ``LATEST_MIN`` late, an unknown status, a landed flight
  without ``arr_delay``, and whatever ``batch_app.transform`` rejects (``air_time`` <= 0,
  ``distance`` <= 0, a non-integer minute count).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from batch_app import transform as batch_transform

from mysimbdp import sdk

CARRIER_RE = re.compile(r"[A-Z0-9]{2}")
AIRPORT_RE = re.compile(r"[A-Z]{3}")
STATUSES = ("cancelled", "diverted", "landed")
EARLIEST_MIN = -120  # no airline lets a flight leave two hours early (nycflights13's earliest: -43)
LATEST_MIN = 48 * 60  # beyond two days late a flight is rescheduled, not delayed (max: 1301)


def _code(data: dict[str, Any], field: str, pattern: re.Pattern[str], what: str) -> str:
    raw = data.get(field)
    code = raw.strip().upper() if isinstance(raw, str) else ""
    if not pattern.fullmatch(code):
        raise sdk.Reject(f"{field}: {raw!r} is not {what}")
    return code


def _flight_number(data: dict[str, Any]) -> int:
    raw = data.get("flight")
    text = str(raw).strip() if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
    if not text.isdigit() or int(text) < 1:
        raise sdk.Reject(f"flight: {raw!r} is not a positive flight number")
    return int(text)


def _moment(data: dict[str, Any], field: str) -> datetime | None:
    """An ISO 8601 date-time with a UTC offset; None when absent."""
    raw = data.get(field)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip()) if isinstance(raw, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise sdk.Reject(f"{field}: {raw!r} is not an ISO 8601 date-time")
    if moment.tzinfo is None:
        raise sdk.Reject(f"{field}: {raw!r} has no UTC offset; send e.g. 2013-01-03T05:15:00-05:00")
    return moment


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _hhmm(moment: datetime) -> int:
    return moment.hour * 100 + moment.minute


def transform(data: dict[str, Any]) -> dict[str, Any] | None:
    """The stored document for one flight status message, None for a cancelled flight."""
    carrier = _code(data, "carrier", CARRIER_RE, "a two-character airline code")
    origin = _code(data, "origin", AIRPORT_RE, "a three-letter airport code")
    dest = _code(data, "dest", AIRPORT_RE, "a three-letter airport code")
    flight = _flight_number(data)
    raw_status = data.get("status")
    status = raw_status.strip().lower() if isinstance(raw_status, str) else ""
    if status not in STATUSES:
        raise sdk.Reject(f"status: {raw_status!r} is not one of {', '.join(STATUSES)}")
    scheduled = _moment(data, "scheduled_departure")
    if scheduled is None:
        raise sdk.Reject("scheduled_departure: required but missing")
    actual = _moment(data, "actual_departure")
    if actual is None:
        if status != "cancelled":
            raise sdk.Reject(f"actual_departure: None is impossible for a flight with status {status!r}")
        return None  # cancelled: it never left, as batch_app.py skips it
    if status == "cancelled":
        raise sdk.Reject(f"status: 'cancelled' but actual_departure is {data['actual_departure']!r}")
    if status == "landed" and data.get("arr_delay") is None:
        raise sdk.Reject("arr_delay: None is impossible for a flight with status 'landed'")
    local = actual.astimezone(scheduled.tzinfo)  # the origin's clock, as the batch files write it
    dep_delay = round((actual - scheduled).total_seconds() / 60)
    if not EARLIEST_MIN <= dep_delay <= LATEST_MIN:
        raise sdk.Reject(
            f"actual_departure: {data['actual_departure']!r} is {dep_delay} minutes from scheduled_departure "
            f"{data['scheduled_departure']!r}, outside {EARLIEST_MIN}..{LATEST_MIN}"
        )
    row = {
        "year": scheduled.year,
        "month": scheduled.month,
        "day": scheduled.day,
        "sched_dep_time": _hhmm(scheduled),
        "dep_time": _hhmm(local),
        "dep_delay": dep_delay,
        "arr_delay": data.get("arr_delay"),
        "carrier": carrier,
        "flight": flight,
        "tailnum": data.get("tailnum"),
        "origin": origin,
        "dest": dest,
        "air_time": data.get("air_time"),
        "distance": data.get("distance"),
    }
    doc = batch_transform(row)
    if doc is None:  # cannot happen: dep_time is set; keeps the type checker honest
        return None
    del doc["arr_time"], doc["sched_arr_time"]  # the feed carries no arrival clock times
    doc["status"] = status
    doc["scheduled_departure_utc"] = _utc(scheduled)
    doc["actual_departure_utc"] = _utc(actual)
    return doc


if __name__ == "__main__":
    sdk.run_stream(transform)
