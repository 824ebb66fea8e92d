"""The quarantine API: summarise, page, replay and purge a tenant's quarantined entries.

A tenant's key acts on its own entries only: another tenant's file id is 404, as if it did
not exist, and ``?tenant=`` naming another tenant is 403. The operator names the tenant
with ``?tenant=`` (required here: a replay or a purge is always one tenant's). Writes take
the key from the Authorization header only, never from the dashboard's cookie. A replay
runs while the request waits and answers what happened (``services.quarantine``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from mysimbdp.adapters.broker import STREAM_RE
from mysimbdp.adapters.metastore.quarantine import PurgeRecord
from mysimbdp.api.deps import AnyViewer, Refused, Viewer, context_of, documented
from mysimbdp.api.routes.history import MAX_ID_LENGTH, NO_NUL, Limit, Offset, Page, TenantFilter
from mysimbdp.domain.records import QuarantinedRow
from mysimbdp.domain.replay import stream_of
from mysimbdp.errors import BrokerError, BrokerUnavailable, MysimbdpError, StoreError, StoreUnavailable, TenantError
from mysimbdp.services import quarantine as service
from mysimbdp.services import quarantine_replay
from mysimbdp.services.quarantine import Selection, SourceSummary
from mysimbdp.services.quarantine_replay import ReplayOutcome

__all__ = ["router"]

T = TypeVar("T")

router = APIRouter(prefix="/v1/quarantine", tags=["quarantine"])

_ERRORS = documented(
    {
        401: "No credentials, or an unknown key",
        403: "A tenant's key asked for another tenant (?tenant=)",
        404: "No such tenant, or no such file of the tenant",
        422: "Invalid request, or the operator did not name the tenant (?tenant=)",
        503: "The meta store or the broker is unavailable; see Retry-After",
    }
)

_POST_ERRORS = {**_ERRORS, **documented({400: "The body cannot be parsed (not UTF-8 JSON)"})}

FileIdFilter = Annotated[str | None, Query(pattern=NO_NUL, max_length=MAX_ID_LENGTH, description="one file's id")]
StreamFilter = Annotated[str | None, Query(pattern=f"^{STREAM_RE.pattern}$", description="one stream's messages")]
FileIdField = Annotated[str | None, Field(pattern=NO_NUL, max_length=MAX_ID_LENGTH)]
StreamField = Annotated[str | None, Field(pattern=f"^{STREAM_RE.pattern}$")]


class ReasonCount(BaseModel):
    reason: str
    count: int


class SourceOut(BaseModel):
    tenant: str
    kind: Literal["batch", "stream"]
    source: str  # a file's id, or a stream's name
    name: str  # the file's name, or the stream's
    entries: int
    first_at: float
    last_at: float
    reasons: list[ReasonCount]  # the most frequent kinds of reason

    @classmethod
    def of(cls, s: SourceSummary) -> SourceOut:
        kind: Literal["batch", "stream"] = "stream" if s.kind == "stream" else "batch"
        reasons = [ReasonCount(reason=r, count=n) for r, n in s.reasons]
        return cls(
            tenant=s.tenant,
            kind=kind,
            source=s.source,
            name=s.name,
            entries=s.entries,
            first_at=s.first_at,
            last_at=s.last_at,
            reasons=reasons,
        )


class EntryOut(BaseModel):
    tenant: str
    file_id: str  # a file's id, or "stream:<stream>:<instance>"
    stream: str | None
    run_id: str
    line: int
    reason: str
    raw: str
    at: float

    @classmethod
    def of(cls, e: QuarantinedRow) -> EntryOut:
        return cls(
            tenant=e.tenant,
            file_id=e.file_id,
            stream=stream_of(e.file_id),
            run_id=e.run_id,
            line=e.line,
            reason=e.reason,
            raw=e.raw,
            at=e.at,
        )


class NotReplayed(BaseModel):
    line: int
    why: str


class ReplayOut(BaseModel):
    """What a replay did to one file or stream (see ``mysimbdp quarantine replay --help``)."""

    tenant: str
    kind: Literal["batch", "stream"]
    source: str
    name: str
    entries: int  # quarantined when the replay started
    replayed: int  # batch: rows given to the app; stream: messages republished
    restored: int  # batch: stored now
    already_stored: int  # batch: were stored already (nothing written twice)
    skipped: int  # batch: filtered out by the app on purpose
    quarantined_again: int  # batch: rejected again, kept with the new reason
    records: int  # stream: records in the republished messages
    remaining: int  # entries still quarantined
    not_replayable: list[NotReplayed]
    runs: list[str]  # batch: the replay runs (see GET /v1/runs)
    errors: list[str]

    @classmethod
    def of(cls, o: ReplayOutcome) -> ReplayOut:
        return cls.model_validate(quarantine_replay.outcome_json(o))


class PurgeOut(BaseModel):
    id: str
    tenant: str
    selection: str  # "file <id>", "stream <name>" or "all"
    entries: int
    purged_by: str
    via: str
    at: float
    reasons: list[ReasonCount]

    @classmethod
    def of(cls, r: PurgeRecord) -> PurgeOut:
        fields = {name: getattr(r, name) for name in cls.model_fields if name != "reasons"}
        return cls(**fields, reasons=[ReasonCount(reason=k, count=n) for k, n in r.reasons])


class ReplayIn(BaseModel):
    """Which entries: one file's, one stream's, or (neither) all of the tenant's."""

    model_config = ConfigDict(extra="forbid")
    file_id: FileIdField = None
    stream: StreamField = None


class PurgeIn(ReplayIn):
    all: bool = False  # every entry of the tenant (without file_id or stream)
    by: Annotated[str | None, Field(min_length=1, max_length=200, pattern=NO_NUL)] = None  # who, as recorded


def _selection(viewer: Viewer, tenant: str | None, file_id: str | None, stream: str | None) -> Selection:
    scope = viewer.scope(tenant)
    if scope is None:
        raise Refused(422, "the operator names the tenant: add ?tenant=<tenant id>")
    if file_id is not None and stream is not None:
        raise Refused(422, f"tenant {scope!r}: give file_id or stream, not both", tenant=scope)
    return Selection(scope, file_id, stream)


def _refused(exc: MysimbdpError, sel: Selection) -> Refused:
    if isinstance(exc, service.UnknownSource | TenantError):
        return Refused(404, str(exc), tenant=sel.tenant)
    if isinstance(exc, StoreUnavailable | BrokerUnavailable):
        return Refused(503, f"{sel}: {exc}", {"Retry-After": "5"}, tenant=sel.tenant)
    if isinstance(exc, StoreError | BrokerError):
        return Refused(500, f"{sel}: {exc}", tenant=sel.tenant)
    return Refused(422, str(exc), tenant=sel.tenant)


async def _call(sel: Selection, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except MysimbdpError as exc:
        raise _refused(exc, sel) from exc


@router.get(
    "/summary", response_model=list[SourceOut], summary="Entries per file and stream, with reasons", responses=_ERRORS
)
async def get_summary(
    request: Request,
    viewer: AnyViewer,
    file_id: FileIdFilter = None,
    stream: StreamFilter = None,
    tenant: TenantFilter = None,
) -> list[SourceOut]:
    sel = _selection(viewer, tenant, file_id, stream)
    summaries = await _call(sel, service.summarize, context_of(request).platform, sel)
    return [SourceOut.of(s) for s in summaries]


@router.get("/entries", response_model=Page[EntryOut], summary="The entries, in file and line order", responses=_ERRORS)
async def get_entries(
    request: Request,
    viewer: AnyViewer,
    file_id: FileIdFilter = None,
    stream: StreamFilter = None,
    tenant: TenantFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[EntryOut]:
    sel = _selection(viewer, tenant, file_id, stream)
    entries, total = await _call(sel, service.show, context_of(request).platform, sel, limit=limit, offset=offset)
    return Page[EntryOut](items=[EntryOut.of(e) for e in entries], total=total, limit=limit, offset=offset)


@router.post("/replay", response_model=list[ReplayOut], summary="Ingest the entries again", responses=_POST_ERRORS)
async def post_replay(
    request: Request, body: ReplayIn, viewer: AnyViewer, tenant: TenantFilter = None
) -> list[ReplayOut]:
    """Replay a file's rows through the tenant's batch app (each under its original key;
    a second replay is a no-op) or republish a stream's messages with their original ids.
    Answers once done; a run that failed is in ``errors`` and its entries stay."""
    sel = _selection(viewer, tenant, body.file_id, body.stream)
    ctx = context_of(request)
    try:
        outcomes = await quarantine_replay.replay(ctx.platform, sel, broker=ctx.broker)
    except MysimbdpError as exc:
        raise _refused(exc, sel) from exc
    return [ReplayOut.of(o) for o in outcomes]


@router.post("/purge", response_model=PurgeOut, summary="Delete entries for good, recorded", responses=_POST_ERRORS)
async def post_purge(request: Request, body: PurgeIn, viewer: AnyViewer, tenant: TenantFilter = None) -> PurgeOut:
    """Delete a file's, a stream's or (``all``) every entry of the tenant; who (``by``, else
    the key's owner), when and how many is recorded (GET /v1/quarantine/purges)."""
    sel = _selection(viewer, tenant, body.file_id, body.stream)
    if (body.file_id is None and body.stream is None) != body.all:
        raise Refused(422, f"{sel}: give file_id, stream, or all: true for every entry", tenant=sel.tenant)
    key = "operator key" if viewer.is_operator else "tenant key"
    who = body.by or ("operator" if viewer.is_operator else f"tenant {sel.tenant}")
    record = await _call(sel, service.purge, context_of(request).platform, sel, purged_by=who, via=f"api ({key})")
    return PurgeOut.of(record)


@router.get("/purges", response_model=Page[PurgeOut], summary="Purges, newest first", responses=_ERRORS)
async def get_purges(
    request: Request,
    viewer: AnyViewer,
    tenant: TenantFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[PurgeOut]:
    sel = _selection(viewer, tenant, None, None)
    records, total = await _call(
        sel, service.purges, context_of(request).platform, sel.tenant, limit=limit, offset=offset
    )
    return Page[PurgeOut](items=[PurgeOut.of(r) for r in records], total=total, limit=limit, offset=offset)
