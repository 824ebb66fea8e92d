"""The meta store's tenants (``tenants``) and their API keys (``api_keys``, ``api_key_expiry``).

``TenantRegistry`` holds each tenant's record and its first key, written together; with a
:class:`SecretBox`, a tenant's ``coredms_url`` (a PostgreSQL role's password) is sealed in
the table and opened when read. ``KeyRing`` (``MetaStore.keys``) holds the keys beyond the
first: rotation with a grace period.

A key's hash lives in ``api_keys`` (its first one is written with the tenant); a key that is
being rotated out has a row in ``api_key_expiry`` saying when it stops working. The expiry
sits in a table of its own so that meta stores made before rotation existed need no
migration: the schema is created ``IF NOT EXISTS`` at every start.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from mysimbdp.adapters.metastore.sql import SqlConnection
from mysimbdp.adapters.secretbox import SecretBox
from mysimbdp.domain.records import TenantRecord
from mysimbdp.errors import TenantError

__all__ = ["KeyRing", "TenantRegistry"]

_TENANT_COLUMNS = "id, created_at, profile_yaml, bundle_dir, coredms_url"


class TenantRegistry:
    """Tenants: added with their first key, read (their coredms URL opened), removed."""

    def __init__(self, db: SqlConnection, secrets: SecretBox | None = None) -> None:
        self._db = db
        self._secrets = secrets

    def add(self, tenant: TenantRecord, key_hash: str) -> None:
        with self._db.transaction():
            if self._db.one("SELECT 1 FROM tenants WHERE id = ?", (tenant.id,)):
                raise TenantError(f"tenant {tenant.id!r} already exists; remove it first")
            self._db.execute(
                f"INSERT INTO tenants ({_TENANT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
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

    def get(self, tenant_id: str) -> TenantRecord:
        row = self._db.one(f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE id = ?", (tenant_id,))
        if row is None:
            raise TenantError(f"tenant {tenant_id!r} does not exist; add it with 'mysimbdp tenant add'")
        return self._tenant(row)

    def all(self) -> list[TenantRecord]:
        """Every tenant, by id."""
        rows = self._db.query(f"SELECT {_TENANT_COLUMNS} FROM tenants ORDER BY id")
        return [self._tenant(row) for row in rows]

    def _tenant(self, row: Sequence[Any]) -> TenantRecord:
        tenant = TenantRecord(*row)
        if self._secrets is None:
            return tenant
        url = self._secrets.open(tenant.coredms_url, f"tenant {tenant.id!r}: coredms URL")
        return dataclasses.replace(tenant, coredms_url=url)

    def remove(self, tenant_id: str) -> None:
        with self._db.transaction():
            self.get(tenant_id)
            self._db.execute("DELETE FROM api_keys WHERE tenant = ?", (tenant_id,))
            self._db.execute("DELETE FROM tenants WHERE id = ?", (tenant_id,))

    def set_profile(self, tenant_id: str, profile_yaml: str) -> None:
        """Replace the tenant's profile (its bundle directory was replaced already)."""
        if not self._db.execute("UPDATE tenants SET profile_yaml = ? WHERE id = ?", (profile_yaml, tenant_id)):
            raise TenantError(f"tenant {tenant_id!r} does not exist")


class KeyRing:
    """Key hashes beyond a tenant's first, and when rotated-out keys stop working."""

    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    def tenant_for(self, key_hash: str, now: float | None = None) -> str | None:
        """The tenant of a key that works now (not past its expiry), else None."""
        row = self._db.one(
            "SELECT k.tenant, e.expires_at FROM api_keys k LEFT JOIN api_key_expiry e ON e.key_hash = k.key_hash "
            "WHERE k.key_hash = ?",
            (key_hash,),
        )
        if row is None:
            return None
        expires_at = row[1]
        if expires_at is not None and float(expires_at) <= (time.time() if now is None else now):
            return None
        return str(row[0])

    def expires_at(self, key_hash: str) -> float | None:
        """When a key being rotated out stops working; None for a key without an end."""
        row = self._db.one("SELECT expires_at FROM api_key_expiry WHERE key_hash = ?", (key_hash,))
        return None if row is None else float(row[0])

    def rotate(self, tenant: str, new_hash: str, grace_s: float) -> float:
        """Add ``new_hash`` for ``tenant``; every key it had before stops working after
        ``grace_s`` seconds (one already expiring earlier keeps its earlier time). Returns the
        moment the old keys stop working."""
        now = time.time()
        until = now + max(grace_s, 0.0)
        with self._db.transaction():
            if self._db.one("SELECT 1 FROM tenants WHERE id = ?", (tenant,)) is None:
                raise TenantError(f"tenant {tenant!r} does not exist")
            old = [str(h) for (h,) in self._db.query("SELECT key_hash FROM api_keys WHERE tenant = ?", (tenant,))]
            for key_hash in old:
                self._db.execute("DELETE FROM api_key_expiry WHERE key_hash = ? AND expires_at > ?", (key_hash, until))
                if self._db.one("SELECT 1 FROM api_key_expiry WHERE key_hash = ?", (key_hash,)) is None:
                    self._db.execute(
                        "INSERT INTO api_key_expiry (key_hash, expires_at) VALUES (?, ?)", (key_hash, until)
                    )
            self._db.execute(
                "INSERT INTO api_keys (key_hash, tenant, created_at) VALUES (?, ?, ?)", (new_hash, tenant, now)
            )
        self.purge_expired(now - 86_400)
        return until

    def purge_expired(self, before: float) -> None:
        """Forget keys that expired before ``before`` (a day after their end, so an audit of
        recent refusals still finds them)."""
        expired = "SELECT key_hash FROM api_key_expiry WHERE expires_at < ?"
        self._db.execute(f"DELETE FROM api_keys WHERE key_hash IN ({expired})", (before,))
        self._db.execute("DELETE FROM api_key_expiry WHERE expires_at < ?", (before,))
