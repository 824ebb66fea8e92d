"""What the read side of coredms returns: a page's rows and a dataset's statistics (a leaf
module: ``coredms.base`` and ``coredms.reads`` share it without importing each other)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DatasetStats", "StoredRow", "StoredTexts"]


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One document of a page and its position: ``(key,)`` for ``sort=key``, else
    ``(sort value, key)``; what a ``next`` cursor holds (``coredms.filtersql.seek_sql``)."""

    position: tuple[Any, ...]
    doc: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredTexts:
    """A page of whole documents as their stored JSON text, unparsed (SQLite: the text as
    written; PostgreSQL: ``jsonb``'s text form, ``{"a": 1, "b": [2, 3]}``), numbers digit for
    digit, and the position of its last document (as in :class:`StoredRow`; None for an
    empty page). What a whole-document NDJSON export sends: one list of texts, no object per
    document."""

    texts: list[str]
    last: tuple[Any, ...] | None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True, slots=True)
class DatasetStats:
    """One dataset of a tenant: its documents, their size and the last write (ISO 8601 UTC,
    "" for an empty dataset). ``size_bytes``: SQLite, the documents' JSON text; PostgreSQL,
    the table on disk with its indexes and TOAST (``pg_total_relation_size``)."""

    dataset: str
    count: int
    size_bytes: int
    last_write: str
