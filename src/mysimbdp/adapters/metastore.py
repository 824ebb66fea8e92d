"""The meta store: tenants, key hashes, files and their status history, runs, quarantine.

One implementation over :class:`SqlConnection` serves SQLite (default) and PostgreSQL.
Every status change of a file is appended to ``file_events`` in the same transaction.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from mysimbdp.adapters._metaschema import SCHEMA
from mysimbdp.adapters.metachunks import ChunkRegistry
from mysimbdp.adapters.metakeys import KeyRing
from mysimbdp.adapters.metanotify import NotificationOutbox
from mysimbdp.adapters.metaquality import QualityLedger
from mysimbdp.adapters.metaquarantine import QuarantineLedger
from mysimbdp.adapters.metastreams import StreamRegistry
from mysimbdp.adapters.secretbox import SecretBox
from mysimbdp.adapters.sql import SqlConnection
from mysimbdp.domain.qualitycounts import FileQuality
from mysimbdp.domain.records import FileRecord, QuarantinedRow, RunRecord, TenantRecord
from mysimbdp.domain.states import FINAL_FILE_STATES, FileStatus, RunStatus
from mysimbdp.errors import TenantError

_FILE_COLUMNS = (
    "id, tenant, name, sha256, size_bytes, format, status, received_at, updated_at, path, app, "
    "dataset, attempts, next_attempt_at, rows_total, rows_written, rows_rejected, rows_skipped, "
    "reasons, run_id, lease_owner"
)
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


def _file(row: Sequence[Any]) -> FileRecord:
    values = list(row)
    values[6] = FileStatus(values[6])
    values[18] = tuple(orjson.loads(values[18]))
    return FileRecord(*values)


class MetaStore:
    """Typed access to the platform's records. ``start()`` connects and creates tables.

    With ``secrets``, a tenant's ``coredms_url`` (a PostgreSQL role's password) is sealed in
    the table and opened when read; without (a tool reading records), it is kept as given."""

    def __init__(self, url: str, secrets: SecretBox | None = None) -> None:
        self._db = SqlConnection(url)
        self._secrets = secrets
        self.streams = StreamRegistry(self._db)
        self.chunks = ChunkRegistry(self._db)
        self.notifications = NotificationOutbox(self._db)
        self.quality = QualityLedger(self._db)
        self.quarantine = QuarantineLedger(self._db)
        self.keys = KeyRing(self._db)

    @property
    def dialect(self) -> str:
        return self._db.dialect

    def start(self) -> None:
        self._db.connect()
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)

    def close(self) -> None:
        self._db.close()

    # -- tenants ---------------------------------------------------------------------------
    def add_tenant(self, tenant: TenantRecord, key_hash: str) -> None:
        with self._db.transaction():
            if self._db.one("SELECT 1 FROM tenants WHERE id = ?", (tenant.id,)):
                raise TenantError(f"tenant {tenant.id!r} already exists; remove it first")
            self._db.execute(
                "INSERT INTO tenants (id, created_at, profile_yaml, bundle_dir, coredms_url) VALUES (?, ?, ?, ?, ?)",
                (
                    tenant.id,
                    tenant.created_at,
                    tenant.profile_yaml,
                    tenant.bundle_dir,
                    self._secrets.seal(tenant.coredms_url) if self._secrets else tenant.coredms_url,
                ),
            )
            self._db.execute(
                "INSERT INTO api_keys (key_hash, tenant, created_at) VALUES (?, ?, ?)",
                (key_hash, tenant.id, tenant.created_at),
            )

    def get_tenant(self, tenant_id: str) -> TenantRecord:
        row = self._db.one(
            "SELECT id, created_at, profile_yaml, bundle_dir, coredms_url FROM tenants WHERE id = ?",
            (tenant_id,),
        )
        if row is None:
            raise TenantError(f"tenant {tenant_id!r} does not exist; add it with 'mysimbdp tenant add'")
        return self._tenant(row)

    def list_tenants(self) -> list[TenantRecord]:
        rows = self._db.query("SELECT id, created_at, profile_yaml, bundle_dir, coredms_url FROM tenants ORDER BY id")
        return [self._tenant(row) for row in rows]

    def _tenant(self, row: Sequence[Any]) -> TenantRecord:
        tenant = TenantRecord(*row)
        if self._secrets is None:
            return tenant
        url = self._secrets.open(tenant.coredms_url, f"tenant {tenant.id!r}: coredms URL")
        return dataclasses.replace(tenant, coredms_url=url)

    def remove_tenant(self, tenant_id: str) -> None:
        with self._db.transaction():
            self.get_tenant(tenant_id)
            self._db.execute("DELETE FROM api_keys WHERE tenant = ?", (tenant_id,))
            self._db.execute("DELETE FROM tenants WHERE id = ?", (tenant_id,))

    def set_profile(self, tenant_id: str, profile_yaml: str) -> None:
        """Replace the tenant's profile (its bundle directory was replaced already)."""
        if not self._db.execute("UPDATE tenants SET profile_yaml = ? WHERE id = ?", (profile_yaml, tenant_id)):
            raise TenantError(f"tenant {tenant_id!r} does not exist")

    def tenant_for_key(self, key_hash: str) -> str | None:
        """The tenant of a working key (a rotated-out key works until its grace ends)."""
        return self.keys.tenant_for(key_hash)

    # -- files -----------------------------------------------------------------------------
    def quota_usage(self, tenant: str, since: float) -> tuple[int, int]:
        """Accepted files and bytes of ``tenant`` received since ``since`` (epoch s)."""
        row = self._db.one(
            "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM files WHERE tenant = ? "
            "AND received_at >= ? AND status NOT IN (?, ?)",
            (tenant, since, FileStatus.REJECTED, FileStatus.DUPLICATE),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def accepted_with_sha(self, tenant: str, sha256: str) -> FileRecord | None:
        """An earlier file of ``tenant`` with this content that was not rejected or failed."""
        rows = self._db.query(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE tenant = ? AND sha256 = ? "
            "AND status NOT IN (?, ?, ?) ORDER BY received_at LIMIT 1",
            (tenant, sha256, FileStatus.REJECTED, FileStatus.DUPLICATE, FileStatus.FAILED),
        )
        return _file(rows[0]) if rows else None

    def insert_file(
        self, f: FileRecord, detail: dict[str, Any] | None = None, *, quality: FileQuality | None = None
    ) -> None:
        """Insert a new file record (and its ``quality``, in the same transaction)."""
        with self._db.transaction():
            if quality is not None:
                self.quality.record_file(quality)
            self._db.execute(
                f"INSERT INTO files ({_FILE_COLUMNS}) VALUES ({', '.join('?' * 21)})",
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

    def latest_file_named(self, tenant: str, name: str, since: float) -> FileRecord | None:
        """The newest record of ``tenant``'s file ``name`` received at or after ``since``."""
        rows = self._db.query(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE tenant = ? AND name = ? AND received_at >= ? "
            "ORDER BY received_at DESC LIMIT 1",
            (tenant, name, since),
        )
        return _file(rows[0]) if rows else None

    def get_file(self, file_id: str) -> FileRecord | None:
        rows = self._db.query(f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ?", (file_id,))
        return _file(rows[0]) if rows else None

    def file_events(self, file_id: str) -> list[tuple[float, str, dict[str, Any]]]:
        rows = self._db.query("SELECT at, status, detail FROM file_events WHERE file_id = ? ORDER BY at", (file_id,))
        return [(float(at), str(status), orjson.loads(detail)) for at, status, detail in rows]

    def list_files(
        self,
        tenant: str | None = None,
        statuses: Iterable[FileStatus] | None = None,
        limit: int = 1000,
    ) -> list[FileRecord]:
        sql = f"SELECT {_FILE_COLUMNS} FROM files WHERE 1 = 1"
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
        return [_file(row) for row in self._db.query(sql, params)]

    def runnable(self, now: float, per_tenant: int = 64) -> list[FileRecord]:
        """Staged files, and retries whose backoff has passed: the oldest ``per_tenant`` of
        each tenant, so one tenant's long queue never hides another tenant's file."""
        rows = self._db.query(
            f"SELECT {_FILE_COLUMNS} FROM (SELECT *, ROW_NUMBER() OVER "
            "(PARTITION BY tenant ORDER BY received_at, id) AS rank FROM files "
            "WHERE status = ? OR (status = ? AND next_attempt_at <= ?)) AS q "
            "WHERE rank <= ? ORDER BY received_at, id",
            (FileStatus.STAGED, FileStatus.RETRY, now, per_tenant),
        )
        return [_file(row) for row in rows]

    def claim(self, file_id: str, owner: str, ttl_s: float, run_id: str) -> bool:
        """Take a runnable file under a lease; False if another manager was faster."""
        now = time.time()
        return self.set_status(
            file_id,
            FileStatus.RUNNING,
            {"owner": owner, "run_id": run_id},
            expect=(FileStatus.STAGED, FileStatus.RETRY),
            lease_owner=owner,
            lease_expires_at=now + ttl_s,
            run_id=run_id,
        )

    def renew_leases(self, owner: str, ttl_s: float) -> None:
        self._db.execute(
            "UPDATE files SET lease_expires_at = ? WHERE lease_owner = ? AND status = ?",
            (time.time() + ttl_s, owner, FileStatus.RUNNING),
        )

    def expired_leases(self, now: float) -> list[FileRecord]:
        rows = self._db.query(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE status = ? AND lease_expires_at < ?",
            (FileStatus.RUNNING, now),
        )
        return [_file(row) for row in rows]

    def count_unfinished(self, tenant: str | None = None) -> int:
        finals = sorted(FINAL_FILE_STATES)
        sql = f"SELECT COUNT(*) FROM files WHERE status NOT IN ({', '.join('?' * len(finals))})"
        params: list[Any] = list(finals)
        if tenant is not None:
            sql += " AND tenant = ?"
            params.append(tenant)
        row = self._db.one(sql, params)
        return int(row[0]) if row else 0

    # -- runs and quarantine ---------------------------------------------------------------
    def start_run(self, run: RunRecord) -> None:
        self._db.execute(
            "INSERT INTO runs (id, file_id, tenant, app, attempt, started_at) VALUES (?, ?, ?, ?, ?, ?)",
            (run.id, run.file_id, run.tenant, run.app, run.attempt, run.started_at),
        )

    def finish_run(self, run: RunRecord) -> None:
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

    def list_runs(self, tenant: str | None = None, limit: int = 1000) -> list[RunRecord]:
        sql = (
            "SELECT id, file_id, tenant, app, attempt, started_at, status, ended_at, exit_code, "
            "rows_written, rows_rejected, bytes_read, peak_rss_bytes, error, stderr_tail FROM runs"
        )
        params: list[Any] = []
        if tenant is not None:
            sql += " WHERE tenant = ?"
            params.append(tenant)
        sql += " ORDER BY started_at LIMIT ?"
        params.append(limit)
        runs = []
        for row in self._db.query(sql, params):
            values = list(row)
            values[6] = RunStatus(values[6]) if values[6] else None
            runs.append(RunRecord(*values))
        return runs

    def add_quarantine(self, rows: Sequence[QuarantinedRow]) -> None:
        """Record rejected rows; a row already recorded for the same file and line is kept."""
        now = time.time()
        self._db.executemany(
            "INSERT INTO quarantine (tenant, file_id, run_id, line, raw, reason, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(r.tenant, r.file_id, r.run_id, r.line, r.raw, r.reason, now) for r in rows],
        )

    def list_quarantine(
        self, tenant: str, limit: int = 100, offset: int = 0, *, file_id: str | None = None
    ) -> list[QuarantinedRow]:
        """A tenant's quarantined rows (of one file if ``file_id``), oldest first."""
        where, params = (
            ("tenant = ?", [tenant]) if file_id is None else ("tenant = ? AND file_id = ?", [tenant, file_id])
        )
        rows = self._db.query(
            f"SELECT tenant, file_id, run_id, line, raw, reason FROM quarantine WHERE {where} "
            "ORDER BY at, file_id, line LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [QuarantinedRow(*row) for row in rows]

    def count_quarantine(self, tenant: str, *, file_id_prefix: str = "") -> int:
        """The tenant's quarantined rows (of files whose id starts with ``file_id_prefix``,
        e.g. ``stream:`` for what stream apps quarantined)."""
        row = self._db.one(
            "SELECT COUNT(*) FROM quarantine WHERE tenant = ? AND substr(file_id, 1, ?) = ?",
            (tenant, len(file_id_prefix), file_id_prefix),
        )
        return int(row[0]) if row else 0

    # -- heartbeats ------------------------------------------------------------------------
    def beat(self, component: str, owner: str) -> None:
        self._db.execute(
            "INSERT INTO heartbeats (component, owner, at) VALUES (?, ?, ?) "
            "ON CONFLICT (component) DO UPDATE SET owner = excluded.owner, at = excluded.at",
            (component, owner, time.time()),
        )

    def clear_beat(self, component: str, owner: str) -> None:
        self._db.execute("DELETE FROM heartbeats WHERE component = ? AND owner = ?", (component, owner))

    def alive(self, component: str, max_age_s: float) -> bool:
        row = self._db.one("SELECT at FROM heartbeats WHERE component = ?", (component,))
        return row is not None and time.time() - float(row[0]) <= max_age_s

    # -- report ----------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only aggregate queries for reports (services.report builds them)."""
        return self._db.query(sql, params)
