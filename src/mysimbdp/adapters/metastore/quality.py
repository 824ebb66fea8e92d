"""The meta store's data-quality records: each file's quality as fetchdata found it
(``file_quality``, one row per file) and each stream window's (``stream_quality``, one row
per instance report that checked records).

Their own tables rather than columns of ``files`` / ``stream_reports``: the schema is
``CREATE TABLE IF NOT EXISTS``, so a new table reaches an existing meta store where a new
column would not, and ``FileRecord`` and ``Report`` rows stay as every reader expects them.
Per-rule counts are JSON text (``{"qty.type": 3, "ragged": 1}``); the few rules of a profile
are added up in Python (``domain.qualitycounts.summarize``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from mysimbdp.adapters.metastore.sql import SqlConnection
from mysimbdp.domain.qualitycounts import FileQuality, QualityVerdict, WindowQuality
from mysimbdp.domain.scaling import Report

_FILE_COLUMNS = "file_id, tenant, at, rows_checked, rows_failed, failed_by_rule, max_bad_row_ratio, verdict"
_WINDOW_COLUMNS = "at, tenant, stream, app, instance, rows_checked, rows_failed, failed_by_rule"


def _counts(text: str) -> dict[str, int]:
    return {str(rule): int(rows) for rule, rows in orjson.loads(text).items()}


def _file(row: Sequence[Any]) -> FileQuality:
    file_id, tenant, at, checked, failed, by_rule, threshold, verdict = row
    return FileQuality(
        str(file_id),
        str(tenant),
        float(at),
        int(checked),
        int(failed),
        _counts(by_rule),
        float(threshold),
        QualityVerdict(verdict),
    )


def _window(row: Sequence[Any]) -> WindowQuality:
    at, tenant, stream, app, instance, checked, failed, by_rule = row
    return WindowQuality(
        float(at), str(tenant), str(stream), str(app), str(instance), int(checked), int(failed), _counts(by_rule)
    )


def _since(tenant: str | None, since: float) -> tuple[str, tuple[Any, ...]]:
    return ("WHERE at >= ? AND tenant = ?", (since, tenant)) if tenant else ("WHERE at >= ?", (since,))


class QualityLedger:
    """Records and reads files' and stream windows' quality (``MetaStore.quality``)."""

    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    # -- files -----------------------------------------------------------------------------
    def record_file(self, quality: FileQuality) -> None:
        """Keep a file's quality; a file has one (a second record of it is ignored).

        ``MetaStore.insert_file`` calls it inside the transaction that inserts the file."""
        self._db.execute(
            f"INSERT INTO file_quality ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                quality.file_id,
                quality.tenant,
                quality.at,
                quality.rows_checked,
                quality.rows_failed,
                orjson.dumps(quality.failed_by_rule).decode(),
                quality.max_bad_row_ratio,
                str(quality.verdict),
            ),
        )

    def file(self, file_id: str) -> FileQuality | None:
        rows = self._db.query(f"SELECT {_FILE_COLUMNS} FROM file_quality WHERE file_id = ?", (file_id,))
        return _file(rows[0]) if rows else None

    def files(self, tenant: str | None = None, *, since: float = 0.0) -> list[FileQuality]:
        """The quality of the files received since ``since`` (epoch s), oldest first."""
        where, params = _since(tenant, since)
        rows = self._db.query(f"SELECT {_FILE_COLUMNS} FROM file_quality {where} ORDER BY at, file_id", params)
        return [_file(row) for row in rows]

    # -- stream windows --------------------------------------------------------------------
    def record_windows(self, reports: Sequence[Report]) -> int:
        """Keep the quality of the reports whose instance checked records; returns how many."""
        rows = [
            (
                r.at,
                r.tenant,
                r.stream,
                r.app,
                r.instance,
                r.rows_checked,
                r.rows_failed,
                orjson.dumps(r.failed_by_rule).decode(),
            )
            for r in reports
            if r.rows_checked > 0
        ]
        self._db.executemany(f"INSERT INTO stream_quality ({_WINDOW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def windows(self, tenant: str | None = None, *, since: float = 0.0) -> list[WindowQuality]:
        """The stream windows' quality since ``since`` (epoch s), oldest first."""
        where, params = _since(tenant, since)
        rows = self._db.query(f"SELECT {_WINDOW_COLUMNS} FROM stream_quality {where} ORDER BY at", params)
        return [_window(row) for row in rows]
