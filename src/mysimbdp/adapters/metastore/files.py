"""The meta store's file records (``files``) and their status history (``file_events``).

Every status change of a file is appended to ``file_events`` in the same transaction.
``FILE_COLUMNS`` and ``file_record`` are the one way to read a ``files`` row, here and in
``metastore.history``. Reached through the ``MetaStore`` facade (``MetaStore.files``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from mysimbdp.adapters.metastore.quality import QualityLedger
from mysimbdp.adapters.metastore.sql import SqlConnection
from mysimbdp.domain.qualitycounts import FileQuality
from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.states import FINAL_FILE_STATES, FileStatus
from mysimbdp.errors import StoreError

__all__ = ["FILE_COLUMNS", "FileLedger", "file_record"]

FILE_COLUMNS = (
    "id, tenant, name, sha256, size_bytes, format, status, received_at, updated_at, path, app, "
    "dataset, attempts, next_attempt_at, rows_total, rows_written, rows_rejected, rows_skipped, "
    "reasons, run_id, lease_owner"
)
# a decision's record over the record of its upload while checked (FileLedger.insert)
_OVERWRITE = ", ".join(f"{c} = excluded.{c}" for c in FILE_COLUMNS.split(", ")[1:])
_UPDATABLE = frozenset(
    {
        "path",
        "app",
        "dataset",
        "attempts",
        "next_attempt_at",
        "rows_total",
        "rows_written",
        "rows_rejected",
        "rows_skipped",
        "reasons",
        "run_id",
        "lease_owner",
        "lease_expires_at",
    }
)


def file_record(row: Sequence[Any]) -> FileRecord:
    """A :class:`FileRecord` from a row of ``FILE_COLUMNS``."""
    values = list(row)
    values[6] = FileStatus(values[6])
    values[18] = tuple(orjson.loads(values[18]))
    return FileRecord(*values)


class FileLedger:
    """Files: their record, the status they move through, the leases of running ones."""

    def __init__(self, db: SqlConnection, quality: QualityLedger) -> None:
        self._db = db
        self._quality = quality

    def quota_usage(self, tenant: str, since: float, *, besides: str = "") -> tuple[int, int]:
        """Files and bytes of ``tenant`` received since ``since`` (epoch s) and not refused:
        accepted, or uploaded and still being checked; ``besides``: a file id left out (the
        file whose own checks ask)."""
        row = self._db.one(
            "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM files WHERE tenant = ? "
            "AND received_at >= ? AND status NOT IN (?, ?) AND id <> ?",
            (tenant, since, FileStatus.REJECTED, FileStatus.DUPLICATE, besides),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def accepted_with_sha(self, tenant: str, sha256: str) -> FileRecord | None:
        """An earlier file of ``tenant`` with this content that was accepted and did not fail
        (an upload still being checked is not one yet)."""
        refused = (FileStatus.REJECTED, FileStatus.DUPLICATE, FileStatus.FAILED, FileStatus.CHECKING)
        rows = self._db.query(
            f"SELECT {FILE_COLUMNS} FROM files WHERE tenant = ? AND sha256 = ? "
            "AND status NOT IN (?, ?, ?, ?) ORDER BY received_at LIMIT 1",
            (tenant, sha256, *refused),
        )
        return file_record(rows[0]) if rows else None

    def insert(
        self, f: FileRecord, detail: dict[str, Any] | None = None, *, quality: FileQuality | None = None
    ) -> None:
        """Insert a new file record (and its ``quality``, in the same transaction). The record of
        an upload still being checked (``checking``) is the one record a file's decision may
        overwrite; any other record under the same id is a :class:`StoreError`."""
        with self._db.transaction():
            if quality is not None:
                self._quality.record_file(quality)
            written = self._db.execute(
                f"INSERT INTO files ({FILE_COLUMNS}) VALUES ({', '.join('?' * 21)}) ON CONFLICT (id) DO UPDATE SET "
                f"{_OVERWRITE} WHERE files.status = '{FileStatus.CHECKING}'",
                (
                    f.id,
                    f.tenant,
                    f.name,
                    f.sha256,
                    f.size_bytes,
                    f.format,
                    f.status,
                    f.received_at,
                    f.updated_at,
                    f.path,
                    f.app,
                    f.dataset,
                    f.attempts,
                    f.next_attempt_at,
                    f.rows_total,
                    f.rows_written,
                    f.rows_rejected,
                    f.rows_skipped,
                    orjson.dumps(list(f.reasons)).decode(),
                    f.run_id,
                    f.lease_owner,
                ),
            )
            if written != 1:
                raise StoreError(f"tenant {f.tenant!r}: file {f.id} ({f.name!r}): rule file_id: already recorded")
            self._event(f.id, f.status, detail or {"name": f.name, "size_bytes": f.size_bytes})

    def set_status(
        self,
        file_id: str,
        status: FileStatus,
        detail: dict[str, Any] | None = None,
        *,
        expect: Iterable[FileStatus] | None = None,
        **fields: Any,
    ) -> bool:
        """Move a file to ``status`` (and update ``fields``); with ``expect``, only from those
        states. Returns whether the row changed. Records the event in the same transaction."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        if "reasons" in fields:
            fields["reasons"] = orjson.dumps(list(fields["reasons"])).decode()
        assignments = ", ".join(f"{name} = ?" for name in ("status", "updated_at", *fields))
        sql = f"UPDATE files SET {assignments} WHERE id = ?"
        params: list[Any] = [status, time.time(), *fields.values(), file_id]
        if expect is not None:
            states = list(expect)
            sql += f" AND status IN ({', '.join('?' * len(states))})"
            params.extend(states)
        with self._db.transaction():
            changed = self._db.execute(sql, params) > 0
            if changed:
                self._event(file_id, status, detail or {})
        return changed

    def _event(self, file_id: str, status: FileStatus, detail: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO file_events (file_id, at, status, detail) VALUES (?, ?, ?, ?)",
            (file_id, time.time(), status, orjson.dumps(detail, default=str).decode()),
        )

    def latest_named(self, tenant: str, name: str, since: float) -> FileRecord | None:
        """The newest record of ``tenant``'s file ``name`` received at or after ``since``."""
        rows = self._db.query(
            f"SELECT {FILE_COLUMNS} FROM files WHERE tenant = ? AND name = ? AND received_at >= ? "
            "ORDER BY received_at DESC LIMIT 1",
            (tenant, name, since),
        )
        return file_record(rows[0]) if rows else None

    def get(self, file_id: str) -> FileRecord | None:
        rows = self._db.query(f"SELECT {FILE_COLUMNS} FROM files WHERE id = ?", (file_id,))
        return file_record(rows[0]) if rows else None

    def events(self, file_id: str) -> list[tuple[float, str, dict[str, Any]]]:
        """A file's status history ``(at, status, detail)``, oldest first."""
        rows = self._db.query("SELECT at, status, detail FROM file_events WHERE file_id = ? ORDER BY at", (file_id,))
        return [(float(at), str(status), orjson.loads(detail)) for at, status, detail in rows]

    def find(
        self,
        tenant: str | None = None,
        statuses: Iterable[FileStatus] | None = None,
        limit: int = 1000,
    ) -> list[FileRecord]:
        """Files (of ``tenant``, in ``statuses``), oldest first, at most ``limit``."""
        sql = f"SELECT {FILE_COLUMNS} FROM files WHERE 1 = 1"
        params: list[Any] = []
        if tenant is not None:
            sql += " AND tenant = ?"
            params.append(tenant)
        if statuses is not None:
            states = list(statuses)
            sql += f" AND status IN ({', '.join('?' * len(states))})"
            params.extend(states)
        sql += " ORDER BY received_at, id LIMIT ?"
        params.append(limit)
        return [file_record(row) for row in self._db.query(sql, params)]

    def runnable(self, now: float, per_tenant: int = 64) -> list[FileRecord]:
        """Staged files, and retries whose backoff has passed: the oldest ``per_tenant`` of
        each tenant, so one tenant's long queue never hides another tenant's file."""
        rows = self._db.query(
            f"SELECT {FILE_COLUMNS} FROM (SELECT *, ROW_NUMBER() OVER "
            "(PARTITION BY tenant ORDER BY received_at, id) AS rank FROM files "
            "WHERE status = ? OR (status = ? AND next_attempt_at <= ?)) AS q "
            "WHERE rank <= ? ORDER BY received_at, id",
            (FileStatus.STAGED, FileStatus.RETRY, now, per_tenant),
        )
        return [file_record(row) for row in rows]

    def claim(self, file_id: str, owner: str, ttl_s: float, run_id: str) -> bool:
        """Take a runnable file under a lease; False if another manager was faster. Idempotent
        by ``run_id``: a claim whose commit went through but whose answer was lost (a
        failover) and that is sent again finds the file claimed by itself, and takes it."""
        now = time.time()
        if self.set_status(
            file_id,
            FileStatus.RUNNING,
            {"owner": owner, "run_id": run_id},
            expect=(FileStatus.STAGED, FileStatus.RETRY),
            lease_owner=owner,
            lease_expires_at=now + ttl_s,
            run_id=run_id,
        ):
            return True
        now_held = self.get(file_id)
        return now_held is not None and (now_held.status, now_held.run_id, now_held.lease_owner) == (
            FileStatus.RUNNING,
            run_id,
            owner,
        )

    def renew_leases(self, owner: str, ttl_s: float) -> None:
        self._db.execute(
            "UPDATE files SET lease_expires_at = ? WHERE lease_owner = ? AND status = ?",
            (time.time() + ttl_s, owner, FileStatus.RUNNING),
        )

    def expired_leases(self, now: float) -> list[FileRecord]:
        rows = self._db.query(
            f"SELECT {FILE_COLUMNS} FROM files WHERE status = ? AND lease_expires_at < ?",
            (FileStatus.RUNNING, now),
        )
        return [file_record(row) for row in rows]

    def count_unfinished(self, tenant: str | None = None) -> int:
        finals = sorted(FINAL_FILE_STATES)
        sql = f"SELECT COUNT(*) FROM files WHERE status NOT IN ({', '.join('?' * len(finals))})"
        params: list[Any] = list(finals)
        if tenant is not None:
            sql += " AND tenant = ?"
            params.append(tenant)
        row = self._db.one(sql, params)
        return int(row[0]) if row else 0
