"""What the read side of coredms returns: a page's rows and a dataset's statistics (a leaf
module: ``coredms.base`` and ``coredms.reads`` share it without importing each other)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DatasetStats", "StoredRow", "StoredText"]


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One document of a page and its position: ``(key,)`` for ``sort=key``, else
    ``(sort value, key)``; what a ``next`` cursor holds (``coredms.filtersql.seek_sql``)."""

    position: tuple[Any, ...]
    doc: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredText:
    """One document of a page as its stored JSON text, unparsed (SQLite: the text as
    written; PostgreSQL: ``jsonb``'s text form, ``{"a": 1, "b": [2, 3]}``), numbers digit for
    digit; ``position`` as in :class:`StoredRow`. What a whole-document NDJSON export sends."""

    position: tuple[Any, ...]
    text: str


@dataclass(frozen=True, slots=True)
class DatasetStats:
    """One dataset of a tenant: its documents, their size and the last write (ISO 8601 UTC,
    "" for an empty dataset). ``size_bytes``: SQLite, the documents' JSON text; PostgreSQL,
    the table on disk with its indexes and TOAST (``pg_total_relation_size``)."""

    dataset: str
    count: int
    size_bytes: int
    last_write: str
