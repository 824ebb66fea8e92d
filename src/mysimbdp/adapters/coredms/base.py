"""coredms: the ports every backend implements, and the helpers they share.

``DocumentStore`` is a handle on one tenant's namespace (apps, the SDK, ``mysimbdp
query``); ``CoreDmsAdmin`` (platform side) provisions one namespace per tenant and returns a
URL scoped to it; ``Backend`` is what a backend module provides to ``coredms.open_store``
and ``coredms.open_admin``. A dataset is one table ``ds_<dataset>`` holding ``key``
(primary key), ``doc`` (JSON), ``source`` (the file or run that wrote it) and
``ingested_at``. Writes are insert-if-absent, so replays are safe.

This module imports no backend; the backends (``coredms.sqlite``, ``coredms.postgres``)
import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from mysimbdp.domain.naming import dataset_problem, tenant_id_problem
from mysimbdp.errors import ConfigError, DocumentInvalid, StoreError, TenantError

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "Backend",
    "CoreDmsAdmin",
    "DocumentInvalid",
    "DocumentStore",
    "namespace",
    "sqlite_path",
    "table_name",
]

DEFAULT_BUSY_TIMEOUT_S = 30.0


class DocumentStore(Protocol):
    """A handle on ONE tenant's namespace: one connection, for one thread at a time."""

    # True when ``write`` mostly waits (a server works meanwhile) with the GIL released, so
    # that writing on a background thread overlaps the caller's work. SQLite does its work
    # in-process; its batch insert (one json_each statement) releases the GIL, but the
    # work is CPU on the same cores, and a background writer measured no faster in the
    # batch SDK, whose app processes keep every core busy already.
    overlaps_writes: bool

    def write(self, dataset: str, records: Sequence[tuple[str, bytes]], source: str) -> int:
        """Insert ``(key, JSON bytes)`` pairs whose key is absent, in one transaction.

        Creates the dataset on first use; returns how many rows were newly inserted.
        """
        ...

    def count(self, dataset: str) -> int:
        """Number of documents in ``dataset``; 0 for an unknown dataset."""
        ...

    def documents(self, dataset: str, *, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """Up to ``limit`` stored documents, ordered by key, skipping ``offset``.

        A number that a float or a 64-bit integer cannot hold (stored digit for digit)
        comes as an ``orjson.Fragment`` of its digits: ``orjson.dumps`` writes it back as
        it was sent (``domain.exactjson``)."""
        ...

    def datasets(self) -> list[str]:
        """The tenant's dataset names, sorted."""
        ...

    def close(self) -> None: ...


class CoreDmsAdmin(Protocol):
    """Platform side: create and drop tenant namespaces."""

    def provision(self, tenant: str) -> str:
        """Create (idempotently) the tenant's namespace; return its scoped URL."""
        ...

    def deprovision(self, tenant: str) -> None:
        """Drop the tenant's namespace and every document in it."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """What a backend module provides (``coredms.BACKENDS`` maps URL schemes to them)."""

    def open_store(self, scoped_url: str, *, busy_timeout_s: float) -> DocumentStore:
        """Connect to one tenant's namespace; see ``coredms.open_store``."""
        ...

    def open_admin(self, url: str, *, pg_prefix: str) -> CoreDmsAdmin:
        """The admin for ``url``; does no IO."""
        ...


def sqlite_path(url: str) -> str:
    """The filesystem path of a ``sqlite:///PATH`` URL (absolute when PATH starts with ``/``)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ConfigError(f"coredms URL {url!r}: expected sqlite:///PATH")
    path = url[len(prefix) :].split("?", 1)[0]
    if not path:
        raise ConfigError(f"coredms URL {url!r}: the path is empty")
    return path


def table_name(dataset: str) -> str:
    """``ds_<dataset>`` after checking the name (names are quoted in SQL as well)."""
    if problem := dataset_problem(dataset):
        raise StoreError(problem)
    return f"ds_{dataset}"


def namespace(tenant: str, pg_prefix: str = "") -> str:
    """The tenant's namespace name (SQLite file stem, PostgreSQL schema and role)."""
    if problem := tenant_id_problem(tenant):
        raise TenantError(problem)
    return f"{pg_prefix}_{tenant}" if pg_prefix else tenant
