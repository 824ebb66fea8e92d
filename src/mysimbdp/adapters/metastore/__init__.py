"""The meta store: tenants, key hashes, files and their status history, runs, quarantine.

One implementation over :class:`SqlConnection` (``metastore.sql``) serves SQLite (default)
and PostgreSQL. Every status change of a file is appended to ``file_events`` in the same
transaction.

``MetaStore`` is the facade callers hold. Each group of tables has a module of its own,
reached as an attribute: ``tenants`` and ``keys`` (``metastore.tenants``), ``files``
(``metastore.files``: files and their events), ``runs``, ``chunks``, ``streams``,
``quality``, ``quarantine``, ``notifications``, ``heartbeats``, ``uploads``, ``worker_tokens`` and
``worker_claims`` (``metastore.workers``: remote chunk workers) and ``history`` (read-only,
for the history API and ``/metrics``). The methods below are the facade's short forms of
the common calls. The modules import one another, never this one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mysimbdp.adapters.metastore._schema import SCHEMA
from mysimbdp.adapters.metastore.chunks import ChunkRegistry
from mysimbdp.adapters.metastore.files import FileLedger
from mysimbdp.adapters.metastore.heartbeats import Heartbeats
from mysimbdp.adapters.metastore.history import MetaHistory
from mysimbdp.adapters.metastore.notifications import NotificationOutbox
from mysimbdp.adapters.metastore.quality import QualityLedger
from mysimbdp.adapters.metastore.quarantine import QuarantineLedger
from mysimbdp.adapters.metastore.runs import RunLedger
from mysimbdp.adapters.metastore.sql import SqlConnection
from mysimbdp.adapters.metastore.streams import StreamRegistry
from mysimbdp.adapters.metastore.tenants import KeyRing, TenantRegistry
from mysimbdp.adapters.metastore.uploads import UploadLedger
from mysimbdp.adapters.metastore.workers import WorkerClaims, WorkerTokens
from mysimbdp.adapters.secretbox import SecretBox
from mysimbdp.domain.qualitycounts import FileQuality
from mysimbdp.domain.records import FileRecord, QuarantinedRow, RunRecord, TenantRecord
from mysimbdp.domain.states import FileStatus

__all__ = ["MetaStore"]


class MetaStore:
    """Typed access to the platform's records. ``start()`` connects and creates tables.

    With ``secrets``, a tenant's ``coredms_url`` (a PostgreSQL role's password) is sealed in
    the table and opened when read; without (a tool reading records), it is kept as given."""

    def __init__(self, url: str, secrets: SecretBox | None = None) -> None:
        self._db = SqlConnection(url)
        self.tenants = TenantRegistry(self._db, secrets)
        self.keys = KeyRing(self._db)
        self.quality = QualityLedger(self._db)
        self.files = FileLedger(self._db, self.quality)
        self.runs = RunLedger(self._db)
        self.streams = StreamRegistry(self._db)
        self.chunks = ChunkRegistry(self._db)
        self.notifications = NotificationOutbox(self._db)
        self.quarantine = QuarantineLedger(self._db)
        self.heartbeats = Heartbeats(self._db)
        self.uploads = UploadLedger(self._db)
        self.history = MetaHistory(self._db, self.quarantine)
        self.worker_tokens = WorkerTokens(self._db)
        self.worker_claims = WorkerClaims(self._db)

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
        self.tenants.add(tenant, key_hash)

    def get_tenant(self, tenant_id: str) -> TenantRecord:
        return self.tenants.get(tenant_id)

    def list_tenants(self) -> list[TenantRecord]:
        return self.tenants.all()

    def remove_tenant(self, tenant_id: str) -> None:
        self.tenants.remove(tenant_id)

    def set_profile(self, tenant_id: str, profile_yaml: str) -> None:
        """Replace the tenant's profile (its bundle directory was replaced already)."""
        self.tenants.set_profile(tenant_id, profile_yaml)

    def tenant_for_key(self, key_hash: str) -> str | None:
        """The tenant of a working key (a rotated-out key works until its grace ends)."""
        return self.keys.tenant_for(key_hash)

    # -- files -----------------------------------------------------------------------------
    def quota_usage(self, tenant: str, since: float, *, besides: str = "") -> tuple[int, int]:
        """Files and bytes of ``tenant`` received since ``since`` (epoch s), accepted or still
        being checked, but for file ``besides``."""
        return self.files.quota_usage(tenant, since, besides=besides)

    def accepted_with_sha(self, tenant: str, sha256: str) -> FileRecord | None:
        """An earlier file of ``tenant`` with this content, accepted and not failed."""
        return self.files.accepted_with_sha(tenant, sha256)

    def insert_file(
        self, f: FileRecord, detail: dict[str, Any] | None = None, *, quality: FileQuality | None = None
    ) -> None:
        """Insert a new file record (and its ``quality``, in the same transaction), or decide
        an upload's ``checking`` record under the same id."""
        self.files.insert(f, detail, quality=quality)

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
        return self.files.set_status(file_id, status, detail, expect=expect, **fields)

    def latest_file_named(self, tenant: str, name: str, since: float) -> FileRecord | None:
        """The newest record of ``tenant``'s file ``name`` received at or after ``since``."""
        return self.files.latest_named(tenant, name, since)

    def get_file(self, file_id: str) -> FileRecord | None:
        return self.files.get(file_id)

    def file_events(self, file_id: str) -> list[tuple[float, str, dict[str, Any]]]:
        return self.files.events(file_id)

    def list_files(
        self,
        tenant: str | None = None,
        statuses: Iterable[FileStatus] | None = None,
        limit: int = 1000,
    ) -> list[FileRecord]:
        return self.files.find(tenant, statuses, limit)

    def runnable(self, now: float, per_tenant: int = 64) -> list[FileRecord]:
        """Staged files, and retries whose backoff has passed: the oldest ``per_tenant`` of
        each tenant, so one tenant's long queue never hides another tenant's file."""
        return self.files.runnable(now, per_tenant)

    def claim(self, file_id: str, owner: str, ttl_s: float, run_id: str) -> bool:
        """Take a runnable file under a lease; False if another manager was faster."""
        return self.files.claim(file_id, owner, ttl_s, run_id)

    def renew_leases(self, owner: str, ttl_s: float) -> None:
        self.files.renew_leases(owner, ttl_s)

    def expired_leases(self, now: float) -> list[FileRecord]:
        return self.files.expired_leases(now)

    def count_unfinished(self, tenant: str | None = None) -> int:
        return self.files.count_unfinished(tenant)

    # -- runs and quarantine ---------------------------------------------------------------
    def start_run(self, run: RunRecord) -> None:
        self.runs.start(run)

    def finish_run(self, run: RunRecord) -> None:
        self.runs.finish(run)

    def list_runs(self, tenant: str | None = None, limit: int = 1000) -> list[RunRecord]:
        return self.runs.find(tenant, limit)

    def add_quarantine(self, rows: Sequence[QuarantinedRow]) -> None:
        """Record rejected rows; a row already recorded for the same file and line is kept."""
        self.quarantine.add(rows)

    def list_quarantine(
        self, tenant: str, limit: int = 100, offset: int = 0, *, file_id: str | None = None
    ) -> list[QuarantinedRow]:
        """A tenant's quarantined rows (of one file if ``file_id``), oldest first."""
        return self.quarantine.oldest(tenant, limit, offset, file_id=file_id)

    def count_quarantine(self, tenant: str, *, file_id_prefix: str = "") -> int:
        """The tenant's quarantined rows (of files whose id starts with ``file_id_prefix``,
        e.g. ``stream:`` for what stream apps quarantined)."""
        return self.quarantine.count_prefixed(tenant, file_id_prefix)

    # -- heartbeats ------------------------------------------------------------------------
    def beat(self, component: str, owner: str) -> None:
        self.heartbeats.beat(component, owner)

    def clear_beat(self, component: str, owner: str) -> None:
        self.heartbeats.clear(component, owner)

    def alive(self, component: str, max_age_s: float) -> bool:
        return self.heartbeats.alive(component, max_age_s)
