"""The tenants' read API: their datasets, a dataset's documents (filtered, projected, sorted,
paged by cursor or offset, or exported whole as a stream) and counts.

``GET /v1/datasets/{dataset}/documents`` answers by ``Accept``: ``application/json`` (the
default) is one page, a JSON array, with the next page's cursor in ``X-Next-Cursor`` and
``Link: <...>; rel="next"`` when there is one; ``application/x-ndjson``, ``text/csv`` and
``application/vnd.apache.parquet`` stream every matching document (after ``cursor``, at most
``limit`` when given), read from the store in keyset pages, so memory stays bounded whatever
the dataset's size. The first listed type this route serves wins (no ``q`` weighting).
``since=start`` or ``since=<cursor>`` is the change feed: the documents written after that
point, in write order (``DocumentStore.changes``), a JSON page whose ``X-Next-Cursor`` (always
there once anything was written) is the next ``since``.

Every refusal names the tenant and the dataset, and carries the rule and its values: a bad
filter, field list, sort or number is 422; a cursor that is altered, forged, or another
tenant's, dataset's, sort's or filter's is 400; a dataset the tenant does not have is 404, the
same answer whether another tenant has one of that name or not (each tenant reads its own
namespace only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import asdict
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from mysimbdp.adapters.coredms import DocumentStore
from mysimbdp.api.deps import Authenticated, Caller, Refused, context_of, documented
from mysimbdp.api.streaming import read_ahead
from mysimbdp.domain.naming import dataset_problem
from mysimbdp.domain.readparams import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, bounded_int
from mysimbdp.errors import FilterError, StoreError, StoreUnavailable
from mysimbdp.logs import get_logger
from mysimbdp.services.reads import (
    FEED_START,
    MAX_EXPORT_LIMIT,
    MAX_OFFSET,
    MEDIA_TYPES,
    ExportFormat,
    ReadQuery,
    cursor_of,
    export_query,
    read_changes,
    read_page,
    read_query,
)

__all__ = ["Count", "DatasetInfo", "router"]

log = get_logger("api")
T = TypeVar("T")
NEXT_HEADER = "X-Next-Cursor"


class Count(BaseModel):
    dataset: str
    count: int


class DatasetInfo(BaseModel):
    """One of the tenant's datasets. ``size_bytes``: on SQLite the documents' JSON text, on
    PostgreSQL the table on disk with its indexes; ``last_write``: ISO 8601 UTC ("" if empty)."""

    dataset: str
    count: int
    size_bytes: int
    last_write: str


def _where(caller: Caller, dataset: str) -> str:
    return f"tenant {caller.tenant!r}, dataset {dataset!r}"


def _refused(caller: Caller, dataset: str, exc: FilterError) -> Refused:
    status = 400 if exc.rule == "cursor" else 422
    fields: dict[str, Any] = {k: v for k, v in exc.fields.items() if k not in ("error", "tenant", "dataset")}
    return Refused(
        status, f"{_where(caller, dataset)}: {exc}", tenant=caller.tenant, dataset=dataset, rule=exc.rule, **fields
    )


def _missing(caller: Caller, dataset: str) -> Refused:
    return Refused(
        404,
        f"{_where(caller, dataset)}: no such dataset; GET /v1/datasets lists yours",
        tenant=caller.tenant,
        dataset=dataset,
    )


async def _in_store(request: Request, caller: Caller, dataset: str, read: Callable[[DocumentStore], T]) -> T:
    """``read(store)`` on a thread with the tenant's store, after checking that ``dataset``
    is the tenant's (404 otherwise); store errors as answers naming both."""

    def run() -> T:
        with closing(context_of(request).platform.tenant_store(caller.record)) as store:
            if dataset not in store.datasets():
                raise _missing(caller, dataset)
            return read(store)

    return await _stored(caller, dataset, run)


async def _stored(caller: Caller, dataset: str, run: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(run)
    except FilterError as exc:
        raise _refused(caller, dataset, exc) from exc
    except StoreUnavailable as exc:
        where = _where(caller, dataset)
        raise Refused(503, f"{where}: {exc}", {"Retry-After": "5"}, tenant=caller.tenant, dataset=dataset) from exc
    except StoreError as exc:
        log.error("documents_failed", tenant=caller.tenant, dataset=dataset, error=str(exc))
        raise Refused(500, f"{_where(caller, dataset)}: {exc}", tenant=caller.tenant, dataset=dataset) from exc


def _check_name(caller: Caller, dataset: str) -> None:
    if problem := dataset_problem(dataset):
        raise Refused(422, f"tenant {caller.tenant!r}: {problem}", tenant=caller.tenant, dataset=dataset)


def _format(accept: str | None, caller: Caller, dataset: str) -> ExportFormat:
    """The first type of ``Accept`` this route serves (none given, ``*/*``: JSON); else 406."""
    if not accept:
        return ExportFormat.JSON
    by_type = {media: fmt for fmt, media in MEDIA_TYPES.items()}
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in ("*/*", "application/*"):
            return ExportFormat.JSON
        if media in by_type:
            return by_type[media]
    served = ", ".join(MEDIA_TYPES.values())
    raise Refused(
        406,
        f"{_where(caller, dataset)}: Accept {accept[:200]!r} is not served; ask for one of {served}",
        tenant=caller.tenant,
        dataset=dataset,
        accepted=list(MEDIA_TYPES.values()),
    )


_ERRORS = {
    400: "A cursor that is altered, forged, or of another tenant, dataset, sort or filter",
    401: "No or unknown API key",
    404: "Not one of the tenant's datasets",
    422: "Invalid dataset name, filter, fields, sort or number (the rule, the value and the limit named)",
    503: "The document store is unavailable; see Retry-After",
}
_TEXT = {"schema": {"type": "string"}}
_DOCUMENTS_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A page of documents (JSON), or every matching document streamed (the other types)",
        "content": {
            "application/x-ndjson": _TEXT,
            "text/csv": _TEXT,
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        },
        "headers": {
            NEXT_HEADER: {"description": "The cursor of the next page (JSON only; none: the last page)", **_TEXT},
            "Link": {"description": 'The next page\'s URL, rel="next" (JSON only)', **_TEXT},
        },
    },
    **documented({**_ERRORS, 406: "Accept names no type this route serves"}),
}

_FILTER_DOC = (
    'A JSON filter in a MongoDB subset, e.g. {"city": "Oslo", "temp": {"$gte": 10}}: '
    "$eq $ne $gt $gte $lt $lte $in $nin $exists, $and, $or; dotted paths into nested objects"
)
FilterParam = Annotated[str | None, Query(alias="filter", description=_FILTER_DOC)]

router = APIRouter()


@router.get(
    "/v1/datasets",
    response_model=list[DatasetInfo],
    summary="The tenant's datasets with their documents, bytes and last write",
    responses=documented({401: _ERRORS[401], 503: _ERRORS[503]}),
)
async def get_datasets(request: Request, caller: Authenticated) -> list[DatasetInfo]:
    def run() -> list[DatasetInfo]:
        with closing(context_of(request).platform.tenant_store(caller.record)) as store:
            return [DatasetInfo(**asdict(stats)) for stats in store.stats()]

    return await _stored(caller, "*", run)


@router.get(
    "/v1/datasets/{dataset}/documents",
    response_model=list[dict[str, Any]],
    summary="Read the tenant's documents of one dataset: filtered, projected, sorted, paged or exported",
    responses=_DOCUMENTS_200,
)
async def get_documents(
    request: Request,
    dataset: str,
    caller: Authenticated,
    filter_text: FilterParam = None,
    fields: Annotated[str | None, Query(description="Only these fields, e.g. a,b.c")] = None,
    sort: Annotated[
        str | None, Query(description="key (default), ingested_at or an indexed field; '-' first: descending")
    ] = None,
    cursor: Annotated[str | None, Query(description="The X-Next-Cursor of the previous page")] = None,
    limit: Annotated[
        str | None, Query(description=f"Documents per page, 1 to {MAX_PAGE_LIMIT} (exports: at most this many)")
    ] = None,
    offset: Annotated[str | None, Query(description=f"Skip this many first, 0 to {MAX_OFFSET} (JSON only)")] = None,
    since: Annotated[
        str | None,
        Query(description=f"The change feed: {FEED_START!r} or the X-Next-Cursor of a previous since read"),
    ] = None,
) -> Response:
    _check_name(caller, dataset)
    fmt = _format(request.headers.get("accept"), caller, dataset)
    if since is not None:
        return await _changes(request, caller, dataset, fmt, since, filter_text, fields, (sort, cursor, offset), limit)
    try:
        query = read_query(caller.tenant, dataset, caller.profile, filter_text=filter_text, fields=fields, sort=sort)
        after = None if cursor is None else context_of(request).platform.cursor_codec().decode(cursor, query.scope)
        skip = bounded_int("offset", offset, default=0, minimum=0, maximum=MAX_OFFSET)
        if skip and after is not None:
            raise FilterError("param", "give cursor or offset, not both", param="offset", value=skip)
        if fmt is ExportFormat.JSON:
            size = bounded_int("limit", limit, default=DEFAULT_PAGE_LIMIT, minimum=1, maximum=MAX_PAGE_LIMIT)
        else:
            if skip:
                raise FilterError("param", "offset pages JSON only: an export goes on from a cursor", param="offset")
            size = bounded_int("limit", limit, default=0, minimum=1, maximum=MAX_EXPORT_LIMIT)
    except FilterError as exc:
        raise _refused(caller, dataset, exc) from exc
    if fmt is not ExportFormat.JSON:
        return await _export(request, caller, query, fmt, after, size or None)

    def page(store: DocumentStore) -> tuple[list[dict[str, Any]], str | None]:
        docs, position = read_page(store, query, after=after, limit=size, offset=skip)
        return docs, cursor_of(context_of(request).platform.cursor_codec(), query, position)

    docs, token = await _in_store(request, caller, dataset, page)
    headers = {}
    if token is not None:
        headers[NEXT_HEADER] = token
        headers["Link"] = (
            f'<{request.url.remove_query_params("offset").include_query_params(cursor=token)}>; rel="next"'
        )
    return Response(orjson.dumps(docs), media_type="application/json", headers=headers)


async def _changes(
    request: Request,
    caller: Caller,
    dataset: str,
    fmt: ExportFormat,
    since: str,
    filter_text: str | None,
    fields: str | None,
    others: tuple[str | None, ...],
    limit: str | None,
) -> Response:
    """``since=``: the documents written after a point, in write order, as a JSON page whose
    ``X-Next-Cursor`` goes on from its last document (or stays put when none came)."""
    codec = context_of(request).platform.cursor_codec()
    try:
        if any(value is not None for value in others):
            raise FilterError(
                "param", "since reads in write order: give no sort, cursor or offset with it", param="since"
            )
        if fmt is not ExportFormat.JSON:
            raise FilterError("param", "since pages JSON only (Accept: application/json)", param="since")
        query = read_query(caller.tenant, dataset, caller.profile, filter_text=filter_text, fields=fields, sort=None)
        after = None if since == FEED_START else codec.decode(since, query.feed_scope)
        size = bounded_int("limit", limit, default=DEFAULT_PAGE_LIMIT, minimum=1, maximum=MAX_PAGE_LIMIT)
    except FilterError as exc:
        raise _refused(caller, dataset, exc) from exc
    docs, position = await _in_store(
        request, caller, dataset, lambda store: read_changes(store, query, after=after, limit=size)
    )
    headers = {} if position is None else {NEXT_HEADER: codec.encode(query.feed_scope, position)}
    return Response(orjson.dumps(docs), media_type="application/json", headers=headers)


async def _export(
    request: Request, caller: Caller, query: ReadQuery, fmt: ExportFormat, after: Any, limit: int | None
) -> Response:
    """Stream every matching document as ``fmt``; the store stays open while the body goes."""

    def opened() -> DocumentStore:
        store = context_of(request).platform.tenant_store(caller.record)
        try:
            if query.dataset not in store.datasets():
                raise _missing(caller, query.dataset)
        except BaseException:
            store.close()
            raise
        return store

    store = await _stored(caller, query.dataset, opened)

    def body() -> Iterator[bytes]:
        try:
            yield from export_query(fmt, store, query, after=after, limit=limit)
        except (StoreError, ValueError) as exc:  # the status went out already: the body ends early
            log.error("export_failed", tenant=caller.tenant, dataset=query.dataset, format=fmt, error=str(exc))
            raise
        finally:
            store.close()

    disposition = f'attachment; filename="{query.dataset}.{fmt.value}"'
    headers = {"Content-Disposition": disposition}
    return StreamingResponse(read_ahead(body()), media_type=MEDIA_TYPES[fmt], headers=headers)


@router.get(
    "/v1/datasets/{dataset}/count",
    response_model=Count,
    summary="How many of the tenant's documents of one dataset match a filter (all without one)",
    responses=documented(_ERRORS),
)
async def get_count(request: Request, dataset: str, caller: Authenticated, filter_text: FilterParam = None) -> Count:
    _check_name(caller, dataset)
    try:
        query = read_query(caller.tenant, dataset, caller.profile, filter_text=filter_text, fields=None, sort=None)
    except FilterError as exc:
        raise _refused(caller, dataset, exc) from exc
    count = await _in_store(request, caller, dataset, lambda store: store.count(dataset, query.where))
    return Count(dataset=dataset, count=count)
