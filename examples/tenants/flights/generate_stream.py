"""Deterministic sample messages for the ``status`` stream of tenant "flights".

Turns every ``--every``-th flight of a real nycflights13 day (``data/flights_2013-01-03.csv``)
into the message a departure board's feed pushes once the flight is settled, wrapped in an
envelope whose id is the flight (``UA1545-EWR-2013-01-03``), one per line (NDJSON)::

    {"id": "UA1545-EWR-2013-01-03", "data": {"carrier": "UA", "flight": 1545, "tailnum": "N14228",
     "origin": "EWR", "dest": "IAH", "status": "landed",
     "scheduled_departure": "2013-01-03T05:15:00-05:00", "actual_departure": "2013-01-03T10:17:00Z",
     "arr_delay": 11, "air_time": 227, "distance": 1400}}

The feed is untidy the way real ones are: ``actual_departure`` alternates between UTC and
the origin's offset, and every seventh message writes its codes in lower case.
``scheduled_departure`` is the origin's local time (New York, EST in January: -05:00) and
``actual_departure`` = scheduled + ``dep_delay``, as ``batch_app.py`` reads a CSV row.
A cancelled flight has status ``cancelled`` and no ``actual_departure``; a flight without
``arr_delay`` (diverted) has status ``diverted``.

``--bad-ratio R`` spoils exactly ``round(messages * R)`` messages (never a cancelled one,
which ``stream_app.py`` skips before looking closer), cycling through ``BAD_KINDS``; each is
quarantined by ``stream_app.py`` with a reason naming the field and the value. The same
arguments always give the same bytes::

    python generate_stream.py --out data/stream/status.ndjson
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "data" / "flights_2013-01-03.csv"
NEW_YORK_WINTER = timezone(timedelta(hours=-5), "EST")  # the slice is January: no daylight saving
BAD_KINDS = (
    "carrier",
    "origin",
    "naive_time",
    "early_departure",
    "air_time",
    "distance",
    "status",
    "flight",
)
LOWER_CASE_EVERY = 7


def _int(value: str) -> int | None:
    return None if value in ("", "NA") else int(value)


def _message(row: dict[str, str], index: int) -> dict[str, Any]:
    """The feed's message for one nycflights13 row."""
    sched = int(row["sched_dep_time"])
    scheduled = datetime(
        int(row["year"]), int(row["month"]), int(row["day"]), sched // 100, sched % 100, tzinfo=NEW_YORK_WINTER
    )
    dep_delay, arr_delay = _int(row["dep_delay"]), _int(row["arr_delay"])
    actual = None if dep_delay is None else scheduled + timedelta(minutes=dep_delay)
    if actual is not None and index % 2 == 0:
        actual = actual.astimezone(UTC)
    lower = index % LOWER_CASE_EVERY == 3
    status = "cancelled" if actual is None else "diverted" if arr_delay is None else "landed"
    return {
        "carrier": row["carrier"].lower() if lower else row["carrier"],
        "flight": int(row["flight"]),
        "tailnum": row["tailnum"] or None,
        "origin": row["origin"].lower() if lower else row["origin"],
        "dest": row["dest"],
        "status": status,
        "scheduled_departure": scheduled.isoformat(),
        "actual_departure": None if actual is None else actual.isoformat().replace("+00:00", "Z"),
        "arr_delay": arr_delay,
        "air_time": _int(row["air_time"]),
        "distance": int(float(row["distance"])),
    }


def _spoil(data: dict[str, Any], kind: str) -> dict[str, Any]:
    bad = dict(data)
    if kind == "carrier":
        bad["carrier"] = "u-a"
    elif kind == "origin":
        bad["origin"] = "JF"
    elif kind == "naive_time":
        bad["scheduled_departure"] = data["scheduled_departure"][:19]  # the offset cut off
    elif kind == "early_departure":
        scheduled = datetime.fromisoformat(data["scheduled_departure"])
        bad["actual_departure"] = (scheduled - timedelta(hours=5)).isoformat()
    elif kind == "air_time":
        bad["air_time"] = 0
    elif kind == "distance":
        bad["distance"] = -1
    elif kind == "status":
        bad["status"] = "boarding"
    else:
        bad["flight"] = "15x45"
    return bad


def generate(source: Path = SOURCE, *, every: int = 3, bad_ratio: float = 0.03, seed: int = 1) -> list[dict[str, Any]]:
    """The envelopes: every ``every``-th flight of ``source``, ``round(n * bad_ratio)`` spoiled."""
    if every < 1 or not 0.0 <= bad_ratio <= 1.0:
        raise ValueError(f"every must be >= 1 and bad_ratio within 0..1, got {every} and {bad_ratio}")
    with source.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))[::every]
    envelopes: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        flight_date = f"{row['year']}-{int(row['month']):02d}-{int(row['day']):02d}"
        flight_id = f"{row['carrier']}{row['flight']}-{row['origin']}-{flight_date}"
        envelopes.append({"id": flight_id, "data": _message(row, index)})
    rng = random.Random(seed)  # noqa: S311 - sample data, not cryptography
    candidates = [n for n, e in enumerate(envelopes) if e["data"]["status"] != "cancelled"]
    chosen = sorted(rng.sample(candidates, round(len(envelopes) * bad_ratio)))
    for number, index in enumerate(chosen):
        envelopes[index]["data"] = _spoil(envelopes[index]["data"], BAD_KINDS[number % len(BAD_KINDS)])
    return envelopes


def write(envelopes: Sequence[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for envelope in envelopes:
            out.write(json.dumps(envelope, separators=(",", ":")) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="output file (NDJSON)")
    parser.add_argument("--source", type=Path, default=SOURCE, help="a nycflights13 CSV day")
    parser.add_argument("--every", type=int, default=3, help="take every N-th flight of the source")
    parser.add_argument("--bad-ratio", type=float, default=0.03, help="fraction of spoiled messages, 0..1")
    parser.add_argument("--seed", type=int, default=1, help="random seed (which messages are spoiled)")
    args = parser.parse_args(argv)
    envelopes = generate(args.source, every=args.every, bad_ratio=args.bad_ratio, seed=args.seed)
    write(envelopes, args.out)
    print(f"wrote {len(envelopes)} messages to {args.out}")


if __name__ == "__main__":
    main()
