"""The meta store's uploads: idempotency keys of ``POST /v1/files`` and tus uploads in progress.

``upload_keys`` maps a tenant's ``Idempotency-Key`` to the file the first POST made (and the
HTTP status it answered); a key is reserved (file id '') while its first POST runs.
``tus_uploads`` holds one row per resumable upload: its tenant, file name, declared length,
where its bytes are and when it expires; the bytes received so far are the partial file's size
on disk, never a column. Reached through the ``MetaStore`` facade (``MetaStore.uploads``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mysimbdp.adapters.metastore.sql import SqlConnection

__all__ = ["IdempotentAnswer", "TusUpload", "UploadLedger"]

_TUS_COLUMNS = "id, tenant, name, length_bytes, path, created_at, expires_at, file_id, status_code"


@dataclass(frozen=True)
class IdempotentAnswer:
    file_id: str  # '' while the first request with the key runs
    status_code: int
    created_at: float


@dataclass(frozen=True)
class TusUpload:
    id: str
    tenant: str
    name: str
    length_bytes: int
    path: str  # the partial file (hidden, in the tenant's inbox)
    created_at: float
    expires_at: float
    file_id: str = ""  # set once complete: the file its fetch recorded
    status_code: int = 0  # the answer of its completion


def _tus(row: Sequence[Any]) -> TusUpload:
    return TusUpload(
        str(row[0]), str(row[1]), str(row[2]), int(row[3]), str(row[4]), float(row[5]), float(row[6]),
        str(row[7]), int(row[8]),
    )  # fmt: skip


class UploadLedger:
    """Idempotency keys and tus uploads, per tenant."""

    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    # -- Idempotency-Key -----------------------------------------------------------------
    def reserve_key(self, tenant: str, key: str, now: float, stale_before: float) -> IdempotentAnswer | None:
        """Reserve ``key`` for a first request: None when reserved now (also when an earlier
        reservation older than ``stale_before`` was left by a crash); else the key's answer
        (file id '' while its first request still runs)."""
        with self._db.transaction():
            row = self._db.one(
                "SELECT file_id, status_code, created_at FROM upload_keys WHERE tenant = ? AND key = ?", (tenant, key)
            )
            if row is not None and (row[0] or float(row[2]) >= stale_before):
                return IdempotentAnswer(str(row[0]), int(row[1]), float(row[2]))
            self._db.execute("DELETE FROM upload_keys WHERE tenant = ? AND key = ?", (tenant, key))
            self._db.execute(
                "INSERT INTO upload_keys (tenant, key, file_id, status_code, created_at) VALUES (?, ?, '', 0, ?)",
                (tenant, key, now),
            )
        return None

    def settle_key(self, tenant: str, key: str, file_id: str, status_code: int) -> None:
        """Record the answer of the first request with ``key``."""
        self._db.execute(
            "UPDATE upload_keys SET file_id = ?, status_code = ? WHERE tenant = ? AND key = ?",
            (file_id, status_code, tenant, key),
        )

    def release_key(self, tenant: str, key: str) -> None:
        """Forget a reservation whose request stored nothing (refused, cut off): a retry runs again."""
        self._db.execute("DELETE FROM upload_keys WHERE tenant = ? AND key = ? AND file_id = ''", (tenant, key))

    # -- tus uploads ---------------------------------------------------------------------
    def add_tus(self, upload: TusUpload) -> None:
        self._db.execute(
            f"INSERT INTO tus_uploads ({_TUS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                upload.id,
                upload.tenant,
                upload.name,
                upload.length_bytes,
                upload.path,
                upload.created_at,
                upload.expires_at,
                upload.file_id,
                upload.status_code,
            ),
        )

    def tus(self, tenant: str, upload_id: str) -> TusUpload | None:
        """``tenant``'s upload ``upload_id`` (another tenant's is None, as if it did not exist)."""
        row = self._db.one(f"SELECT {_TUS_COLUMNS} FROM tus_uploads WHERE id = ? AND tenant = ?", (upload_id, tenant))
        return _tus(row) if row else None

    def finish_tus(self, upload_id: str, file_id: str, status_code: int) -> None:
        self._db.execute(
            "UPDATE tus_uploads SET file_id = ?, status_code = ? WHERE id = ?", (file_id, status_code, upload_id)
        )

    def remove_tus(self, upload_id: str) -> None:
        self._db.execute("DELETE FROM tus_uploads WHERE id = ?", (upload_id,))

    def unfinished_tus_bytes(self, tenant: str, now: float) -> int:
        """The declared lengths of ``tenant``'s unfinished, unexpired uploads (held against its quota)."""
        row = self._db.one(
            "SELECT COALESCE(SUM(length_bytes), 0) FROM tus_uploads WHERE tenant = ? AND file_id = '' "
            "AND expires_at > ?",
            (tenant, now),
        )
        return int(row[0]) if row else 0

    def expired_tus(self, now: float) -> list[TusUpload]:
        """Every tenant's uploads past their expiry (finished ones too: their rows go)."""
        rows = self._db.query(f"SELECT {_TUS_COLUMNS} FROM tus_uploads WHERE expires_at <= ?", (now,))
        return [_tus(row) for row in rows]
