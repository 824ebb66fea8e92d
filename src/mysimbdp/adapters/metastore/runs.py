"""The meta store's batch app runs (``runs``): one row per attempt of an app on a file or chunk.

``RUN_COLUMNS`` and ``run_record`` are the one way to read a ``runs`` row, here and in
``metastore.history``. Reached through the ``MetaStore`` facade (``MetaStore.runs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mysimbdp.adapters.metastore.sql import SqlConnection
from mysimbdp.domain.records import RunRecord
from mysimbdp.domain.states import RunStatus

__all__ = ["RUN_COLUMNS", "RunLedger", "run_record"]

RUN_COLUMNS = (
    "id, file_id, tenant, app, attempt, started_at, status, ended_at, exit_code, "
    "rows_written, rows_rejected, bytes_read, peak_rss_bytes, error, stderr_tail"
)


def run_record(row: Sequence[Any]) -> RunRecord:
    """A :class:`RunRecord` from a row of ``RUN_COLUMNS`` (a run not finished has no status)."""
    values = list(row)
    values[6] = RunStatus(values[6]) if values[6] else None
    return RunRecord(*values)


class RunLedger:
    """Runs: recorded when they start, completed when they end."""

    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    def start(self, run: RunRecord) -> None:
        self._db.execute(
            "INSERT INTO runs (id, file_id, tenant, app, attempt, started_at) VALUES (?, ?, ?, ?, ?, ?)",
            (run.id, run.file_id, run.tenant, run.app, run.attempt, run.started_at),
        )

    def finish(self, run: RunRecord) -> None:
        self._db.execute(
            "UPDATE runs SET status = ?, ended_at = ?, exit_code = ?, rows_written = ?, "
            "rows_rejected = ?, bytes_read = ?, peak_rss_bytes = ?, error = ?, stderr_tail = ? "
            "WHERE id = ?",
            (
                run.status,
                run.ended_at,
                run.exit_code,
                run.rows_written,
                run.rows_rejected,
                run.bytes_read,
                run.peak_rss_bytes,
                run.error,
                run.stderr_tail,
                run.id,
            ),
        )

    def end_lost(self, run_id: str, ended_at: float, error: str) -> None:
        """End run ``run_id`` as transient (its chunk goes again) if nothing ended it: its worker
        died or lost the platform, so nobody else will."""
        self._db.execute(
            "UPDATE runs SET status = ?, ended_at = ?, error = ? WHERE id = ? AND status IS NULL",
            (RunStatus.TRANSIENT, ended_at, error, run_id),
        )

    def find(self, tenant: str | None = None, limit: int = 1000) -> list[RunRecord]:
        """Runs (of ``tenant``), oldest first, at most ``limit``."""
        sql = f"SELECT {RUN_COLUMNS} FROM runs"
        params: list[Any] = []
        if tenant is not None:
            sql += " WHERE tenant = ?"
            params.append(tenant)
        sql += " ORDER BY started_at LIMIT ?"
        params.append(limit)
        return [run_record(row) for row in self._db.query(sql, params)]
