"""Tenants' API keys beyond the first: rotation with a grace period (``MetaStore.keys``).

A key's hash lives in ``api_keys`` (its first one is written with the tenant); a key that is
being rotated out has a row in ``api_key_expiry`` saying when it stops working. The expiry
sits in a table of its own so that meta stores made before rotation existed need no
migration: the schema is created ``IF NOT EXISTS`` at every start.
"""

from __future__ import annotations

import time

from mysimbdp.adapters.sql import SqlConnection
from mysimbdp.errors import TenantError

__all__ = ["KeyRing"]


class KeyRing:
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
