"""The history API: what happened to a tenant's files, runs, quarantined rows and streams.

A tenant sees only its own rows (another tenant's file id is 404, as if it did not exist);
the operator sees every tenant's, or one with ``?tenant=``. Listings page newest first
with ``limit``/``offset`` and say how many rows match in ``total``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import astuple
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel

from mysimbdp.adapters.broker import STREAM_RE
from mysimbdp.adapters.metastore.chunks import ChunkRecord, ChunkRegistry, ChunkStatus
from mysimbdp.adapters.metastore.history import MetaHistory
from mysimbdp.adapters.metastore.quality import QualityLedger
from mysimbdp.api.deps import AnyViewer, Refused, context_of, documented
from mysimbdp.domain.naming import TENANT_ID_RE
from mysimbdp.domain.qualitycounts import FileQuality, QualityVerdict
from mysimbdp.domain.records import FileRecord, QuarantinedRow, RunRecord, ScalingRecord
from mysimbdp.domain.sources import STREAM_PREFIX
from mysimbdp.domain.states import FileStatus, RunStatus
from mysimbdp.errors import StoreError, StoreUnavailable

__all__ = ["router"]

SAMPLE_ROWS = 20  # quarantined rows shown with a file
MAX_OFFSET = 1_000_000_000
MAX_ID_LENGTH = 300
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: such a filter is refused (422), not a 500
T = TypeVar("T")

router = APIRouter(prefix="/v1", tags=["history"])

_ERRORS = documented(
    {
        401: "No credentials, or an unknown key",
        403: "A tenant's key asked for another tenant (?tenant=)",
        422: "Invalid query",
        503: "The meta store is unavailable; see Retry-After",
    }
)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int  # rows matching the filters, over all pages
    limit: int
    offset: int


class FileOut(BaseModel):
    id: str
    tenant: str
    name: str
    status: FileStatus
    format: str
    size_bytes: int
    sha256: str
    received_at: float
    updated_at: float
    app: str
    dataset: str
    attempts: int
    rows_total: int
    rows_written: int
    rows_rejected: int
    rows_skipped: int
    reasons: list[str]
    run_id: str
    path: str  # where the file is now on the platform (inbox, staging, archive, failed, rejected)

    @classmethod
    def of(cls, f: FileRecord) -> FileOut:
        return cls(
            **{name: getattr(f, name) for name in cls.model_fields if name != "reasons"}, reasons=list(f.reasons)
        )


class FileEventOut(BaseModel):
    at: float
    status: str
    detail: dict[str, Any]


class RunOut(BaseModel):
    id: str
    file_id: str
    tenant: str
    app: str
    attempt: int
    status: RunStatus | None  # None while running
    started_at: float
    ended_at: float | None
    duration_s: float | None
    exit_code: int | None
    rows_written: int
    rows_rejected: int
    bytes_read: int
    peak_rss_bytes: int
    error: str
    stderr_tail: str

    @classmethod
    def of(cls, r: RunRecord) -> RunOut:
        duration = None if r.ended_at is None else round(r.ended_at - r.started_at, 6)
        fields = {name: getattr(r, name) for name in cls.model_fields if name != "duration_s"}
        return cls(**fields, duration_s=duration)


class QuarantinedOut(BaseModel):
    tenant: str
    kind: Literal["batch", "stream"]
    file_id: str  # a file's id, or "stream:<stream>:<instance>"
    stream: str | None  # for kind "stream"
    run_id: str
    line: int
    reason: str
    raw: str
    at: float

    @classmethod
    def of(cls, row: QuarantinedRow) -> QuarantinedOut:
        tenant, file_id, run_id, line, raw, reason, at = astuple(row)
        stream = file_id.split(":")[1] if file_id.startswith(STREAM_PREFIX) else None
        kind: Literal["batch", "stream"] = "batch" if stream is None else "stream"
        return cls(
            tenant=tenant,
            kind=kind,
            file_id=file_id,
            stream=stream,
            run_id=run_id,
            line=line,
            reason=reason,
            raw=raw,
            at=at,
        )


class FileQualityOut(BaseModel):
    """What the profile's quality rules found in the file when fetchdata checked it."""

    rows_checked: int
    rows_failed: int  # rows failing at least one rule or unparsable
    ratio: float
    max_bad_row_ratio: float  # the tenant's threshold then
    verdict: QualityVerdict  # rejected: over the threshold, the whole file was rejected
    failed_by_rule: dict[str, int]  # "<field>.<check>", "ragged", "parse", "line_length" -> rows

    @classmethod
    def of(cls, q: FileQuality) -> FileQualityOut:
        return cls.model_validate(q.to_json())


class ChunkOut(BaseModel):
    """One chunk of a big file ingested in parallel micro-batches (``big_files`` in the profile)."""

    index: int
    status: ChunkStatus
    start_byte: int
    end_byte: int  # exclusive
    first_line: int  # of the whole file
    attempts: int
    worker: str  # who runs it now ("" unless running)
    rows_written: int
    rows_rejected: int
    rows_skipped: int
    started_at: float
    ended_at: float
    error: str

    @classmethod
    def of(cls, c: ChunkRecord) -> ChunkOut:
        return cls(
            index=c.index,
            status=c.status,
            start_byte=c.start,
            end_byte=c.end,
            first_line=c.first_line,
            attempts=c.attempts,
            worker=c.worker,
            rows_written=c.rows_written,
            rows_rejected=c.rows_rejected,
            rows_skipped=c.rows_skipped,
            started_at=c.started_at,
            ended_at=c.ended_at,
            error=c.error,
        )


class FileDetail(BaseModel):
    file: FileOut
    quality: FileQualityOut | None  # None for a file fetched before quality was kept
    chunks: list[ChunkOut]  # a big file's chunks ([]: ingested in one run)
    events: list[FileEventOut]  # every status change, oldest first
    runs: list[RunOut]  # oldest first
    quarantined_rows: int  # in the quarantine ledger
    quarantine_sample: list[QuarantinedOut]  # up to SAMPLE_ROWS of them


class DecisionOut(BaseModel):
    at: float
    tenant: str
    stream: str
    app: str
    from_instances: int
    to_instances: int
    reason: str
    inputs: dict[str, Any]

    @classmethod
    def of(cls, d: ScalingRecord) -> DecisionOut:
        return cls(**{name: getattr(d, name) for name in cls.model_fields})


async def _read(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except StoreUnavailable as exc:
        raise Refused(503, f"the meta store is unavailable: {exc}", {"Retry-After": "5"}) from exc
    except StoreError as exc:
        raise Refused(500, f"the meta store failed: {exc}") from exc


def _history(request: Request) -> MetaHistory:
    return context_of(request).platform.meta.history


Limit = Annotated[int, Query(ge=1, le=1000, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")]
TenantFilter = Annotated[
    str | None,
    Query(pattern=TENANT_ID_RE.pattern, description="operator only: one tenant (default: every tenant)"),
]
FileIdFilter = Annotated[str | None, Query(pattern=NO_NUL, max_length=MAX_ID_LENGTH)]
StreamFilter = Annotated[str | None, Query(pattern=f"^{STREAM_RE.pattern}$")]
Since = Annotated[float | None, Query(ge=0, allow_inf_nan=False, description="epoch seconds, inclusive")]


@router.get("/files", response_model=Page[FileOut], summary="Files, newest first", responses=_ERRORS)
async def list_files(
    request: Request,
    viewer: AnyViewer,
    status: FileStatus | None = None,
    since: Since = None,
    tenant: TenantFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[FileOut]:
    history = _history(request)
    files, total = await _read(
        history.files, viewer.scope(tenant), status=status, since=since, limit=limit, offset=offset
    )
    return Page[FileOut](items=[FileOut.of(f) for f in files], total=total, limit=limit, offset=offset)


def _detail(
    history: MetaHistory, ledger: QualityLedger, chunks: ChunkRegistry, tenant: str | None, file_id: str
) -> FileDetail | None:
    found = history.file(tenant, file_id)
    if found is None:
        return None
    sample, count = history.quarantine(found.tenant, file_id=found.id, limit=SAMPLE_ROWS, offset=0)
    quality = ledger.file(found.id)
    return FileDetail(
        file=FileOut.of(found),
        quality=FileQualityOut.of(quality) if quality is not None else None,
        chunks=[ChunkOut.of(c) for c in chunks.of_file(found.id)],
        events=[FileEventOut(at=at, status=status, detail=detail) for at, status, detail in history.events(found.id)],
        runs=[RunOut.of(r) for r in history.file_runs(found.id)],
        quarantined_rows=count,
        quarantine_sample=[QuarantinedOut.of(row) for row in sample],
    )


@router.get(
    "/files/{file_id}",
    response_model=FileDetail,
    summary="One file: its record, quality, chunks, status history, runs and quarantined rows",
    responses={**_ERRORS, **documented({404: "No such file (or another tenant's)"})},
)
async def get_file(
    request: Request,
    file_id: Annotated[str, Path(pattern=NO_NUL, max_length=MAX_ID_LENGTH)],
    viewer: AnyViewer,
    tenant: TenantFilter = None,
) -> FileDetail:
    scope = viewer.scope(tenant)
    meta = context_of(request).platform.meta
    detail = await _read(_detail, _history(request), meta.quality, meta.chunks, scope, file_id)
    if detail is None:
        who = "" if scope is None else f"tenant {scope!r}: "
        raise Refused(404, f"{who}no file {file_id!r}; list your files with GET /v1/files", file_id=file_id)
    return detail


@router.get("/runs", response_model=Page[RunOut], summary="Batch app runs, newest first", responses=_ERRORS)
async def list_runs(
    request: Request,
    viewer: AnyViewer,
    status: RunStatus | None = None,
    file_id: FileIdFilter = None,
    tenant: TenantFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[RunOut]:
    runs, total = await _read(
        _history(request).runs, viewer.scope(tenant), status=status, file_id=file_id, limit=limit, offset=offset
    )
    return Page[RunOut](items=[RunOut.of(r) for r in runs], total=total, limit=limit, offset=offset)


@router.get(
    "/quarantine",
    response_model=Page[QuarantinedOut],
    summary="Quarantined rows of files and of stream apps, newest first",
    responses=_ERRORS,
)
async def list_quarantine(
    request: Request,
    viewer: AnyViewer,
    kind: Literal["batch", "stream"] | None = None,
    file_id: FileIdFilter = None,
    tenant: TenantFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[QuarantinedOut]:
    rows, total = await _read(
        _history(request).quarantine, viewer.scope(tenant), kind=kind, file_id=file_id, limit=limit, offset=offset
    )
    return Page[QuarantinedOut](items=[QuarantinedOut.of(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get(
    "/decisions",
    response_model=Page[DecisionOut],
    summary="The stream monitor's scaling decisions, newest first",
    responses=_ERRORS,
)
async def list_decisions(
    request: Request,
    viewer: AnyViewer,
    stream: StreamFilter = None,
    since: Since = None,
    tenant: TenantFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DecisionOut]:
    decisions, total = await _read(
        _history(request).decisions, viewer.scope(tenant), stream=stream, since=since, limit=limit, offset=offset
    )
    return Page[DecisionOut](items=[DecisionOut.of(d) for d in decisions], total=total, limit=limit, offset=offset)
