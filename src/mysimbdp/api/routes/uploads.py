"""Resumable uploads: the tus 1.0 protocol (https://tus.io/protocols/resumable-upload) under
``/v1/uploads/``, with the extensions creation, termination, checksum and expiration.

The contract (any tus client works, e.g. tuspy or tus-js-client, with the tenant's
``Authorization: Bearer <api key>`` header on every request but OPTIONS):

- ``OPTIONS /v1/uploads/`` → 204: ``Tus-Version: 1.0.0``, ``Tus-Extension``,
  ``Tus-Checksum-Algorithm: sha1,sha256,md5``.
- ``POST /v1/uploads/`` with ``Upload-Length`` and ``Upload-Metadata: filename <base64 name>``
  (``name`` is taken too) → 201, ``Location: /v1/uploads/{id}``, ``Upload-Expires``; JSON
  ``upload_id``, ``location``, ``expires_at``. Refused as ``POST /v1/files`` refuses: 422 an
  unsafe name, 413 a length over ``max_file_size_bytes``, 429 over the daily quotas (an
  unfinished upload holds its whole declared length against the daily byte quota).
- ``HEAD /v1/uploads/{id}`` → 200, ``Upload-Offset`` (the bytes the server holds: resume from
  there), ``Upload-Length``, ``Upload-Expires``, ``Cache-Control: no-store``.
- ``PATCH /v1/uploads/{id}`` with ``Content-Type: application/offset+octet-stream``,
  ``Upload-Offset`` (must be the server's: else 409) and optionally
  ``Upload-Checksum: sha1 <base64 digest>`` (of this PATCH's bytes: a mismatch is 460 and none of
  them are kept) → 204 with the new ``Upload-Offset``. A PATCH cut off or timed out without a
  checksum keeps what arrived. The PATCH carrying the last byte answers once the file was
  fetched, with ``Mysimbdp-File-Id`` and ``Mysimbdp-File-Status`` (staged, rejected; for content
  accepted before, the earlier file's id, and ``Mysimbdp-Duplicate-File-Id``: this upload's own
  record, status ``duplicate``); ``GET /v1/files/{id}`` tells the rest.
- ``DELETE /v1/uploads/{id}`` → 204: the upload and its bytes are gone.
- ``GET /v1/uploads/{id}`` (not tus: for scripts) → JSON ``upload_id``, ``name``,
  ``length_bytes``, ``offset_bytes``, ``expires_at``, ``complete``, ``file_id``, ``file_status``.

Another tenant's upload id, an unknown or a terminated one is 404; an expired upload is 410
(its bytes removed at expiry; 404 once its tombstone goes, one more expiry period later). A
request without ``Tus-Resumable: 1.0.0`` (but OPTIONS, GET) is 412. Every answer carries
``Tus-Resumable: 1.0.0``; refusals are JSON ``error`` + ``rule`` as everywhere in the API.
"""

from __future__ import annotations

import asyncio
from email.utils import formatdate
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from mysimbdp.api.deps import Authenticated, Caller, Refused, context_of, documented
from mysimbdp.api.routes.files import RULE_STATUS, BodyCounter, declared_length, refusal, store_refusal
from mysimbdp.errors import StoreUnavailable, UploadRefused
from mysimbdp.logs import get_logger
from mysimbdp.services import tus
from mysimbdp.services.upload import Allowance

__all__ = ["router"]

TUS_HEADERS = {"Tus-Resumable": tus.TUS_VERSION}
OFFSET_TYPE = "application/offset+octet-stream"
TUS_RULE_STATUS = {
    **RULE_STATUS,
    "not_found": 404,
    "expired": 410,
    "offset": 409,
    "upload_busy": 409,
    "checksum": 460,
    "checksum_algorithm": 400,
    "metadata": 400,
    "upload_length": 413,
    "tus_header": 400,
    "tus_resumable": 412,
    "content_type": 415,
}
FILE_STATUS_HEADERS = ("Mysimbdp-File-Id", "Mysimbdp-File-Status")
DUPLICATE_HEADER = "Mysimbdp-Duplicate-File-Id"

log = get_logger("api")
router = APIRouter(prefix="/v1/uploads", tags=["uploads (tus)"])

_ERRORS = documented(
    {
        400: "A missing or invalid tus header, Upload-Metadata or checksum algorithm; a body cut off",
        401: "No or unknown API key",
        404: "No such upload of this tenant (unknown, another tenant's, terminated)",
        408: "No byte for MYSIMBDP_UPLOAD_IDLE_TIMEOUT_S seconds (a PATCH keeps what arrived)",
        409: "Upload-Offset is not the server's offset, or another PATCH is writing the upload",
        410: "The upload expired (MYSIMBDP_UPLOAD_EXPIRE_S after its creation); its bytes are gone",
        412: "Tus-Resumable is not 1.0.0",
        413: "Upload-Length over max_file_size_bytes, or bytes past Upload-Length",
        415: "PATCH without Content-Type: application/offset+octet-stream",
        422: "An unsafe file name",
        429: "Over the daily byte or file quota",
        460: "Upload-Checksum does not match the PATCH's bytes; none of them were kept",
        503: "The meta store is unavailable; see Retry-After",
    }
)


class UploadCreated(BaseModel):
    upload_id: str
    location: str
    expires_at: float


class UploadOut(BaseModel):
    upload_id: str
    name: str
    length_bytes: int
    offset_bytes: int
    expires_at: float
    complete: bool
    file_id: str | None
    file_status: str | None


def _tus_refusal(exc: UploadRefused) -> Refused:
    refused = refusal(exc, TUS_RULE_STATUS.get(exc.rule, 400))
    refused.headers.update(TUS_HEADERS)
    if exc.rule == "tus_resumable":
        refused.headers["Tus-Version"] = tus.TUS_VERSION
    return refused


async def _tus_version(request: Request, tus_resumable: Annotated[str | None, Header()] = None) -> None:
    """Every tus request but OPTIONS names the protocol version it speaks."""
    if tus_resumable != tus.TUS_VERSION:
        raise _tus_refusal(
            UploadRefused(
                "tus_resumable",
                f"{request.method} {request.url.path}: rule tus_resumable: Tus-Resumable is {tus_resumable!r}; "
                f"this server speaks {tus.TUS_VERSION}",
            )
        )


Tus = Depends(_tus_version)


def _expires(at: float) -> str:
    return formatdate(at, usegmt=True)


async def _find(request: Request, caller: Caller, upload_id: str) -> tus.Progress:
    return await asyncio.to_thread(tus.find, context_of(request).platform, caller.tenant, upload_id)


def _progress_headers(progress: tus.Progress) -> dict[str, str]:
    upload = progress.upload
    headers = {**TUS_HEADERS, "Upload-Offset": str(progress.offset_bytes), "Cache-Control": "no-store"}
    if not progress.complete:
        headers["Upload-Expires"] = _expires(upload.expires_at)
    return headers


def _file_headers(file_id: str, status: str) -> dict[str, str]:
    return dict(zip(FILE_STATUS_HEADERS, (file_id, status), strict=True)) if file_id else {}


async def _file_status(request: Request, progress: tus.Progress) -> tuple[str, str]:
    """The id and status of the file a complete upload made ('' while its scan runs)."""
    upload = progress.upload
    if not upload.file_id:
        return "", ""
    record = await asyncio.to_thread(context_of(request).platform.meta.get_file, upload.file_id)
    return upload.file_id, str(record.status) if record else ""


@router.options("/", summary="tus: what this server supports", status_code=204)
async def tus_options() -> Response:
    return Response(
        status_code=204,
        headers={
            **TUS_HEADERS,
            "Tus-Version": tus.TUS_VERSION,
            "Tus-Extension": tus.TUS_EXTENSIONS,
            "Tus-Checksum-Algorithm": ",".join(tus.CHECKSUM_ALGORITHMS),
        },
    )


@router.post(
    "/",
    summary="tus: create an upload (Upload-Length, Upload-Metadata filename)",
    status_code=201,
    response_model=UploadCreated,
    responses=_ERRORS,
    dependencies=[Tus],
)
async def tus_create(
    request: Request,
    caller: Authenticated,
    upload_length: Annotated[str | None, Header()] = None,
    upload_metadata: Annotated[str, Header(max_length=8192)] = "",
) -> JSONResponse:
    platform = context_of(request).platform
    where = f"tenant {caller.tenant!r}: new upload"
    try:
        if upload_length is None or not upload_length.isdigit():
            raise UploadRefused(
                "tus_header",
                f"{where}: rule tus_header: Upload-Length is {upload_length!r}; send the file's size in bytes "
                "(Upload-Defer-Length is not supported)",
            )
        metadata = tus.parse_metadata(upload_metadata, where)
        name = metadata.get("filename") or metadata.get("name") or ""
        upload = await asyncio.to_thread(tus.create, platform, caller.tenant, caller.profile, name, int(upload_length))
    except UploadRefused as exc:
        log.warning("upload_refused", tenant=caller.tenant, rule=exc.rule, upload="new")
        raise _tus_refusal(exc) from exc
    except StoreUnavailable as exc:
        raise store_refusal(exc) from exc
    location = f"/v1/uploads/{upload.id}"
    headers = {**TUS_HEADERS, "Location": location, "Upload-Expires": _expires(upload.expires_at)}
    body = UploadCreated(upload_id=upload.id, location=location, expires_at=upload.expires_at)
    return JSONResponse(body.model_dump(), 201, headers)


@router.head("/{upload_id}", summary="tus: the upload's offset", responses=_ERRORS, dependencies=[Tus], status_code=200)
async def tus_head(request: Request, caller: Authenticated, upload_id: str) -> Response:
    try:
        progress = await _find(request, caller, upload_id)
    except UploadRefused as exc:
        raise _tus_refusal(exc) from exc
    headers = {**_progress_headers(progress), "Upload-Length": str(progress.upload.length_bytes)}
    headers.update(_file_headers(*await _file_status(request, progress)))
    return Response(status_code=200, headers=headers)


@router.get("/{upload_id}", summary="The upload's state (JSON, not tus)", response_model=UploadOut, responses=_ERRORS)
async def upload_state(request: Request, caller: Authenticated, upload_id: str) -> JSONResponse:
    try:
        progress = await _find(request, caller, upload_id)
    except UploadRefused as exc:
        raise _tus_refusal(exc) from exc
    file_id, status = await _file_status(request, progress)
    upload = progress.upload
    body = UploadOut(
        upload_id=upload.id,
        name=upload.name,
        length_bytes=upload.length_bytes,
        offset_bytes=progress.offset_bytes,
        expires_at=upload.expires_at,
        complete=progress.complete,
        file_id=file_id or None,
        file_status=status or None,
    )
    return JSONResponse(body.model_dump(), 200, TUS_HEADERS)


@router.patch(
    "/{upload_id}",
    summary="tus: append bytes at Upload-Offset (Upload-Checksum optional)",
    status_code=204,
    responses=_ERRORS,
    dependencies=[Tus],
    openapi_extra={
        "requestBody": {"required": True, "content": {OFFSET_TYPE: {"schema": {"type": "string", "format": "binary"}}}}
    },
)
async def tus_patch(
    request: Request,
    caller: Authenticated,
    upload_id: str,
    upload_offset: Annotated[str | None, Header()] = None,
    upload_checksum: Annotated[str | None, Header(max_length=300)] = None,
) -> Response:
    platform = context_of(request).platform
    where = f"tenant {caller.tenant!r}: upload {upload_id!r}"
    try:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != OFFSET_TYPE:
            raise UploadRefused("content_type", f"{where}: rule content_type: a PATCH's body must be {OFFSET_TYPE}")
        if upload_offset is None or not upload_offset.isdigit():
            raise UploadRefused("tus_header", f"{where}: rule tus_header: Upload-Offset is {upload_offset!r}")
        checksum = tus.parse_checksum(upload_checksum, where) if upload_checksum else None
        progress = await _find(request, caller, upload_id)
        upload, limits = progress.upload, caller.profile.limits
        allowed = Allowance(  # its length was held against the day's quota at its creation
            caller.tenant, upload.name, limits.max_file_size_bytes, limits.max_bytes_per_day, 0, upload.length_bytes
        )
        kept = "the bytes before it are kept" if checksum is None else "none of this PATCH's bytes were kept"
        body = BodyCounter(request, f"tenant {caller.tenant!r}: file {upload.name!r}: upload {upload_id!r}", kept)
        patched = await tus.patch(
            platform, progress, int(upload_offset), body.chunks(), checksum, allowed, declared_length(request)
        )
    except UploadRefused as exc:
        log.warning("upload_refused", tenant=caller.tenant, upload_id=upload_id, rule=exc.rule)
        raise _tus_refusal(exc) from exc
    except StoreUnavailable as exc:
        raise store_refusal(exc) from exc
    headers = {**TUS_HEADERS, "Upload-Offset": str(patched.offset_bytes)}
    if patched.answer is None:
        headers["Upload-Expires"] = _expires(upload.expires_at)
    else:
        headers.update(_file_headers(patched.answer.file_id, patched.answer.status))
        if patched.answer.duplicate_file_id:  # content accepted before: this upload's own record
            headers[DUPLICATE_HEADER] = patched.answer.duplicate_file_id
    return Response(status_code=204, headers=headers)


@router.delete(
    "/{upload_id}", summary="tus: terminate the upload", status_code=204, responses=_ERRORS, dependencies=[Tus]
)
async def tus_delete(request: Request, caller: Authenticated, upload_id: str) -> Response:
    try:
        progress = await _find(request, caller, upload_id)
        await asyncio.to_thread(tus.terminate, context_of(request).platform, progress)
    except UploadRefused as exc:
        raise _tus_refusal(exc) from exc
    return Response(status_code=204, headers=TUS_HEADERS)
