"""coredms: the ports every backend implements, and the helpers they share.

``DocumentStore`` is a handle on one tenant's namespace (apps, the SDK, ``mysimbdp
query``); ``CoreDmsAdmin`` (platform side) provisions one namespace per tenant and returns a
URL scoped to it; ``Backend`` is what a backend module provides to ``coredms.open_store``
and ``coredms.open_admin``. A dataset is one table ``ds_<dataset>`` holding ``key``
(primary key), ``doc`` (JSON), ``source`` (the file or run that wrote it) and
``ingested_at``. How a batch is written is the dataset's write mode (``domain.writespec``):
``append`` inserts if the key is absent (replays are safe), ``merge`` upserts (a re-run
changes nothing), ``replace`` writes a generation (a staging table ``rs_<digest>``, one per
file) that ``replace`` swaps in as the dataset in one transaction. Indexes are expression
indexes on the document's fields, made with the table (and at each connection's first write,
for an index added to the profile later).

This module imports no backend; the backends (``coredms.sqlite``, ``coredms.postgres``)
import it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

from mysimbdp.adapters.coredms.rows import DatasetStats, StoredRow, StoredTexts
from mysimbdp.domain.docfilter import MATCH_ALL, Node, Path
from mysimbdp.domain.naming import dataset_problem, tenant_id_problem
from mysimbdp.domain.readparams import BY_KEY, SortSpec
from mysimbdp.domain.writespec import APPEND, WriteSpec, field_path_problem
from mysimbdp.errors import ConfigError, DocumentInvalid, StoreError, TenantError

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "Backend",
    "CoreDmsAdmin",
    "DatasetStats",
    "DocumentInvalid",
    "DocumentStore",
    "StoredRow",
    "StoredTexts",
    "generation_table",
    "index_name",
    "merge_rounds",
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

    def write(
        self,
        dataset: str,
        records: Sequence[tuple[str, bytes]],
        source: str,
        spec: WriteSpec = APPEND,
        *,
        generation: str = "",
    ) -> int:
        """Write ``(key, JSON bytes)`` pairs in one transaction, as ``spec.mode`` says:
        ``append`` inserts those whose key is absent (a key repeated in the batch keeps its
        first document); ``merge`` also updates a stored document that differs, unless
        ``spec.order_by`` says it is newer (a key repeated in the batch: each in turn);
        ``replace`` inserts into ``generation``'s staging table (append there), which
        :meth:`replace` swaps in later.

        Creates the table and ``spec.indexes`` on first use; returns how many rows were
        inserted or changed.
        """
        ...

    def stage(self, dataset: str, generation: str) -> None:
        """Create ``generation``'s empty staging table for ``dataset`` (kept if it exists)."""
        ...

    def replace(self, dataset: str, generation: str, spec: WriteSpec = APPEND) -> int | None:
        """Make ``generation``'s staging table the dataset, with ``spec.indexes``, in one
        transaction: readers see the old content until it commits, then only the new.
        Returns the rows now in the dataset, or None when there is no such generation
        (swapped in already, or discarded): then nothing changes."""
        ...

    def discard(self, dataset: str, generation: str) -> None:
        """Drop ``generation``'s staging table, if any (its file failed)."""
        ...

    def count(self, dataset: str, where: Node = MATCH_ALL) -> int:
        """Number of documents in ``dataset`` that ``where`` matches; 0 for an unknown dataset."""
        ...

    def query(
        self,
        dataset: str,
        *,
        where: Node = MATCH_ALL,
        sort: SortSpec = BY_KEY,
        after: Sequence[Any] | None = None,
        fields: Sequence[Path] = (),
        limit: int,
        offset: int = 0,
    ) -> list[StoredRow]:
        """One keyset page of the read API: at most ``limit`` documents that ``where``
        matches, in ``sort``'s order (then the key), after the position ``after`` (a
        previous row's ``StoredRow.position``), projected to ``fields`` when given; [] for
        an unknown dataset. A sort field must be one of the dataset's indexes (the index
        serves it); ``domain.readparams.parse_sort`` checks that."""
        ...

    def query_texts(
        self,
        dataset: str,
        *,
        where: Node = MATCH_ALL,
        sort: SortSpec = BY_KEY,
        after: Sequence[Any] | None = None,
        limit: int,
        offset: int = 0,
    ) -> StoredTexts:
        """:meth:`query`'s page of whole documents as their stored JSON text, unparsed
        (``coredms.reads.page_texts``): what an NDJSON export without ``fields`` sends."""
        ...

    def changes(
        self,
        dataset: str,
        *,
        where: Node = MATCH_ALL,
        after: Sequence[Any] | None = None,
        fields: Sequence[Path] = (),
        limit: int,
    ) -> list[StoredRow]:
        """The change feed: at most ``limit`` documents written after the position ``after``
        (a previous row's ``(seq, key)``; None: from the first write), in write order (commit
        order), that ``where`` matches; [] for an unknown dataset (``coredms.reads.changes``)."""
        ...

    def stats(self) -> list[DatasetStats]:
        """Each dataset of the tenant (sorted): documents, bytes and the last write."""
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


def generation_table(dataset: str, generation: str) -> str:
    """The staging table of one generation of ``dataset`` (a file in mode replace): ``rs_``
    and a digest, short enough for PostgreSQL's 63 bytes, never listed as a dataset."""
    table_name(dataset)
    if not generation:
        raise StoreError(f"dataset {dataset!r}: write mode replace needs a generation (the file id); none given")
    return "rs_" + hashlib.sha256(f"{dataset}\0{generation}".encode()).hexdigest()[:32]


def index_name(table: str, fields: Sequence[str]) -> str:
    """The name of the index on ``fields`` of ``table`` (the live dataset's table): the
    same for the same fields, so ``CREATE INDEX IF NOT EXISTS`` finds it again."""
    for path in fields:
        if problem := field_path_problem(path):
            raise StoreError(problem)
    digest = hashlib.sha256(f"{table}\0{','.join(fields)}".encode()).hexdigest()[:12]
    return f"ix_{digest}_{table}"[:63]


def merge_rounds(records: Sequence[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
    """``records`` as rounds in which each key appears once (its first occurrence in the
    first round, its second in the second, ...), so that one upsert statement per round
    applies a key's versions in their order."""
    rounds: list[list[tuple[str, bytes]]] = []
    seen: dict[str, int] = {}
    for record in records:
        n = seen.get(record[0], 0)
        seen[record[0]] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(record)
    return rounds
