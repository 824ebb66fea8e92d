"""coredms on SQLite, the platform side: the admin that makes and deletes tenant database files
(``coredms.sqlite`` holds the store)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mysimbdp.adapters.coredms.base import namespace
from mysimbdp.errors import StoreError

__all__ = ["SqliteAdmin"]

_SUFFIXES = ("", "-wal", "-shm", "-journal", "-lock")


class SqliteAdmin:
    """Creates ``<directory>/<tenant>/<tenant>.db`` per tenant: a directory of its own, the only
    part of the home the tenant's sandboxed apps may write (SQLite makes ``-wal``, ``-shm`` and
    the writers' ``-lock`` beside the database). The constructor does no IO."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory).absolute()

    def _path(self, tenant: str) -> Path:
        name = namespace(tenant)
        return self.directory / name / f"{name}.db"

    def provision(self, tenant: str) -> str:
        path = self._path(tenant)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            conn = sqlite3.connect(path, timeout=30.0)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            finally:
                conn.close()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"coredms: tenant {tenant!r}: cannot create {path}: {exc}") from exc
        return f"sqlite:///{path}"

    def deprovision(self, tenant: str) -> None:
        path = self._path(tenant)
        try:
            for suffix in _SUFFIXES:
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            if path.parent.is_dir():
                path.parent.rmdir()
        except OSError as exc:
            raise StoreError(f"coredms: tenant {tenant!r}: cannot delete {path}: {exc}") from exc

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own connection."""
