"""Read-only history of the meta store, for the history API and ``/metrics``.

Portable SQL (SQLite and PostgreSQL) over the meta store's :class:`SqlConnection`; nothing
here writes. Quarantined rows are the quarantine ledger's (``metastore.quarantine``), asked
here so that the history API has one object to ask. Reached as ``MetaStore.history``.
Every listing takes ``tenant`` (None: every tenant) and pages newest first. Aggregates
return plain tuples keyed by tenant (and a small fixed label set), never by file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from mysimbdp.adapters.metastore.files import FILE_COLUMNS, file_record
from mysimbdp.adapters.metastore.quarantine import QuarantineLedger
from mysimbdp.adapters.metastore.runs import RUN_COLUMNS, run_record
from mysimbdp.adapters.metastore.sql import SqlConnection
from mysimbdp.adapters.metastore.streams import counts_of
from mysimbdp.domain.records import FileRecord, QuarantinedRow, RunRecord, ScalingRecord
from mysimbdp.domain.scaling import LATENCY_BOUNDS_MS

__all__ = ["MetaHistory"]


def _where(clauses: list[tuple[str, Any]], tenant: str | None) -> tuple[str, list[Any]]:
    """``WHERE`` from ``(sql with one ?, value)`` pairs whose value is not None (tenant first)."""
    pairs = [("tenant = ?", tenant), *clauses]
    kept = [(sql, value) for sql, value in pairs if value is not None]
    if not kept:
        return "", []
    return "WHERE " + " AND ".join(sql for sql, _ in kept), [value for _, value in kept]


class MetaHistory:
    """What happened, per tenant: files, their events and runs, quarantine, decisions."""

    def __init__(self, db: SqlConnection, quarantine: QuarantineLedger) -> None:
        self._db = db
        self._quarantine = quarantine

    def _page(
        self, table: str, columns: str, where: str, params: list[Any], order: str, limit: int, offset: int
    ) -> tuple[list[tuple[Any, ...]], int]:
        rows = self._db.query(
            f"SELECT {columns} FROM {table} {where} ORDER BY {order} LIMIT ? OFFSET ?", (*params, limit, offset)
        )
        total = self._db.query(f"SELECT COUNT(*) FROM {table} {where}", params)[0][0]
        return rows, int(total)

    # -- files ---------------------------------------------------------------------------
    def files(
        self, tenant: str | None, *, status: str | None = None, since: float | None = None, limit: int, offset: int
    ) -> tuple[list[FileRecord], int]:
        """Files newest first (received at or after ``since``), and how many match in all."""
        where, params = _where([("status = ?", status), ("received_at >= ?", since)], tenant)
        rows, total = self._page("files", FILE_COLUMNS, where, params, "received_at DESC, id DESC", limit, offset)
        return [file_record(row) for row in rows], total

    def file(self, tenant: str | None, file_id: str) -> FileRecord | None:
        """One file, None when it does not exist or belongs to another tenant than ``tenant``."""
        where, params = _where([("id = ?", file_id)], tenant)
        rows = self._db.query(f"SELECT {FILE_COLUMNS} FROM files {where}", params)
        return file_record(rows[0]) if rows else None

    def events(self, file_id: str) -> list[tuple[float, str, dict[str, Any]]]:
        rows = self._db.query("SELECT at, status, detail FROM file_events WHERE file_id = ? ORDER BY at", (file_id,))
        return [(float(at), str(status), orjson.loads(detail)) for at, status, detail in rows]

    def file_runs(self, file_id: str) -> list[RunRecord]:
        rows = self._db.query(f"SELECT {RUN_COLUMNS} FROM runs WHERE file_id = ? ORDER BY started_at", (file_id,))
        return [run_record(row) for row in rows]

    # -- runs ----------------------------------------------------------------------------
    def runs(
        self, tenant: str | None, *, status: str | None = None, file_id: str | None = None, limit: int, offset: int
    ) -> tuple[list[RunRecord], int]:
        where, params = _where([("status = ?", status), ("file_id = ?", file_id)], tenant)
        rows, total = self._page("runs", RUN_COLUMNS, where, params, "started_at DESC, id DESC", limit, offset)
        return [run_record(row) for row in rows], total

    # -- quarantine ----------------------------------------------------------------------
    def quarantine(
        self,
        tenant: str | None,
        *,
        kind: str | None = None,
        file_id: str | None = None,
        limit: int,
        offset: int,
    ) -> tuple[list[QuarantinedRow], int]:
        """Quarantined rows newest first, and how many match; ``kind`` "batch" (files) or
        "stream" (stream apps)."""
        return self._quarantine.newest(tenant, kind=kind, file_id=file_id, limit=limit, offset=offset)

    # -- scaling decisions ---------------------------------------------------------------
    def decisions(
        self, tenant: str | None, *, stream: str | None = None, since: float | None = None, limit: int, offset: int
    ) -> tuple[list[ScalingRecord], int]:
        where, params = _where([("stream = ?", stream), ("at >= ?", since)], tenant)
        columns = "at, tenant, stream, app, from_instances, to_instances, reason, inputs"
        rows, total = self._page("stream_decisions", columns, where, params, "at DESC", limit, offset)
        decisions = [
            ScalingRecord(float(at), t, s, app, int(was), int(to), reason, orjson.loads(inputs))
            for at, t, s, app, was, to, reason, inputs in rows
        ]
        return decisions, total

    # -- aggregates for /metrics ---------------------------------------------------------
    def tenants(self) -> list[str]:
        return [str(row[0]) for row in self._db.query("SELECT id FROM tenants ORDER BY id")]

    def files_by_status(self) -> list[tuple[str, str, int, int, int]]:
        """``(tenant, status, files, bytes, rows written)`` per tenant and file status."""
        rows = self._db.query(
            "SELECT tenant, status, COUNT(*), COALESCE(SUM(size_bytes), 0), COALESCE(SUM(rows_written), 0) "
            "FROM files GROUP BY tenant, status ORDER BY tenant, status"
        )
        return [(str(t), str(s), int(n), int(b), int(w)) for t, s, n, b, w in rows]

    def quarantine_counts(self) -> list[tuple[str, str, int]]:
        """``(tenant, kind, rows)``: quarantined rows of files ("batch") and of stream apps."""
        return self._quarantine.counts_by_kind()

    def run_durations(self, bounds_s: Sequence[float]) -> list[tuple[str, str, int, float, list[int]]]:
        """Finished runs ``(tenant, status, count, sum of seconds, cumulative count per bound)``."""
        duration = "(ended_at - started_at)"
        buckets = ", ".join(f"SUM(CASE WHEN {duration} <= ? THEN 1 ELSE 0 END)" for _ in bounds_s)
        rows = self._db.query(
            f"SELECT tenant, status, COUNT(*), COALESCE(SUM({duration}), 0){', ' if buckets else ''}{buckets} "
            "FROM runs WHERE ended_at IS NOT NULL AND status IS NOT NULL "
            "GROUP BY tenant, status ORDER BY tenant, status",
            tuple(bounds_s),
        )
        return [(str(r[0]), str(r[1]), int(r[2]), float(r[3]), [int(v or 0) for v in r[4:]]) for r in rows]

    def stream_totals(self) -> list[tuple[str, str, int, int, int, int]]:
        """``(tenant, stream, reports, messages, records, bytes)`` summed over the instances' reports."""
        rows = self._db.query(
            "SELECT tenant, stream, COUNT(*), COALESCE(SUM(messages), 0), COALESCE(SUM(records), 0), "
            "COALESCE(SUM(bytes), 0) FROM stream_reports GROUP BY tenant, stream ORDER BY tenant, stream"
        )
        return [(str(t), str(s), int(n), int(m), int(r), int(b)) for t, s, n, m, r, b in rows]

    def latest_reports(self) -> list[tuple[str, str, float, float, float, int, float]]:
        """Per tenant stream, its newest report: ``(tenant, stream, at, latency avg ms, p95 ms,
        backlog, p50 ms)``."""
        rows = self._db.query(
            "SELECT r.tenant, r.stream, r.at, r.latency_avg_ms, r.latency_p95_ms, r.backlog, r.latency_p50_ms "
            "FROM stream_reports r "
            "JOIN (SELECT tenant, stream, MAX(at) AS at FROM stream_reports GROUP BY tenant, stream) m "
            "ON r.tenant = m.tenant AND r.stream = m.stream AND r.at = m.at ORDER BY r.tenant, r.stream, r.instance"
        )
        latest: dict[tuple[str, str], tuple[str, str, float, float, float, int, float]] = {}
        for t, s, at, avg, p95, backlog, p50 in rows:  # two reports at the same instant: the first instance's
            latest.setdefault((t, s), (str(t), str(s), float(at), float(avg), float(p95), int(backlog), float(p50)))
        return list(latest.values())

    def message_latencies(self) -> list[tuple[str, str, int, float, list[int]]]:
        """Per tenant stream, the instances' per-message latency histograms added up:
        ``(tenant, stream, messages, sum of ms, cumulative count per LATENCY_BOUNDS_MS)``."""
        rows = self._db.query(
            "SELECT tenant, stream, latency_n, latency_sum_ms, latency_counts FROM stream_reports "
            "WHERE latency_n > 0 ORDER BY tenant, stream"
        )
        totals: dict[tuple[str, str], tuple[int, float, list[int]]] = {}
        for tenant, stream, n, total_ms, text in rows:
            counts = counts_of(str(text))
            if len(counts) != len(LATENCY_BOUNDS_MS):
                continue  # a report of an SDK with other bounds: not addable
            seen, sum_ms, cumulative = totals.get((str(tenant), str(stream)), (0, 0.0, [0] * len(counts)))
            totals[(str(tenant), str(stream))] = (
                seen + int(n),
                sum_ms + float(total_ms),
                [a + b for a, b in zip(cumulative, counts, strict=True)],
            )
        return [(t, s, n, total, cumulative) for (t, s), (n, total, cumulative) in totals.items()]

    def report_p95s(self, bounds_ms: Sequence[float]) -> list[tuple[str, str, int, float, list[int]]]:
        """Per tenant stream, the reports' p95 latencies as a histogram: ``(tenant, stream,
        reports, sum of p95 ms, cumulative count per bound)``."""
        buckets = ", ".join("SUM(CASE WHEN latency_p95_ms <= ? THEN 1 ELSE 0 END)" for _ in bounds_ms)
        rows = self._db.query(
            f"SELECT tenant, stream, COUNT(*), COALESCE(SUM(latency_p95_ms), 0){', ' if buckets else ''}{buckets} "
            "FROM stream_reports GROUP BY tenant, stream ORDER BY tenant, stream",
            tuple(bounds_ms),
        )
        return [(str(r[0]), str(r[1]), int(r[2]), float(r[3]), [int(v or 0) for v in r[4:]]) for r in rows]

    def instances(self) -> list[tuple[str, str, str, int]]:
        """``(tenant, stream, state, instances)`` of the stream apps' instances not stopped."""
        rows = self._db.query(
            "SELECT tenant, stream, state, COUNT(*) FROM stream_instances WHERE state <> 'stopped' "
            "GROUP BY tenant, stream, state ORDER BY tenant, stream, state"
        )
        return [(str(t), str(s), str(state), int(n)) for t, s, state, n in rows]

    def targets(self) -> list[tuple[str, str, int]]:
        """``(tenant, stream, instances)``: the target instance count, summed over the stream's apps."""
        rows = self._db.query(
            "SELECT tenant, stream, SUM(instances) FROM stream_targets GROUP BY tenant, stream ORDER BY tenant, stream"
        )
        return [(str(t), str(s), int(n)) for t, s, n in rows]

    def decision_counts(self) -> list[tuple[str, str, str, int]]:
        """``(tenant, stream, direction, decisions)``, direction "up" or "down"."""
        rows = self._db.query(
            "SELECT tenant, stream, CASE WHEN to_instances > from_instances THEN 'up' ELSE 'down' END AS direction, "
            "COUNT(*) FROM stream_decisions GROUP BY tenant, stream, direction ORDER BY tenant, stream, direction"
        )
        return [(str(t), str(s), str(d), int(n)) for t, s, d, n in rows]
