"""coredms: the tenant-isolated document store, behind two ports and two real backends.

``open_admin`` (platform side) provisions one namespace per tenant and returns a URL scoped
to it; ``open_store`` (apps, the SDK, ``mysimbdp query``) opens that URL. A dataset is one
table ``ds_<dataset>`` holding ``key`` (primary key), ``doc`` (JSON), ``source`` (the file
or run that wrote it) and ``ingested_at``. Writes are insert-if-absent, so replays are safe.

Backends: SQLite, one database file per tenant (``sqlite:///DIR``), and PostgreSQL, one
schema and one LOGIN role per tenant (``postgresql://user@host:port/db``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from mysimbdp.domain.naming import dataset_problem, tenant_id_problem
from mysimbdp.errors import ConfigError, DocumentInvalid, KeyFieldMissing, StoreError, TenantError

__all__ = [
    "CoreDmsAdmin",
    "DocumentInvalid",
    "DocumentStore",
    "KeyFieldMissing",
    "open_admin",
    "open_store",
    "record_key",
]

DEFAULT_BUSY_TIMEOUT_S = 30.0
LINE_DIGITS = 10  # default keys zero-pad the line so that key order is file order


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
        """Up to ``limit`` stored documents, ordered by key, skipping ``offset``."""
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


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(
            f"coredms URL scheme {scheme!r} is not supported; use sqlite:///DIR or postgresql://user@host:port/db"
        )
    return scheme


def sqlite_path(url: str) -> str:
    """The filesystem path of a ``sqlite:///PATH`` URL (absolute when PATH starts with ``/``)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ConfigError(f"coredms URL {url!r}: expected sqlite:///PATH")
    path = url[len(prefix) :].split("?", 1)[0]
    if not path:
        raise ConfigError(f"coredms URL {url!r}: the path is empty")
    return path


def open_admin(url: str, *, pg_prefix: str = "mysimbdp") -> CoreDmsAdmin:
    """The admin for ``url`` (``Settings.coredms_url``). Does no IO: it connects on first use."""
    if _scheme(url) == "sqlite":
        from mysimbdp.adapters.coredms_sqlite import SqliteAdmin

        return SqliteAdmin(sqlite_path(url))
    from mysimbdp.adapters.coredms_postgres import PostgresAdmin

    return PostgresAdmin(url, pg_prefix=pg_prefix)


def open_store(scoped_url: str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> DocumentStore:
    """Connect to one tenant's namespace (the URL ``provision`` returned).

    ``busy_timeout_s``: how long a SQLite write waits for a lock held by another writer
    before :class:`StoreUnavailable`; for PostgreSQL, the connect timeout.
    Raises :class:`StoreUnavailable` when the store cannot be reached, :class:`StoreError`
    when the namespace does not exist.
    """
    if _scheme(scoped_url) == "sqlite":
        from mysimbdp.adapters.coredms_sqlite import SqliteStore

        lite = SqliteStore(sqlite_path(scoped_url), busy_timeout_s=busy_timeout_s)
        lite.open()
        return lite
    from mysimbdp.adapters.coredms_postgres import PostgresStore

    pg = PostgresStore(scoped_url, connect_timeout_s=busy_timeout_s)
    pg.open()
    return pg


def record_key(doc: Mapping[str, Any], key_fields: Sequence[str], sha256: str, line: int) -> str:
    """The deterministic key of a document.

    With ``key_fields``: the canonical JSON array of their values (``'["a1",3]'``); a missing
    field raises :class:`KeyFieldMissing`. Without: ``"<sha256>:<line>"``, the line
    zero-padded so that reading back in key order gives file order.
    """
    return record_keys([doc], key_fields, sha256, [line])[0]


def record_keys(
    docs: Sequence[Mapping[str, Any]], key_fields: Sequence[str], sha256: str, lines: Sequence[int]
) -> list[str]:
    """:func:`record_key` of many documents at once (``lines[i]`` is ``docs[i]``'s line)."""
    if not key_fields:
        return [f"{sha256}:{line:0{LINE_DIGITS}d}" for line in lines]
    dumps = orjson.dumps
    try:
        if len(key_fields) == 1:
            (name,) = key_fields
            return [dumps([doc[name]]).decode() for doc in docs]
        return [dumps([doc[name] for name in key_fields]).decode() for doc in docs]
    except KeyError as exc:
        raise KeyFieldMissing(f"key field {exc.args[0]!r} is missing from the document") from exc
    except TypeError as exc:
        raise KeyFieldMissing(f"key fields {list(key_fields)} hold a value that is not JSON: {exc}") from exc


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
