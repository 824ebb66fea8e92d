"""Send a batch file over HTTP: ``POST /v1/files?name=NAME`` (Bearer key: the tenant's).

The contract (the remote CLI builds on it):

- Body: the file's bytes (any content type but multipart), or ``multipart/form-data`` whose
  first part with a filename is the file (``curl -F file=@x.csv``); ``?name=`` is the file's
  name in the platform either way (required). ``Idempotency-Key: <up to 200 chars>`` (optional)
  makes a retry safe: a key already answered answers the same status and file again, with the
  file's status now, and stores nothing twice; a key whose first request still runs is 409.
- Answer (JSON): ``file_id``, ``status``, ``reasons`` (list of strings), ``name``,
  ``size_bytes``, ``sha256``, ``location``; ``Location: /v1/files/{file_id}`` (the history API).
  - **201** ``status`` ``staged``: accepted, waiting for the tenant's batch app;
  - **422** with ``file_id``, ``status`` ``rejected`` and ``reasons``: the file broke its
    profile (recorded, kept under ``rejected/``);
  - **200** the same content was accepted before: ``file_id``/``status``/``Location`` are the
    earlier file's, ``duplicate_file_id`` the record of this upload, ``reasons`` say so.
- ``Prefer: respond-async`` (RFC 7240): answer as soon as the body is on disk, fsynced and kept
  under its file id, before the checks: **202** ``status`` ``checking``, ``file_id``,
  ``sha256``, ``Location: /v1/files/{file_id}`` and ``Preference-Applied: respond-async``. The
  same checks then run at once in the API process; ``GET /v1/files/{file_id}`` answers
  ``checking`` until they have decided, then the outcome (``staged``, ``rejected`` or
  ``duplicate``, with its reasons). The file waits in the inbox as ``_received-<file id>-<name>``
  until it is decided: after a crash or a stop fetchdata checks it, under the same file id (its
  ``checking`` record says whose it is: a name without one is an inbox file like any other).
  Refusals while reading (name, size, quota, a short body) are answered as without the header.
  An ``Idempotency-Key`` replays the 202, with the file's status now.
- Refused before the file is fetched (nothing kept, no ``file_id``): JSON ``error`` (names the
  tenant, the file, the rule and the value) and ``rule``, with the limit where one applies
  (``limit_bytes``, ``limit_files``, ``timeout_s``): 422 ``file_name`` (checked before any
  byte is read); 413 ``size`` (a Content-Length over ``max_file_size_bytes`` at once, a body
  growing over it as soon as it does); 429 ``daily_bytes``/``daily_files``; 400
  ``content_length`` (the body ended before or after its Content-Length), ``multipart``,
  ``disconnected``; 408 ``idle_timeout`` (no byte for ``MYSIMBDP_UPLOAD_IDLE_TIMEOUT_S``);
  409 ``idempotency_key``; 401 no or unknown key; 503 the meta store is unavailable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from mysimbdp.api.deps import Authenticated, Caller, Refused, context_of, documented
from mysimbdp.api.multipart import boundary_of, file_part
from mysimbdp.errors import FileStillWritten, StoreUnavailable, UploadRefused
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.fetch import Received, fetch_received
from mysimbdp.services.upload import (
    Allowance,
    Answer,
    Receiver,
    allowance,
    answer_for,
    check_name,
    hand_to_fetch,
    keep_received,
    partial_path,
    receive,
    replayed_answer,
)

__all__ = [
    "RULE_STATUS",
    "BodyCounter",
    "FileUploaded",
    "LaterChecks",
    "declared_length",
    "refusal",
    "router",
    "store_refusal",
    "wants_async",
]

MULTIPART_ROOM_BYTES = 64 * 1024  # a multipart body's Content-Length may exceed the file by this much
MAX_KEY_LENGTH = 200
RULE_STATUS = {
    "file_name": 422,
    "size": 413,
    "daily_bytes": 429,
    "daily_files": 429,
    "idle_timeout": 408,
    "content_length": 400,
    "multipart": 400,
    "disconnected": 400,
}
"""The HTTP status of each upload rule (``UploadRefused.rule``); tus adds its own."""

log = get_logger("api")


class LaterChecks:
    """The checks of uploads answered 202 (``Prefer: respond-async``), started in this process
    at once, at most ``max_workers`` at a time. What a crash or a stop leaves unchecked,
    fetchdata checks (:func:`~mysimbdp.services.fetch.fetch_file` knows a kept upload's name)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.slots = asyncio.Semaphore(max(1, platform.settings.max_workers))
        self.running: set[asyncio.Task[None]] = set()

    @classmethod
    def of(cls, request: Request) -> LaterChecks:
        state = request.app.state
        if getattr(state, "later_checks", None) is None:
            state.later_checks = cls(context_of(request).platform)
        return state.later_checks  # type: ignore[no-any-return]

    def start(self, tenant: str, path: Path, received: Received | None) -> None:
        task = asyncio.get_running_loop().create_task(self._check(tenant, path, received))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _check(self, tenant: str, path: Path, received: Received | None) -> None:
        async with self.slots:
            try:
                decision = await asyncio.to_thread(fetch_received, self.platform, tenant, path, received)
            except FileStillWritten:  # fetchdata took it first (all slots here were busy)
                return
            except Exception as exc:  # a store outage: the file waits in the inbox, fetchdata takes it
                log.warning("upload_check_failed", tenant=tenant, file=path.name, error=str(exc))
                return
        if decision is not None:
            log.info("upload_checked", tenant=tenant, file_id=decision.file_id, status=str(decision.status))


router = APIRouter(prefix="/v1", tags=["files"])

_ERRORS = documented(
    {
        400: "The body ended before or after its Content-Length, is not valid multipart, or was cut off",
        401: "No or unknown API key",
        408: "No byte for MYSIMBDP_UPLOAD_IDLE_TIMEOUT_S seconds; nothing kept",
        409: "A request with this Idempotency-Key is still running",
        413: "Over the profile's max_file_size_bytes (limit_bytes in the answer); nothing kept",
        422: "An unsafe file name (nothing read), or the file was rejected by its profile (also file_id, "
        "status, reasons and Location)",
        429: "Over the daily byte or file quota (limit_bytes / limit_files in the answer); nothing kept",
        503: "The meta store is unavailable; see Retry-After",
    }
)
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "The file's bytes (any content type); or multipart/form-data, whose first part with "
        "a filename is the file (curl -F file=@PATH)",
    }
}


class FileUploaded(BaseModel):
    """The answer of an upload that was fetched (200, 201; 422 adds ``error``)."""

    file_id: str
    status: str
    reasons: list[str]
    name: str
    size_bytes: int
    sha256: str
    location: str
    duplicate_file_id: str | None = None  # 200: this upload's own record (file_id is the earlier file)
    replayed: bool | None = None  # the answer of an earlier request with the same Idempotency-Key


def refusal(exc: UploadRefused, status: int | None = None) -> Refused:
    """The HTTP answer of an upload refused by a rule."""
    return Refused(status or RULE_STATUS.get(exc.rule, 400), str(exc), None, rule=exc.rule, **exc.fields)


def store_refusal(exc: StoreUnavailable) -> Refused:
    return Refused(503, f"the meta store is unavailable: {exc}", {"Retry-After": "5"})


class BodyCounter:
    """A request's body as a stream, counting its bytes: a client gone midway (rule
    ``disconnected``) and a body that ends before or after its Content-Length (rule
    ``content_length``) are refused. ``kept``: what a refusal says became of the bytes."""

    def __init__(self, request: Request, where: str, kept: str = "nothing was kept") -> None:
        self.request, self.where, self.kept, self.total_bytes = request, where, kept, 0
        self.declared_bytes = declared_length(request)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.request.stream():
                self.total_bytes += len(chunk)
                yield chunk
        except ClientDisconnect as exc:
            raise UploadRefused(
                "disconnected",
                f"{self.where}: rule disconnected: the client closed the connection after {self.total_bytes} "
                f"bytes of the body; {self.kept}",
                received_bytes=self.total_bytes,
            ) from exc
        if self.declared_bytes is not None and self.total_bytes != self.declared_bytes:
            raise UploadRefused(
                "content_length",
                f"{self.where}: rule content_length: the body is {self.total_bytes} bytes, its Content-Length said "
                f"{self.declared_bytes}; {self.kept}",
                value_bytes=self.total_bytes,
                declared_bytes=self.declared_bytes,
            )


def declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length", "")
    return int(raw) if raw.isdigit() else None


def wants_async(prefer: str | None) -> bool:
    """Whether a ``Prefer`` header (RFC 7240: comma-separated, case-insensitive tokens, each
    with optional ``;`` parameters) asks for ``respond-async``."""
    return any(
        p.split(";", 1)[0].split("=", 1)[0].strip().lower() == "respond-async" for p in (prefer or "").split(",")
    )


async def _take(request: Request, caller: Caller, name: str, limits: Allowance, *, later: bool = False) -> Answer:
    """Stream the body into a partial file, then fetch it (``later``: keep it under a file id
    and answer 202, the checks start after); refusals remove the partial file."""
    platform = context_of(request).platform
    where = f"tenant {caller.tenant!r}: file {name!r}"
    boundary = boundary_of(request.headers.get("content-type", ""))
    declared = declared_length(request)
    if declared is not None:
        room = MULTIPART_ROOM_BYTES if boundary else 0
        limits.check(max(0, declared - room), "the body (Content-Length)")
    counter = BodyCounter(request, where)
    chunks = counter.chunks() if boundary is None else file_part(counter.chunks(), boundary, where)
    receiver = Receiver(partial_path(platform, caller.tenant), limits)
    await receiver.open()
    try:
        await receive(chunks, receiver, platform.settings.upload_idle_timeout_s)
        await receiver.close()
    except BaseException:
        await receiver.discard()
        raise
    log.info(
        "file_uploaded",
        tenant=caller.tenant,
        file=name,
        size_bytes=receiver.received_bytes,
        sha256=receiver.hexdigest("sha256"),
    )
    if later:
        received = Received(receiver.hexdigest("sha256"), receiver.received_bytes)
        record, kept = await asyncio.to_thread(keep_received, platform, caller.tenant, receiver.path, name, received)
        LaterChecks.of(request).start(caller.tenant, kept, received)
        return Answer(202, record.id, str(record.status), (), name, record.size_bytes, record.sha256)
    decision = await asyncio.to_thread(
        hand_to_fetch, platform, caller.tenant, receiver.path, name, received=receiver.received()
    )
    return await asyncio.to_thread(answer_for, platform, decision)


def _respond(answer: Answer, **extra: object) -> JSONResponse:
    headers = {"Location": answer.location}
    if answer.status_code == 202:
        headers["Preference-Applied"] = "respond-async"
    return JSONResponse({**answer.body(), **extra}, answer.status_code, headers)


async def _replay(platform: Platform, caller: Caller, key: str) -> JSONResponse | None:
    """The earlier answer of ``key`` (None: reserved now for this request)."""
    now = time.time()
    earlier = await asyncio.to_thread(
        platform.meta.uploads.reserve_key, caller.tenant, key, now, now - platform.settings.upload_expire_s
    )
    if earlier is None:
        return None
    if not earlier.file_id:
        raise Refused(
            409,
            f"tenant {caller.tenant!r}: Idempotency-Key {key!r}: rule idempotency_key: a request with this key is "
            "still running; retry after it ends",
            rule="idempotency_key",
        )
    answer = await asyncio.to_thread(replayed_answer, platform, earlier.file_id, earlier.status_code, caller.tenant)
    if answer is None:  # its file was removed meanwhile (tenant removed and added again)
        await asyncio.to_thread(platform.meta.uploads.release_key, caller.tenant, key)
        return None
    return _respond(answer, replayed=True)


@router.post(
    "/files",
    summary="Upload a batch file (raw body or multipart); fetched as an inbox file is",
    status_code=201,
    response_model=FileUploaded,
    responses={
        200: {"model": FileUploaded, "description": "The same content was accepted before: the earlier file"},
        201: {"description": "Staged: accepted, waiting for the tenant's batch app"},
        202: {
            "model": FileUploaded,
            "description": "With Prefer: respond-async: the file is on disk and kept under its file_id (status "
            "received); its checks run after the answer, GET Location tells their outcome. Header "
            "Preference-Applied: respond-async",
        },
        **_ERRORS,
    },
    openapi_extra=_BODY,
)
async def upload_file(
    request: Request,
    caller: Authenticated,
    name: Annotated[str, Query(max_length=4096, description="The file's name (its extension gives its format)")],
    idempotency_key: Annotated[str | None, Header(max_length=MAX_KEY_LENGTH)] = None,
    prefer: Annotated[
        str | None,
        Header(
            description="RFC 7240; respond-async: 202 as soon as the file is on disk and kept, before its checks "
            "(GET Location for their outcome)"
        ),
    ] = None,
) -> JSONResponse:
    """Without ``Prefer: respond-async`` the answer waits for the checks (201, 422, 200); with
    it, 202 once the body is on disk, fsynced and kept under its file id. See the module doc."""
    platform = context_of(request).platform
    try:
        check_name(caller.tenant, name)
        if idempotency_key:
            replayed = await _replay(platform, caller, idempotency_key)
            if replayed is not None:
                return replayed
        try:
            limits = await asyncio.to_thread(allowance, platform, caller.tenant, caller.profile, name)
            answer = await _take(request, caller, name, limits, later=wants_async(prefer))
        except BaseException:
            if idempotency_key:
                await asyncio.to_thread(platform.meta.uploads.release_key, caller.tenant, idempotency_key)
            raise
    except UploadRefused as exc:
        log.warning("upload_refused", tenant=caller.tenant, file=name[:300], rule=exc.rule)
        raise refusal(exc) from exc
    except StoreUnavailable as exc:
        raise store_refusal(exc) from exc
    if idempotency_key:
        await asyncio.to_thread(
            platform.meta.uploads.settle_key, caller.tenant, idempotency_key, answer.file_id, answer.status_code
        )
    return _respond(answer)
