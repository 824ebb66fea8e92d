"""Deterministic device data for tenant "sensors": the device register and the status feed.

The fleet is :mod:`generate`'s (40 sensors, each twentieth on the lab's test bench), plus
three spares on the shelf and three retired sensors that the register still lists.

``register`` writes the register as the asset-management spreadsheet exports it (CSV, one
row per device, ``REGISTER_FIELDS``), hand-typed and untidy the way such sheets are: model
names spelled three ways (``TH-200``, ``th200``, ``TH 200``), firmware with or without a
``v``, dates as ISO or as ``DD/MM/YYYY``, ``updated_at`` in the office's local time
(+01:00). ``BAD_ROWS`` spoil three rows on purpose, each quarantined (a sensor id the
profile's pattern refuses, a model nobody makes, a calibration offset no sensor should
carry)::

    python generate_devices.py register --out data/devices_2024-03-01.csv

``status`` writes the heartbeats the sensor gateways post to stream ``status``, one per
sensor every 15 minutes (NDJSON envelopes, see :func:`status_message`);
``--bad-ratio R`` spoils exactly ``round(messages * R)`` of them (never a test-bench one,
which ``status_app.py`` skips), cycling through ``STATUS_BAD_KINDS``::

    python generate_devices.py status --reports 5 --out data/stream/status.ndjson --seed 11 --bad-ratio 0.03
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from generate import BATTERY_DRAIN_V_PER_READING, TEST_SITE, Sensor, _sensors

REGISTER_FIELDS = (
    "sensor_id",
    "site",
    "model",
    "serial",
    "firmware",
    "installed_on",
    "calibrated_on",
    "offset_c",
    "battery_type",
    "status",
    "updated_at",
)
OFFICE_TIME = timezone(timedelta(hours=1))  # the register is kept in Central European Time
MODEL_OF_SITE = {"rooftop": "TH-210", TEST_SITE: "TH-300"}  # the rest: TH-200
SPELLINGS = ("{family}-{number}", "{family_lower}{number}", "{family} {number}")
FIRMWARE = ("2.4.1", "2.4.1", "2.3.0", "2.2.5", "2.4.0")
SPARES, RETIRED = 3, 3
# line in the CSV (2 = the first device) -> how it is spoiled
BAD_ROWS = {14: "model", 18: "sensor_id", 27: "offset"}
# site -> mean signal at its gateway (dBm): the cold store's walls and the roof's distance cost
RSSI_OF_SITE = {"warehouse-a": -58, "warehouse-b": -64, "cold-store": -76, "rooftop": -82}
STATUS_BAD_KINDS = ("rssi", "errors", "battery", "naive_ts", "sensor_id", "uptime")


def _day(rng: random.Random, first: date, last: date) -> date:
    return first + timedelta(days=rng.randrange((last - first).days + 1))


def _written(day: date, index: int) -> str:
    """How a hand-typed date looks: ISO, or every third one European ``DD/MM/YYYY``."""
    return f"{day:%d/%m/%Y}" if index % 3 == 2 else day.isoformat()


def _spelled(model: str, index: int) -> str:
    family, number = model.split("-")
    spelling = SPELLINGS[index % len(SPELLINGS)]
    return spelling.format(family=family, family_lower=family.lower(), number=number)


def register(*, seed: int = 5, sensors: int = 40) -> list[dict[str, str]]:
    """The register's rows (CSV strings), the same for a seed."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not cryptography
    fleet = [(sensor.sensor_id, sensor.site, "active") for sensor in _sensors(rng, sensors)]
    spares = range(sensors + 1, sensors + SPARES + 1)
    retired = range(spares.stop, spares.stop + RETIRED)
    extra = [(f"S-{n:04d}", "", "spare") for n in spares] + [(f"S-{n:04d}", "warehouse-a", "retired") for n in retired]
    rows = []
    for index, (sensor_id, site, state) in enumerate(fleet + extra):
        installed = _day(rng, date(2021, 3, 1), date(2023, 6, 30))
        calibrated = _day(rng, date(2023, 1, 15), date(2024, 2, 15))
        updated = datetime(2024, 2, 1, 8, tzinfo=OFFICE_TIME) + timedelta(minutes=rng.randrange(28 * 24 * 60))
        row = {
            "sensor_id": sensor_id,
            "site": site,
            "model": _spelled(MODEL_OF_SITE.get(site, "TH-200"), index),
            "serial": f"TH{rng.randrange(10**6):06d}",
            "firmware": ("v" if index % 4 == 1 else "") + rng.choice(FIRMWARE),
            "installed_on": "" if state == "spare" else _written(installed, index),
            "calibrated_on": _written(calibrated, index),
            "offset_c": f"{rng.uniform(-0.6, 0.6):+.2f}",
            "battery_type": "CR123A" if index % 5 else "2xAA",
            "status": state if index % 7 else state.upper(),
            "updated_at": updated.isoformat(),
        }
        kind = BAD_ROWS.get(index + 2)
        if kind == "model":
            row["model"] = "TH-900"
        elif kind == "sensor_id":
            row["sensor_id"] = sensor_id.replace("S-00", "S-")
        elif kind == "offset":
            row["offset_c"] = "+3.40"
        rows.append(row)
    return rows


def status_message(sensor: Sensor, ts: datetime, rng: random.Random, report: int) -> dict[str, Any]:
    """The envelope a gateway posts for one heartbeat of ``sensor``: its battery as the
    readings have it, a signal that depends on how far its site is from the gateway, its
    uptime (every eleventh sensor rebooted just before the first heartbeat) and its error
    codes (every thirteenth reports E07, every seventeenth E12 and E03 now and then)."""
    number = int(sensor.sensor_id.removeprefix("S-"))
    errors = ["E07"] if number % 13 == 0 else ["E12", "E03"] if number % 17 == 0 and report % 2 else []
    data = {
        "sensor_id": sensor.sensor_id,
        "site": sensor.site,
        "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "battery_v": round(sensor.battery_v - BATTERY_DRAIN_V_PER_READING * report * 3, 3),
        "rssi_dbm": round(RSSI_OF_SITE.get(sensor.site, -50) + rng.gauss(0, 4)),
        "uptime_s": report * 900 + (number * 7919 % 400_000 + 3600 if number % 11 else rng.randrange(60)),
        "errors": errors,
    }
    return {"id": f"{sensor.sensor_id}-status-{ts:%Y%m%dT%H%M%SZ}", "data": data}


def _spoil(rng: random.Random, data: dict[str, Any], kind: str) -> dict[str, Any]:
    bad = dict(data)
    if kind == "rssi":
        bad["rssi_dbm"] = rng.choice([5, -180])
    elif kind == "errors":
        bad["errors"] = rng.choice([["E1x"], "E07"])
    elif kind == "battery":
        bad["battery_v"] = -1.0
    elif kind == "naive_ts":
        bad["ts"] = data["ts"][:19]
    elif kind == "sensor_id":
        bad["sensor_id"] = "sensor-" + data["sensor_id"][-2:]
    else:
        bad["uptime_s"] = -30
    return bad


def status(
    reports: int,
    *,
    seed: int,
    bad_ratio: float = 0.0,
    start: datetime = datetime(2024, 3, 4, tzinfo=UTC),
    sensors: int = 40,
    interval_s: int = 900,
) -> list[dict[str, Any]]:
    """``reports`` heartbeats of every sensor (``reports * sensors`` envelopes), one second apart
    per sensor, ``round(messages * bad_ratio)`` of them spoiled; the same for a seed."""
    if not 0.0 <= bad_ratio <= 1.0:
        raise ValueError(f"bad_ratio must be within 0..1, got {bad_ratio}")
    rng = random.Random(seed)  # noqa: S311 - sample data, not cryptography
    fleet = _sensors(rng, sensors)
    envelopes = [
        status_message(sensor, start + timedelta(seconds=report * interval_s + slot), rng, report)
        for report in range(reports)
        for slot, sensor in enumerate(fleet)
    ]
    candidates = [n for n, e in enumerate(envelopes) if e["data"]["site"] != TEST_SITE]
    bad_count = round(len(envelopes) * bad_ratio)
    if bad_count > len(candidates):
        raise ValueError(f"bad_ratio {bad_ratio} asks for {bad_count} bad messages, only {len(candidates)} can be bad")
    for number, index in enumerate(sorted(rng.sample(candidates, bad_count))):
        kind = STATUS_BAD_KINDS[number % len(STATUS_BAD_KINDS)]
        envelopes[index]["data"] = _spoil(rng, envelopes[index]["data"], kind)
    return envelopes


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    kinds = parser.add_subparsers(dest="kind", required=True)
    reg = kinds.add_parser("register", help="the device register (CSV)")
    reg.add_argument("--out", type=Path, required=True)
    reg.add_argument("--seed", type=int, default=5)
    feed = kinds.add_parser("status", help="the gateways' status heartbeats (NDJSON envelopes)")
    feed.add_argument("--out", type=Path, required=True)
    feed.add_argument("--reports", type=int, required=True, help="heartbeats per sensor")
    feed.add_argument("--seed", type=int, default=11)
    feed.add_argument("--bad-ratio", type=float, default=0.0, help="fraction of spoiled messages, 0..1")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="") as out:
        if args.kind == "register":
            rows = register(seed=args.seed)
            writer = csv.DictWriter(out, fieldnames=REGISTER_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            print(f"wrote {len(rows)} devices to {args.out}")
            return
        envelopes = status(args.reports, seed=args.seed, bad_ratio=args.bad_ratio)
        for envelope in envelopes:
            out.write(json.dumps(envelope, separators=(",", ":")) + "\n")
        print(f"wrote {len(envelopes)} messages to {args.out}")


if __name__ == "__main__":
    main()
