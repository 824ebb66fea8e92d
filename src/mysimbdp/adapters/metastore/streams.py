"""The meta store's stream records: how many instances each tenant stream should have
(set by the operator, or on a stream's first message), and what each instance did."""

from __future__ import annotations

import json
import time

from mysimbdp.adapters.metastore.sql import SqlConnection
from mysimbdp.domain.records import ScalingRecord, StreamInstance, StreamTarget
from mysimbdp.domain.scaling import Report

_REPORT_COLUMNS = (
    "at, tenant, stream, app, instance, period_s, messages, records, bytes, errors, "
    "latency_avg_ms, latency_p95_ms, backlog, latency_p50_ms, latency_n, latency_sum_ms, latency_counts"
)
_INSTANCE_COLUMNS = "id, tenant, stream, app, state, pid, started_at, updated_at, restarts, exit_detail, stderr_tail"


def _report(row: tuple[object, ...]) -> Report:
    values = dict(zip(_REPORT_COLUMNS.replace(" ", "").split(","), row, strict=True))
    values["latency_counts"] = counts_of(str(values["latency_counts"]))
    return Report(**values)  # type: ignore[arg-type]  # the columns are the fields, typed by the schema


def counts_of(text: str) -> tuple[int, ...]:
    """``latency_counts`` as stored: comma-separated integers ("" for none)."""
    return tuple(int(n) for n in text.split(",")) if text else ()


class StreamRegistry:
    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    def set_target(self, tenant: str, stream: str, app: str, instances: int) -> None:
        self._db.execute(
            "INSERT INTO stream_targets (tenant, stream, app, instances, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (tenant, stream, app) DO UPDATE SET instances = excluded.instances, "
            "updated_at = excluded.updated_at",
            (tenant, stream, app, instances, time.time()),
        )

    def ensure_target(self, tenant: str, stream: str, app: str, instances: int) -> bool:
        """Record a target unless one exists (a stream's first message); True if it was new."""
        return (
            self._db.execute(
                "INSERT INTO stream_targets (tenant, stream, app, instances, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant, stream, app) DO NOTHING",
                (tenant, stream, app, instances, time.time()),
            )
            > 0
        )

    def targets(self, tenant: str | None = None) -> list[StreamTarget]:
        where, params = ("WHERE tenant = ?", (tenant,)) if tenant else ("", ())
        rows = self._db.query(
            f"SELECT tenant, stream, app, instances FROM stream_targets {where} ORDER BY tenant, stream, app", params
        )
        return [StreamTarget(*row) for row in rows]

    def record_decision(self, decision: ScalingRecord) -> None:
        self._db.execute(
            "INSERT INTO stream_decisions (at, tenant, stream, app, from_instances, to_instances, reason, inputs) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                decision.at,
                decision.tenant,
                decision.stream,
                decision.app,
                decision.from_instances,
                decision.to_instances,
                decision.reason,
                json.dumps(decision.inputs, sort_keys=True),
            ),
        )

    def decisions(self, tenant: str | None = None, *, since: float = 0.0) -> list[ScalingRecord]:
        """The scaling decisions carried out since ``since`` (epoch s), oldest first."""
        where, params = ("WHERE at >= ? AND tenant = ?", (since, tenant)) if tenant else ("WHERE at >= ?", (since,))
        rows = self._db.query(
            "SELECT at, tenant, stream, app, from_instances, to_instances, reason, inputs "
            f"FROM stream_decisions {where} ORDER BY at",
            params,
        )
        return [
            ScalingRecord(at, tenant_, stream, app, int(was), int(to), reason, json.loads(inputs))
            for at, tenant_, stream, app, was, to, reason, inputs in rows
        ]

    def record_reports(self, reports: list[Report]) -> None:
        """Keep the instances' reports (what the dashboard, metrics and reports chart)."""
        self._db.executemany(
            f"INSERT INTO stream_reports ({_REPORT_COLUMNS}) VALUES ({', '.join('?' * 17)})",
            [
                (
                    r.at,
                    r.tenant,
                    r.stream,
                    r.app,
                    r.instance,
                    r.period_s,
                    r.messages,
                    r.records,
                    r.bytes,
                    r.errors,
                    r.latency_avg_ms,
                    r.latency_p95_ms,
                    r.backlog,
                    r.latency_p50_ms,
                    r.latency_n,
                    r.latency_sum_ms,
                    ",".join(map(str, r.latency_counts)),
                )
                for r in reports
            ],
        )

    def reports(self, tenant: str | None = None, *, since: float = 0.0, limit: int = 100_000) -> list[Report]:
        """The instances' reports since ``since`` (epoch s), oldest first."""
        where, params = ("WHERE at >= ? AND tenant = ?", (since, tenant)) if tenant else ("WHERE at >= ?", (since,))
        rows = self._db.query(
            f"SELECT {_REPORT_COLUMNS} FROM stream_reports {where} ORDER BY at LIMIT ?", (*params, limit)
        )
        return [_report(row) for row in rows]

    def record_instance(self, instance: StreamInstance) -> None:
        self._db.execute(
            f"INSERT INTO stream_instances ({_INSTANCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET state = excluded.state, pid = excluded.pid, "
            "updated_at = excluded.updated_at, restarts = excluded.restarts, "
            "exit_detail = excluded.exit_detail, stderr_tail = excluded.stderr_tail",
            (
                instance.id,
                instance.tenant,
                instance.stream,
                instance.app,
                instance.state,
                instance.pid,
                instance.started_at,
                instance.updated_at,
                instance.restarts,
                instance.exit_detail,
                instance.stderr_tail,
            ),
        )

    def instances(self, tenant: str | None = None, *, include_stopped: bool = False) -> list[StreamInstance]:
        clauses, params = [], []
        if tenant:
            clauses.append("tenant = ?")
            params.append(tenant)
        if not include_stopped:
            clauses.append("state <> 'stopped'")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.query(
            f"SELECT {_INSTANCE_COLUMNS} FROM stream_instances {where} ORDER BY tenant, stream, app, id", tuple(params)
        )
        return [StreamInstance(*row) for row in rows]

    def mark_all_stopped(self) -> None:
        """On a manager's start: instances of an earlier run are gone (they die with it)."""
        self._db.execute(
            "UPDATE stream_instances SET state = 'stopped', pid = 0, updated_at = ? WHERE state <> 'stopped'",
            (time.time(),),
        )
