"""The remote chunk workers' part of the API (``mysimbdp worker --api URL``): claim a chunk,
read its byte ranges and its tenant's bundle, report progress, finish or give it back.

Authenticated with a worker token (``Authorization: Bearer <worker token>``, issued by
``mysimbdp worker token create``), and only with one: a tenant's API key or the operator key
gets 401 here, and a worker token gets 401 on every other route (it is no tenant's key and not
the operator key). Revoked, it gets 401 at its next request. A token reaches only the chunks it
claimed, while it holds them (404 for another's, 409 once its lease was lost), and only the
byte ranges its task names (416 otherwise), and the bundle of a tenant whose chunk it holds.
See :mod:`mysimbdp.services.remotework` for how the claims go through the chunk ledger.
"""

from __future__ import annotations

import asyncio
import pathlib
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from mysimbdp.adapters.metastore.chunks import ChunkRecord, ChunkStatus
from mysimbdp.adapters.metastore.workers import WorkerClaim
from mysimbdp.adapters.process.runner import Outcome
from mysimbdp.api.deps import AUTH_HEADERS, Refused, bearer_scheme, context_of, documented
from mysimbdp.api.streaming import read_ahead
from mysimbdp.domain.naming import TENANT_ID_RE
from mysimbdp.domain.remotetask import SHA256_HEX, WORKER_LABEL
from mysimbdp.errors import MysimbdpError
from mysimbdp.services import remotework
from mysimbdp.services.tenants import hash_key

router = APIRouter(prefix="/v1/worker", tags=["chunk workers"])
RangeHeader = Annotated[str | None, Header(alias="Range", description="bytes=FIRST-LAST of a range the task names")]
TaskPath = Annotated[str, Path(pattern=r"^r[0-9a-f]{20}$", description="The chunk run's id (the claim's `task`)")]
_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")
_AUTH = {401: "No worker token, an unknown or revoked one, or a tenant's or the operator's key"}
_BODY = {400: "The body is not JSON"}
_TASK_ERRORS = {
    **_AUTH,
    404: "No chunk claimed by this token under this task",
    409: "The chunk is no longer this task's (its lease expired, or it ended)",
    422: "Invalid request",
}

_POST_ERRORS = documented({**_TASK_ERRORS, **_BODY})


async def _token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> str:
    if credentials is None:
        raise Refused(401, "missing Authorization header: send 'Authorization: Bearer <worker token>'", AUTH_HEADERS)
    token_hash = hash_key(credentials.credentials)
    token_id = await asyncio.to_thread(context_of(request).platform.meta.worker_tokens.active, token_hash)
    if token_id is None:
        raise Refused(
            401,
            "unknown or revoked worker token: the worker routes take a token of `mysimbdp worker token create`",
            AUTH_HEADERS,
        )
    return token_id


WorkerToken = Annotated[str, Depends(_token)]


class ClaimRequest(BaseModel):
    worker: Annotated[str, Field(pattern=WORKER_LABEL.pattern, description="The worker process's name (host:pid)")]


class ProgressReport(BaseModel):
    rows: Annotated[int, Field(ge=0)] = 0
    bytes: Annotated[int, Field(ge=0)] = 0


class RunReport(BaseModel):
    """How the chunk's app run ended on the worker (the runner's outcome), its result and rejects."""

    exit_code: int | None
    signal: int | None = None
    timed_out: bool = False
    duration_s: Annotated[float, Field(ge=0)] = 0.0
    peak_rss_bytes: Annotated[int, Field(ge=0)] = 0
    stdout_tail: Annotated[str, Field(max_length=1 << 16)] = ""
    stderr_tail: Annotated[str, Field(max_length=1 << 16)] = ""
    stdout_bytes: Annotated[int, Field(ge=0)] = 0
    stderr_bytes: Annotated[int, Field(ge=0)] = 0
    timeout_s: float | None = None
    result: dict[str, Any] = Field(default_factory=dict)
    rejects: str = ""  # the app's rejects file (JSON Lines)
    started: float
    ended: float


class GiveBack(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=4000)]


async def _held(request: Request, token_id: str, task: str) -> tuple[WorkerClaim, ChunkRecord]:
    """The token's claim ``task`` and its chunk, while the claim holds the chunk."""
    meta = context_of(request).platform.meta
    claim = await asyncio.to_thread(meta.worker_claims.get, task)
    if claim is None or claim.token_id != token_id:
        raise Refused(404, f"task {task!r}: no chunk claimed by this worker token under this id")
    chunk = await asyncio.to_thread(meta.chunks.get, claim.file_id, claim.index)
    if claim.ended_at or chunk is None or chunk.run_id != task or chunk.status is not ChunkStatus.RUNNING:
        if not claim.ended_at:  # the ledger says why: the lease expired (the chunk was queued again)
            await asyncio.to_thread(meta.worker_claims.end, task, "lease_expired")
        raise Refused(
            409,
            f"tenant {claim.tenant!r}: file {claim.file_id!r}: chunk {claim.index}: task {task!r} no longer holds it "
            f"({claim.outcome or 'its lease expired and it was queued again'}); claim another",
        )
    return claim, chunk


@router.post(
    "/claims",
    summary="Claim the next chunk",
    responses={204: {"description": "No chunk is waiting"}, **documented({**_AUTH, **_BODY, 422: "Invalid request"})},
)
async def claim(request: Request, token_id: WorkerToken, body: ClaimRequest) -> Any:
    """The next chunk task of any tenant, claimed for this worker under a lease
    (``lease_ttl_s``: renew it with ``progress``); 204 when none is waiting."""
    ctx = context_of(request)
    task = await remotework.claim_next(ctx.platform, ctx.broker, token_id, body.worker)
    return Response(status_code=204) if task is None else task.to_json()


@router.get(
    "/chunks/{task}/bytes",
    summary="Read a byte range of the chunk's file",
    response_class=StreamingResponse,
    status_code=206,
    responses={
        206: {"content": {"application/octet-stream": {}}, "description": "The bytes of the range"},
        **documented({**_TASK_ERRORS, 416: "No Range header, or a range the task does not name"}),
    },
)
async def chunk_bytes(
    request: Request,
    token_id: WorkerToken,
    task: TaskPath,
    range_: Annotated[
        str | None, Header(alias="Range", description="bytes=FIRST-LAST of a range the task names")
    ] = None,
) -> StreamingResponse:
    claim, _ = await _held(request, token_id, task)
    match = _RANGE.match(range_ or "")
    first, last = (int(match[1]), int(match[2])) if match else (0, -1)
    start, end = first, last + 1
    if not match or not any(a <= start < end <= b for a, b, _ in claim.ranges):
        named = ", ".join(f"bytes={a}-{b - 1}" for a, b, _ in claim.ranges)
        raise Refused(416, f"task {task!r}: Range {range_!r} is not one the task names ({named})", ranges=named)
    record = await asyncio.to_thread(context_of(request).platform.meta.get_file, claim.file_id)
    if record is None:
        raise Refused(409, f"tenant {claim.tenant!r}: file {claim.file_id!r} is gone")
    headers = {"Content-Range": f"bytes {start}-{end - 1}/*", "Content-Length": str(end - start)}
    return StreamingResponse(
        read_ahead(remotework.read_range(pathlib.Path(record.path), start, end)),
        status_code=206,
        media_type="application/octet-stream",
        headers=headers,
    )


@router.get(
    "/bundles/{tenant}/{version}",
    summary="The tenant's bundle",
    response_class=Response,
    responses={
        200: {"content": {"application/x-tar": {}}, "description": "The bundle as a tar; its sha256 is the version"},
        **documented(
            {
                **_AUTH,
                403: "This token holds no chunk of the tenant",
                409: "The bundle is no longer this version (claim again)",
                422: "Invalid request",
            }
        ),
    },
)
async def bundle(
    request: Request,
    token_id: WorkerToken,
    tenant: Annotated[str, Path(pattern=TENANT_ID_RE.pattern)],
    version: Annotated[str, Path(pattern=SHA256_HEX.pattern)],
) -> Response:
    platform = context_of(request).platform
    if not await asyncio.to_thread(platform.meta.worker_claims.open_of_tenant, token_id, tenant):
        raise Refused(403, f"tenant {tenant!r}: this worker token holds no chunk of the tenant: no bundle")
    try:
        record, _ = await asyncio.to_thread(platform.tenant, tenant)
        current, data = await asyncio.to_thread(remotework.bundle_archive, record.bundle_dir)
    except (OSError, MysimbdpError) as exc:
        raise Refused(409, f"tenant {tenant!r}: the bundle cannot be read: {exc}") from exc
    if current != version:
        raise Refused(409, f"tenant {tenant!r}: the bundle is now version {current}, not {version}: claim again")
    return Response(data, media_type="application/x-tar")


@router.post(
    "/chunks/{task}/progress",
    summary="Renew the lease, report progress",
    responses=_POST_ERRORS,
)
async def progress(request: Request, token_id: WorkerToken, task: TaskPath, body: ProgressReport) -> dict[str, Any]:
    claim, _ = await _held(request, token_id, task)
    platform = context_of(request).platform
    await asyncio.to_thread(remotework.record_progress, platform, claim, body.rows, body.bytes)
    return {"task": task, "held": True, "lease_ttl_s": platform.settings.lease_ttl_s}


@router.post("/chunks/{task}/finish", summary="Record the chunk's run", responses=_POST_ERRORS)
async def finish(request: Request, token_id: WorkerToken, task: TaskPath, body: RunReport) -> dict[str, Any]:
    """The chunk's run ended on the worker: recorded as a local chunk run's (rows, rejects,
    the run's outcome); the answer's ``outcome`` is the chunk's new status."""
    claim, chunk = await _held(request, token_id, task)
    outcome = Outcome(
        body.exit_code, body.signal, body.timed_out, body.duration_s, body.peak_rss_bytes, body.stdout_tail,
        body.stderr_tail, body.stdout_bytes, body.stderr_bytes, body.timeout_s,
    )  # fmt: skip
    platform = context_of(request).platform
    rejects = body.rejects.encode()
    ended_as = await asyncio.to_thread(
        remotework.finish_remote, platform, claim, chunk, outcome, body.result, rejects, body.started, body.ended
    )
    return {"task": task, "outcome": ended_as}


@router.post("/chunks/{task}/give-back", summary="Give the chunk back", responses=_POST_ERRORS)
async def give_back(request: Request, token_id: WorkerToken, task: TaskPath, body: GiveBack) -> dict[str, Any]:
    """The worker will not run the chunk (what it fetched was refused): it is queued again at once."""
    claim, chunk = await _held(request, token_id, task)
    await asyncio.to_thread(remotework.give_back, context_of(request).platform, claim, chunk, body.reason)
    return {"task": task, "outcome": "given_back"}
