"""coredms: the tenant-isolated document store, behind two ports and two real backends.

``open_admin`` (platform side) provisions one namespace per tenant and returns a URL scoped
to it; ``open_store`` (apps, the SDK, ``mysimbdp query``) opens that URL. A dataset is one
table ``ds_<dataset>`` holding ``key`` (primary key), ``doc`` (JSON), ``source`` (the file
or run that wrote it) and ``ingested_at``. Writes are insert-if-absent, so replays are safe.

Backends: SQLite, one database file per tenant (``sqlite:///DIR``), and PostgreSQL, one
schema and one LOGIN role per tenant (``postgresql://user@host:port/db``). ``BACKENDS``
maps a URL scheme to the dotted name of its backend module, imported on first use: the
ports (``coredms.base``) never import a backend, and a backend imports only the ports.
"""

from __future__ import annotations

import importlib
from typing import cast
from urllib.parse import urlsplit

from mysimbdp.adapters.coredms.base import (
    DEFAULT_BUSY_TIMEOUT_S,
    Backend,
    CoreDmsAdmin,
    DocumentInvalid,
    DocumentStore,
    StoredRow,
    StoredTexts,
    sqlite_path,
)
from mysimbdp.errors import ConfigError

__all__ = [
    "BACKENDS",
    "CoreDmsAdmin",
    "DocumentInvalid",
    "DocumentStore",
    "StoredRow",
    "StoredTexts",
    "open_admin",
    "open_store",
    "sqlite_path",
]

BACKENDS = {
    "sqlite": "mysimbdp.adapters.coredms.sqlite",
    "postgresql": "mysimbdp.adapters.coredms.postgres",
    "postgres": "mysimbdp.adapters.coredms.postgres",
}


def _backend(url: str) -> Backend:
    """The backend module for ``url``'s scheme, imported now if it was not yet."""
    scheme = urlsplit(url).scheme
    if scheme not in BACKENDS:
        raise ConfigError(
            f"coredms URL scheme {scheme!r} is not supported; use sqlite:///DIR or postgresql://user@host:port/db"
        )
    return cast(Backend, importlib.import_module(BACKENDS[scheme]))


def open_admin(url: str, *, pg_prefix: str = "mysimbdp") -> CoreDmsAdmin:
    """The admin for ``url`` (``Settings.coredms_url``). Does no IO: it connects on first use."""
    return _backend(url).open_admin(url, pg_prefix=pg_prefix)


def open_store(scoped_url: str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> DocumentStore:
    """Connect to one tenant's namespace (the URL ``provision`` returned).

    ``busy_timeout_s``: how long a SQLite write waits for a lock held by another writer
    before :class:`StoreUnavailable`; for PostgreSQL, the connect timeout.
    Raises :class:`StoreUnavailable` when the store cannot be reached, :class:`StoreError`
    when the namespace does not exist.
    """
    return _backend(scoped_url).open_store(scoped_url, busy_timeout_s=busy_timeout_s)
