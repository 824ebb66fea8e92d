"""Reading a tenant's dataset back (the read API and ``mysimbdp query``): a query's
parameters checked into a :class:`ReadQuery`, one page with its ``next`` position, and every
matching document streamed through keyset pages (bounded memory) in any export format.

A request names its tenant (from its API key or ``--tenant``) and a dataset of that tenant;
the store handle is the tenant's own namespace, so neither a filter nor a cursor can reach
another tenant's data, and a cursor is signed for its tenant, dataset, sort and filter
(``domain.cursor``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from mysimbdp.adapters.coredms import DocumentStore, StoredRow, StoredTexts
from mysimbdp.domain.cursor import CursorCodec, CursorScope
from mysimbdp.domain.docfilter import Node, Path, filter_digest, parse_filter
from mysimbdp.domain.profile import Profile
from mysimbdp.domain.readparams import SortSpec, parse_fields, parse_sort
from mysimbdp.formats.exports import csv_chunks, ndjson_chunks, ndjson_text_chunks, parquet_chunks

__all__ = [
    "EXPORT_PAGE_ROWS",
    "FEED_START",
    "MAX_EXPORT_LIMIT",
    "MAX_OFFSET",
    "MEDIA_TYPES",
    "ExportFormat",
    "ReadQuery",
    "cursor_of",
    "export_chunks",
    "export_query",
    "indexed_fields",
    "iter_documents",
    "iter_text_pages",
    "read_changes",
    "read_page",
    "read_query",
]

MAX_OFFSET = 10_000_000  # offset paging reads and skips every row before: deeper, use cursors
MAX_EXPORT_LIMIT = 2**53  # an export's optional limit (documents); none: all of them
EXPORT_PAGE_ROWS = 1000  # documents per keyset page while streaming an export
FEED_START = "start"  # since=start: the change feed from the first write
FEED_SORT = "~since"  # a change-feed cursor's sort binding (no sort parameter can be this)
PageT = TypeVar("PageT", bound=Sized)  # a store page: a list of StoredRow, or one StoredTexts


class ExportFormat(StrEnum):
    JSON = "json"
    NDJSON = "ndjson"
    CSV = "csv"
    PARQUET = "parquet"


MEDIA_TYPES = {
    ExportFormat.JSON: "application/json",
    ExportFormat.NDJSON: "application/x-ndjson",
    ExportFormat.CSV: "text/csv",
    ExportFormat.PARQUET: "application/vnd.apache.parquet",
}


@dataclass(frozen=True, slots=True)
class ReadQuery:
    """One read of one tenant's dataset: which documents, in which order, which fields."""

    tenant: str
    dataset: str
    where: Node
    sort: SortSpec
    fields: tuple[Path, ...]

    @property
    def scope(self) -> CursorScope:
        """What this query's cursors are bound to."""
        return CursorScope(self.tenant, self.dataset, self.sort.text, filter_digest(self.where))

    @property
    def feed_scope(self) -> CursorScope:
        """What this query's change-feed (``since``) cursors are bound to: never a page's."""
        return CursorScope(self.tenant, self.dataset, FEED_SORT, filter_digest(self.where))


def indexed_fields(profile: Profile, dataset: str) -> set[str]:
    """The fields a read of ``dataset`` may sort by: the first field of each of its indexes
    (the profile's ``indexes``, coredms made them), whose index serves the order."""
    return {index[0] for index in profile.write_for(dataset).indexes if index}


def read_query(
    tenant: str, dataset: str, profile: Profile, *, filter_text: str | None, fields: str | None, sort: str | None
) -> ReadQuery:
    """The checked query; raises :class:`~mysimbdp.errors.FilterError` (rule, value, limit)."""
    where = parse_filter(filter_text)
    return ReadQuery(tenant, dataset, where, parse_sort(sort, indexed_fields(profile, dataset)), parse_fields(fields))


def read_page(
    store: DocumentStore, query: ReadQuery, *, after: Sequence[Any] | None, limit: int, offset: int = 0
) -> tuple[list[dict[str, Any]], tuple[Any, ...] | None]:
    """Up to ``limit`` documents and the position a next page starts after (None: the last page)."""
    rows = store.query(
        query.dataset,
        where=query.where,
        sort=query.sort,
        after=after,
        fields=query.fields,
        limit=limit + 1,
        offset=offset,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return [row.doc for row in rows], rows[-1].position if more and rows else None


def read_changes(
    store: DocumentStore, query: ReadQuery, *, after: Sequence[Any] | None, limit: int
) -> tuple[list[dict[str, Any]], tuple[Any, ...] | None]:
    """Up to ``limit`` documents written after ``after``, in write order, and the position
    to go on from (``after`` itself when nothing new came; None: nothing yet at all)."""
    rows = store.changes(query.dataset, where=query.where, after=after, fields=query.fields, limit=limit)
    last = rows[-1].position if rows else (tuple(after) if after is not None else None)
    return [row.doc for row in rows], last


def _keyset_pages(
    fetch: Callable[[Sequence[Any] | None, int, int], PageT],
    *,
    after: Sequence[Any] | None,
    limit: int | None,
    offset: int,
    page_rows: int,
    progress: Callable[[int], None] | None,
    last_of: Callable[[PageT], Sequence[Any] | None],
) -> Iterator[PageT]:
    """The pages of ``fetch(after, size, offset)`` (rows with a ``position``, or one
    ``StoredTexts``: ``last_of`` gives a page's last position), each after the last row of
    the one before, until a short page or ``limit`` rows."""
    left = limit
    while left is None or left > 0:
        size = page_rows if left is None else min(page_rows, left)
        rows = fetch(after, size, offset if after is None else 0)
        if rows:
            yield rows
            if progress is not None:
                progress(len(rows))
        if len(rows) < size:
            return
        after = last_of(rows)
        left = None if left is None else left - len(rows)


def iter_documents(
    store: DocumentStore,
    query: ReadQuery,
    *,
    after: Sequence[Any] | None = None,
    limit: int | None = None,
    offset: int = 0,
    page_rows: int = EXPORT_PAGE_ROWS,
    progress: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every matching document (at most ``limit``, the first ``offset`` skipped), page by
    keyset page: memory is one page, whatever the dataset's size. Each document comes once;
    one written meanwhile comes if it sorts after the pages already read. ``progress(n)``
    after each page of ``n``."""

    def fetch(position: Sequence[Any] | None, size: int, skip: int) -> list[StoredRow]:
        q = query
        return store.query(
            q.dataset, where=q.where, sort=q.sort, after=position, fields=q.fields, limit=size, offset=skip
        )

    pages = _keyset_pages(
        fetch, after=after, limit=limit, offset=offset, page_rows=page_rows, progress=progress, last_of=_last_row
    )
    for rows in pages:
        for row in rows:
            yield row.doc


def iter_text_pages(
    store: DocumentStore,
    query: ReadQuery,
    *,
    after: Sequence[Any] | None = None,
    limit: int | None = None,
    offset: int = 0,
    page_rows: int = EXPORT_PAGE_ROWS,
    progress: Callable[[int], None] | None = None,
) -> Iterator[list[str]]:
    """:func:`iter_documents`' documents (whole: ``query.fields`` is not applied), a page
    at a time, as their stored JSON text, unparsed (``DocumentStore.query_texts``)."""

    def fetch(position: Sequence[Any] | None, size: int, skip: int) -> StoredTexts:
        q = query
        return store.query_texts(q.dataset, where=q.where, sort=q.sort, after=position, limit=size, offset=skip)

    pages = _keyset_pages(
        fetch, after=after, limit=limit, offset=offset, page_rows=page_rows, progress=progress, last_of=_last_text
    )
    for page in pages:
        yield page.texts


def _last_row(rows: list[StoredRow]) -> Sequence[Any] | None:
    return rows[-1].position


def _last_text(page: StoredTexts) -> Sequence[Any] | None:
    return page.last


def export_chunks(fmt: ExportFormat, docs: Iterator[dict[str, Any]], fields: Sequence[Path] = ()) -> Iterator[bytes]:
    """``docs`` encoded as ``fmt`` (not JSON, which is paged) in chunks of about 64 KiB
    (``formats.exports``). Exact numbers keep every digit: JSON Lines as numbers, CSV as
    their digits, Parquet as a string column of their JSON text."""
    if fmt is ExportFormat.NDJSON:
        return ndjson_chunks(docs)
    if fmt is ExportFormat.CSV:
        return csv_chunks(docs, fields)
    if fmt is ExportFormat.PARQUET:
        return parquet_chunks(docs, fields)
    raise ValueError(f"export_chunks: {fmt} is paged, not exported")


def export_query(
    fmt: ExportFormat,
    store: DocumentStore,
    query: ReadQuery,
    *,
    after: Sequence[Any] | None = None,
    limit: int | None = None,
    offset: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """Every document ``query`` matches (after ``after``, at most ``limit``, ``offset``
    skipped), exported as ``fmt``, read in keyset pages. JSON Lines of whole documents (no
    ``fields``) passes each stored JSON text through as its line, unparsed
    (:func:`iter_text_pages`, ``formats.exports.ndjson_text_chunks``): every digit as
    stored, but on PostgreSQL in ``jsonb``'s spacing (``{"a": 1, "b": 2}``). Anything else
    parses the documents and encodes them (:func:`export_chunks`)."""
    if fmt is ExportFormat.NDJSON and not query.fields:
        texts = iter_text_pages(store, query, after=after, limit=limit, offset=offset, progress=progress)
        return ndjson_text_chunks(texts)
    docs = iter_documents(store, query, after=after, limit=limit, offset=offset, progress=progress)
    return export_chunks(fmt, docs, query.fields)


def cursor_of(codec: CursorCodec, query: ReadQuery, position: Sequence[Any] | None) -> str | None:
    """The signed ``next`` token of ``position`` (None: no next page)."""
    return None if position is None else codec.encode(query.scope, position)
