"""What the read side of coredms returns: a page's rows and a dataset's statistics (a leaf
module: ``coredms.base`` and ``coredms.reads`` share it without importing each other)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DatasetStats", "StoredRow"]


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One document of a page and its position: ``(key,)`` for ``sort=key``, else
    ``(sort value, key)``; what a ``next`` cursor holds (``coredms.filtersql.seek_sql``)."""

    position: tuple[Any, ...]
    doc: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DatasetStats:
    """One dataset of a tenant: its documents, their size and the last write (ISO 8601 UTC,
    "" for an empty dataset). ``size_bytes``: SQLite, the documents' JSON text; PostgreSQL,
    the table on disk with its indexes and TOAST (``pg_total_relation_size``)."""

    dataset: str
    count: int
    size_bytes: int
    last_write: str
