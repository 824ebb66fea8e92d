"""Deterministic generator of sensor readings for tenant "sensors".

Writes ``--rows`` readings, one JSON object per line (or CSV when ``--out`` ends in
``.csv``)::

    {"sensor_id": "S-0001", "ts": "2024-03-01T00:00:00Z", "temperature_c": 18.42,
     "humidity_pct": 47.3, "battery_v": 3.412, "site": "warehouse-a"}

The same ``--seed`` always gives the same bytes. ``--bad-ratio R`` makes exactly
``round(rows * R)`` rows bad (never a test-bench reading), cycling through four kinds: a
temperature out of the profile's range, a missing ``sensor_id`` (both quarantined by the
profile's quality rules), a line that is JSON but not an object (quarantined by the SDK's
reader; JSON Lines only) and a dead battery, ``battery_v`` 0 (quarantined by
``batch_app.py``'s ``Reject``).

    python generate.py --rows 2000 --out data/readings_001.jsonl --seed 1

``--stream`` writes the same readings as the messages a sensor gateway posts to the
``readings`` stream instead (NDJSON envelopes, see :func:`stream_message`), spoiled by
``STREAM_BAD_KINDS`` (each quarantined by ``stream_app.py``)::

    python generate.py --stream --rows 400 --out data/stream/readings.ndjson --seed 7 \\
        --bad-ratio 0.03 --start 2024-03-04T00:00:00Z
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

FIELDS = ("sensor_id", "ts", "temperature_c", "humidity_pct", "battery_v", "site")
TEST_SITE = "test-bench"  # readings from the lab bench: batch_app.py drops them
# site -> (mean temperature °C, day/night swing °C, mean relative humidity %)
SITES: dict[str, tuple[float, float, float]] = {
    "warehouse-a": (18.0, 3.0, 45.0),
    "warehouse-b": (20.0, 2.0, 40.0),
    "cold-store": (4.0, 0.5, 85.0),
    "rooftop": (9.0, 7.0, 65.0),
}
BAD_KINDS = ("temperature", "no_sensor_id", "not_object", "dead_battery")
CSV_BAD_KINDS = ("temperature", "no_sensor_id", "dead_battery")  # a CSV row is never "not an object"
BATTERY_DRAIN_V_PER_READING = 0.0004
STREAM_BAD_KINDS = ("temperature", "unit", "sensor_id", "naive_ts", "humidity", "dead_battery")
LOCAL_TIME_SITES = frozenset({"warehouse-b", "rooftop"})  # their gateways write local time (CET)
CET = timezone(timedelta(hours=1))


@dataclass(frozen=True, slots=True)
class Sensor:
    sensor_id: str
    site: str
    battery_v: float  # at the first reading


def _sensors(rng: random.Random, count: int) -> list[Sensor]:
    """``count`` sensors; the last one in every twenty sits on the test bench."""
    names = list(SITES)
    sensors = []
    for number in range(1, count + 1):
        site = TEST_SITE if number % 20 == 0 else names[(number - 1) % len(names)]
        sensors.append(Sensor(f"S-{number:04d}", site, rng.uniform(2.9, 3.6)))
    return sensors


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _reading(rng: random.Random, sensor: Sensor, step: int, ts: datetime) -> dict[str, Any]:
    mean_c, swing_c, mean_rh = SITES.get(sensor.site, (24.0, 0.5, 35.0))
    hour = ts.hour + ts.minute / 60
    temperature = mean_c + swing_c * math.sin(2 * math.pi * (hour - 9) / 24) + rng.gauss(0, 0.4)
    humidity = min(99.0, max(5.0, mean_rh - 1.5 * (temperature - mean_c) + rng.gauss(0, 3)))
    return {
        "sensor_id": sensor.sensor_id,
        "ts": _iso(ts),
        "temperature_c": round(temperature, 2),
        "humidity_pct": round(humidity, 1),
        "battery_v": round(sensor.battery_v - BATTERY_DRAIN_V_PER_READING * step, 3),
        "site": sensor.site,
    }


def _spoil(rng: random.Random, reading: dict[str, Any], kind: str) -> Any:
    """The bad version of ``reading``: a dict, or any other JSON value for ``not_object``."""
    bad = dict(reading)
    if kind == "temperature":
        bad["temperature_c"] = rng.choice([-88.8, 127.5, 999.9])
    elif kind == "no_sensor_id":
        del bad["sensor_id"]
    elif kind == "dead_battery":
        bad["battery_v"] = 0.0
    else:
        return [reading["sensor_id"], reading["ts"], reading["temperature_c"]]
    return bad


def generate(
    rows: int,
    *,
    seed: int,
    bad_ratio: float = 0.0,
    start: datetime = datetime(2024, 3, 1, tzinfo=UTC),
    sensors: int = 40,
    interval_s: int = 300,
    bad_kinds: Sequence[str] = BAD_KINDS,
) -> list[Any]:
    """``rows`` readings (dicts; a bad row may be another JSON value), the same for a seed.

    Every sensor reports once per ``interval_s``, a second after the previous sensor, so
    (sensor_id, ts) is unique.
    """
    if rows < 0 or sensors < 1 or interval_s < 1:
        raise ValueError("rows must be >= 0, sensors and interval_s >= 1")
    if not 0.0 <= bad_ratio <= 1.0:
        raise ValueError(f"bad_ratio must be within 0..1, got {bad_ratio}")
    rng = random.Random(seed)  # noqa: S311 - sample data, not cryptography
    fleet = _sensors(rng, sensors)
    # Bad rows are never test-bench readings, which batch_app.py skips before looking at them:
    # so every bad row is quarantined and the quarantine count is exactly the bad count.
    candidates = [index for index in range(rows) if fleet[index % sensors].site != TEST_SITE]
    bad_count = round(rows * bad_ratio)
    if bad_count > len(candidates):
        raise ValueError(f"bad_ratio {bad_ratio} asks for {bad_count} bad rows, only {len(candidates)} can be bad")
    bad_rows = sorted(rng.sample(candidates, bad_count))
    kind_of = {row: bad_kinds[n % len(bad_kinds)] for n, row in enumerate(bad_rows)}
    out: list[Any] = []
    for index in range(rows):
        step, slot = divmod(index, sensors)
        ts = start + timedelta(seconds=step * interval_s + slot)
        reading = _reading(rng, fleet[slot], step, ts)
        out.append(_spoil(rng, reading, kind_of[index]) if index in kind_of else reading)
    return out


def _unit(sensor_id: str) -> str | None:
    """The unit a sensor reports in: every third °F, every seventh K, the rest °C (the odd
    ones leave ``unit`` out, which means °C)."""
    number = int(sensor_id.removeprefix("S-"))
    if number % 3 == 0:
        return "F"
    if number % 7 == 0:
        return "K"
    return None if number % 2 else "C"


def stream_message(reading: dict[str, Any], index: int) -> dict[str, Any]:
    """The envelope a gateway posts for ``reading``: the temperature in the sensor's own unit,
    ``ts`` in local time for some sites, and every eleventh sensor id in lower case."""
    ts = datetime.fromisoformat(reading["ts"])
    unit = _unit(reading["sensor_id"])
    celsius = reading["temperature_c"]
    temperature = celsius * 9 / 5 + 32 if unit == "F" else celsius + 273.15 if unit == "K" else celsius
    data: dict[str, Any] = {
        "sensor_id": reading["sensor_id"].lower() if index % 11 == 5 else reading["sensor_id"],
        "ts": ts.astimezone(CET).isoformat() if reading["site"] in LOCAL_TIME_SITES else reading["ts"],
        "temperature": round(temperature, 2),
    }
    if unit is not None:
        data["unit"] = unit
    data.update({k: reading[k] for k in ("humidity_pct", "battery_v", "site")})
    return {"id": f"{reading['sensor_id']}-{ts:%Y%m%dT%H%M%SZ}", "data": data}


def _spoil_message(rng: random.Random, data: dict[str, Any], kind: str) -> dict[str, Any]:
    bad = dict(data)
    if kind == "temperature":
        bad["temperature"], bad["unit"] = rng.choice([-60.0, 250.0, 999.9]), "F"
    elif kind == "unit":
        bad["unit"] = rng.choice(["X", "celsius"])
    elif kind == "sensor_id":
        bad["sensor_id"] = "sensor-" + data["sensor_id"][-2:]
    elif kind == "naive_ts":
        bad["ts"] = data["ts"][:19]  # the offset cut off
    elif kind == "humidity":
        bad["humidity_pct"] = rng.choice([-3.0, 120.5])
    else:
        bad["battery_v"] = 0.0
    return bad


def generate_stream(
    rows: int,
    *,
    seed: int,
    bad_ratio: float = 0.0,
    start: datetime = datetime(2024, 3, 4, tzinfo=UTC),
    sensors: int = 40,
    interval_s: int = 300,
) -> list[dict[str, Any]]:
    """``rows`` stream envelopes of :func:`generate`'s readings, ``round(rows * bad_ratio)``
    of them spoiled (never a test-bench one: ``stream_app.py`` would only skip it)."""
    readings = generate(rows, seed=seed, start=start, sensors=sensors, interval_s=interval_s)
    envelopes = [stream_message(reading, index) for index, reading in enumerate(readings)]
    rng = random.Random(seed)  # noqa: S311 - sample data, not cryptography
    candidates = [n for n, reading in enumerate(readings) if reading["site"] != TEST_SITE]
    bad_count = round(rows * bad_ratio)
    if bad_count > len(candidates):
        raise ValueError(f"bad_ratio {bad_ratio} asks for {bad_count} bad rows, only {len(candidates)} can be bad")
    for number, index in enumerate(sorted(rng.sample(candidates, bad_count))):
        kind = STREAM_BAD_KINDS[number % len(STREAM_BAD_KINDS)]
        envelopes[index]["data"] = _spoil_message(rng, envelopes[index]["data"], kind)
    return envelopes


def write(items: Sequence[Any], path: Path) -> None:
    """Write ``items`` as JSON Lines, or as CSV when ``path`` ends in ``.csv``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as out:
        if path.suffix == ".csv":
            writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(items)
        else:
            for item in items:
                out.write(json.dumps(item, separators=(",", ":")) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, required=True, help="number of readings")
    parser.add_argument("--out", type=Path, required=True, help="output file (.jsonl, or .csv)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (same seed, same file)")
    parser.add_argument("--bad-ratio", type=float, default=0.0, help="fraction of bad rows, 0..1")
    parser.add_argument("--start", default="2024-03-01T00:00:00Z", help="first timestamp (ISO, UTC)")
    parser.add_argument("--sensors", type=int, default=40, help="number of sensors")
    parser.add_argument("--interval-s", type=int, default=300, help="seconds between readings of a sensor")
    parser.add_argument("--stream", action="store_true", help="write stream envelopes (NDJSON) for stream_app.py")
    args = parser.parse_args(argv)
    start = datetime.fromisoformat(args.start)
    if start.tzinfo is None:
        parser.error("--start needs a UTC offset, e.g. 2024-03-01T00:00:00Z")
    if args.stream:
        envelopes = generate_stream(
            args.rows,
            seed=args.seed,
            bad_ratio=args.bad_ratio,
            start=start.astimezone(UTC),
            sensors=args.sensors,
            interval_s=args.interval_s,
        )
        write(envelopes, args.out)
        print(f"wrote {len(envelopes)} messages to {args.out}")
        return
    kinds = CSV_BAD_KINDS if args.out.suffix == ".csv" else BAD_KINDS
    items = generate(
        args.rows,
        seed=args.seed,
        bad_ratio=args.bad_ratio,
        start=start.astimezone(UTC),
        sensors=args.sensors,
        interval_s=args.interval_s,
        bad_kinds=kinds,
    )
    write(items, args.out)
    print(f"wrote {len(items)} rows to {args.out}")


if __name__ == "__main__":
    main()
