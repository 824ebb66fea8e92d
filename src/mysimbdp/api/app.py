"""mysimbdp-api: the HTTP door for tenants' stream producers and readers (FastAPI).

``create_app(platform, broker)`` wires thin routes to a started platform and a connected
broker; the caller owns both (starts and closes them). A request's tenant is the owner of its
API key, never a URL or body field. Routes raise :class:`Refused`; one handler renders every
error as JSON ``{"error": "<tenant, stream, rule, value>", ...fields}``.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import Annotated, Any, cast

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from mysimbdp import __version__
from mysimbdp.adapters.broker import Broker, tenant_stream_problem
from mysimbdp.adapters.coredms import open_store
from mysimbdp.api.ratelimit import Clock, RateLimiter, retry_after_s
from mysimbdp.domain.envelope import Envelope, MessageInvalid, batch_id, encode_batch, parse_post
from mysimbdp.domain.naming import dataset_problem
from mysimbdp.domain.profile import Profile, StreamApp, StreamLimits
from mysimbdp.domain.records import TenantRecord
from mysimbdp.errors import BrokerError, BrokerUnavailable, StoreError, StoreUnavailable, TenantError
from mysimbdp.logs import get_logger
from mysimbdp.platform import Platform
from mysimbdp.services.tenants import hash_key

__all__ = ["Refused", "create_app"]

TENANT_CACHE_S = 5.0  # a removed key or a changed profile takes effect within this
BROKER_RETRY_AFTER_S = 2
MEDIA_TYPES = {"application/json": False, "application/x-ndjson": True}  # media type -> is NDJSON
AUTH_HEADERS = {"WWW-Authenticate": "Bearer"}

log = get_logger("api")


class Refused(Exception):
    """A request answered with an error ``status``; ``fields`` go into the JSON body."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None, **fields: Any) -> None:
        super().__init__(error)
        self.status, self.error, self.headers, self.fields = status, error, headers or {}, fields


class Health(BaseModel):
    status: str


class Accepted(BaseModel):
    tenant: str
    stream: str
    dataset: str
    ids: list[str]


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: str


@dataclass(frozen=True)
class Caller:
    """The tenant owning the request's API key."""

    tenant: str
    record: TenantRecord
    profile: Profile


@dataclass
class _Context:
    platform: Platform
    broker: Broker
    clock: Clock
    limiter: RateLimiter
    callers: dict[str, tuple[float, Caller]] = field(default_factory=dict)  # key hash -> (expires, caller)
    streams_seen: set[tuple[str, str]] = field(default_factory=set)  # (tenant, stream) with a target

    async def first_message(self, tenant: str, stream: str, app: StreamApp | None) -> None:
        """A stream's first message: its app gets ``min_instances`` (unless the operator set a target)."""
        if app is None or (tenant, stream) in self.streams_seen:
            return
        if await asyncio.to_thread(
            self.platform.meta.streams.ensure_target, tenant, stream, app.name, app.min_instances
        ):
            log.info("stream_registered", tenant=tenant, stream=stream, app=app.name, instances=app.min_instances)
        self.streams_seen.add((tenant, stream))

    async def caller(self, api_key: str) -> Caller | None:
        key_hash, now = hash_key(api_key), self.clock()
        cached = self.callers.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await asyncio.to_thread(self._lookup, key_hash)
        if found is None:
            self.callers.pop(key_hash, None)
        else:  # cached, but never past the end of a key being rotated out
            ends = await asyncio.to_thread(self.platform.meta.keys.expires_at, key_hash)
            left_s = TENANT_CACHE_S if ends is None else min(TENANT_CACHE_S, ends - time.time())  # wall clock
            self.callers[key_hash] = (now + left_s, found)
        return found

    def forget_tenant(self, tenant: str) -> None:
        """Drop the tenant's cached keys (after a rotation here: the next request asks the store)."""
        for key_hash in [h for h, (_, caller) in self.callers.items() if caller.tenant == tenant]:
            self.callers.pop(key_hash, None)

    def _lookup(self, key_hash: str) -> Caller | None:
        tenant = self.platform.meta.tenant_for_key(key_hash)
        if tenant is None:
            return None
        try:
            record, profile = self.platform.tenant(tenant)
        except TenantError:  # removed in between
            return None
        return Caller(tenant, record, profile)


def _context(request: Request) -> _Context:
    return cast(_Context, request.app.state.mysimbdp)


_bearer = HTTPBearer(auto_error=False, description="The tenant's API key: `Authorization: Bearer <api key>`")


async def _authenticated(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    if credentials is None:
        message = "missing or malformed Authorization header: send 'Authorization: Bearer <api key>'"
        raise Refused(401, message, AUTH_HEADERS)
    caller = await _context(request).caller(credentials.credentials)
    if caller is None:
        raise Refused(401, "unknown API key: use the key given when the tenant was added", AUTH_HEADERS)
    return caller


Authenticated = Annotated[Caller, Depends(_authenticated)]


@dataclass(frozen=True)
class _Target:
    """Where a POST goes; every refusal names both."""

    tenant: str
    stream: str

    def refuse(self, status: int, message: str, headers: dict[str, str] | None = None, **fields: Any) -> Refused:
        error = f"tenant {self.tenant!r}, stream {self.stream!r}: {message}"
        return Refused(status, error, headers, tenant=self.tenant, stream=self.stream, **fields)

    def too_large(self, rule: str, value: int, limit: int, what: str, **fields: Any) -> Refused:
        unit = "messages" if rule == "max_batch_messages" else "bytes"
        message = f"{what} is {value} {unit}, over {rule} {limit}"
        return self.refuse(413, message, None, rule=rule, value=value, **{f"limit_{unit}": limit}, **fields)


async def _read_body(request: Request, to: _Target, limit_bytes: int) -> bytes:
    """The body, refused as soon as it is known to exceed ``limit_bytes`` (never held whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise to.too_large("max_batch_bytes", int(declared), limit_bytes, "the body (Content-Length)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise to.too_large("max_batch_bytes", size, limit_bytes, "the body read so far")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_batch(envelopes: list[Envelope], limits: StreamLimits, to: _Target) -> None:
    if len(envelopes) > limits.max_batch_messages:
        raise to.too_large("max_batch_messages", len(envelopes), limits.max_batch_messages, "the batch")
    for number, envelope in enumerate(envelopes, 1):
        size = len(orjson.dumps(envelope.data))
        if size > limits.max_message_bytes:
            raise to.too_large("max_message_bytes", size, limits.max_message_bytes, f"item {number}", item=number)


def _documented(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": text} for status, text in descriptions.items()}


_ERRORS = {401: "No or unknown API key", 422: "Invalid request (body, stream or dataset name, query)"}
_POST_ERRORS = _documented(
    {
        **_ERRORS,
        413: "Over max_batch_bytes, max_message_bytes or max_batch_messages",
        415: "Not application/json or application/x-ndjson",
        429: "Over the tenant's rate; see Retry-After",
        503: "Broker unavailable, nothing accepted; see Retry-After",
    }
)
_POST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]},
            },
            "application/x-ndjson": {"schema": {"type": "string", "description": "one JSON object per line"}},
        },
        "description": 'Documents, or envelopes {"id", "data", "ts"?, "schema"?} (an id makes a re-post a no-op)',
    }
}

router = APIRouter()


@router.get("/healthz", summary="Liveness", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.post(
    "/v1/streams/{stream}/messages",
    status_code=202,
    response_model=Accepted,
    summary="Publish messages to one of the tenant's streams",
    description="Answers 202 only once the broker confirmed the batch durable.",
    responses=_POST_ERRORS,
    openapi_extra=_POST_BODY,
)
async def post_messages(stream: str, request: Request, caller: Authenticated) -> Accepted:
    ctx, tenant, limits = _context(request), caller.tenant, caller.profile.stream_limits
    to = _Target(tenant, stream)
    if problem := tenant_stream_problem(stream):
        raise to.refuse(422, problem)
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in MEDIA_TYPES:
        raise to.refuse(415, f"content type {media_type or '(none)'!r} is not accepted", accepted=list(MEDIA_TYPES))
    body = await _read_body(request, to, limits.max_batch_bytes)
    try:
        envelopes = parse_post(body, ndjson=MEDIA_TYPES[media_type])
    except MessageInvalid as exc:
        raise to.refuse(422, str(exc), line=exc.line) from exc
    _check_batch(envelopes, limits, to)
    count, rate, burst = len(envelopes), limits.messages_per_s, limits.burst_messages
    bucket = ctx.limiter.bucket(tenant, rate, burst)
    if wait_s := bucket.take(count):
        retry = str(retry_after_s(wait_s))
        message = f"{count} messages over messages_per_s {rate} (burst_messages {burst}); retry in {retry} s"
        raise to.refuse(429, message, {"Retry-After": retry}, rule="messages_per_s", value=count, limit_per_s=rate)
    try:
        await ctx.broker.publish(tenant, stream, [encode_batch(tenant, stream, envelopes)], [batch_id(envelopes)])
    except BrokerError as exc:
        bucket.give_back(count)
        log.warning("messages_refused", tenant=tenant, stream=stream, count=count, error=str(exc))
        if isinstance(exc, BrokerUnavailable):
            raise to.refuse(503, f"nothing was accepted: {exc}", {"Retry-After": str(BROKER_RETRY_AFTER_S)}) from exc
        raise to.refuse(502, f"nothing was accepted: {exc}") from exc
    app = caller.profile.stream_app_for(stream)
    dataset = app.dataset if app is not None and app.dataset else stream
    log.info("messages_accepted", tenant=tenant, stream=stream, count=count)
    await ctx.first_message(tenant, stream, app)
    return Accepted(tenant=tenant, stream=stream, dataset=dataset, ids=[e.id for e in envelopes])


def _read_documents(coredms_url: str, dataset: str, limit: int, offset: int) -> list[dict[str, Any]]:
    with closing(open_store(coredms_url)) as store:
        return store.documents(dataset, limit=limit, offset=offset)


@router.get(
    "/v1/datasets/{dataset}/documents",
    response_model=list[dict[str, Any]],
    summary="Read the tenant's stored documents of one dataset, ordered by key",
    responses=_documented({**_ERRORS, 503: "The document store is unavailable"}),
)
async def get_documents(
    dataset: str,
    caller: Authenticated,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    where = f"tenant {caller.tenant!r}, dataset {dataset!r}"
    if problem := dataset_problem(dataset):
        raise Refused(422, f"tenant {caller.tenant!r}: {problem}", tenant=caller.tenant, dataset=dataset)
    try:
        docs = await asyncio.to_thread(_read_documents, caller.record.coredms_url, dataset, limit, offset)
    except StoreUnavailable as exc:
        raise Refused(503, f"{where}: {exc}", {"Retry-After": "5"}, tenant=caller.tenant, dataset=dataset) from exc
    except StoreError as exc:
        log.error("documents_failed", tenant=caller.tenant, dataset=dataset, error=str(exc))
        raise Refused(500, f"{where}: {exc}", tenant=caller.tenant, dataset=dataset) from exc
    return Response(orjson.dumps(docs), media_type="application/json")


async def _on_refused(request: Request, exc: Exception) -> Response:
    refused = cast(Refused, exc)
    return JSONResponse({"error": refused.error, **refused.fields}, refused.status, refused.headers)


async def _on_invalid(request: Request, exc: Exception) -> Response:
    problems = [
        f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in cast(RequestValidationError, exc).errors()
    ]
    return JSONResponse({"error": "invalid request: " + "; ".join(problems), "problems": problems}, 422)


async def _on_http(request: Request, exc: Exception) -> Response:
    http = cast(StarletteHTTPException, exc)
    error = f"{request.method} {request.url.path}: {http.detail}"
    return JSONResponse({"error": error}, http.status_code, http.headers)


def create_app(platform: Platform, broker: Broker, *, clock: Clock = time.monotonic) -> FastAPI:
    """The API over a started ``platform`` and a connected ``broker`` (neither is closed here)."""
    app = FastAPI(
        title="mysimbdp-api",
        version=__version__,
        description="Publish messages to your streams and read your stored documents. "
        "Authenticate with `Authorization: Bearer <api key>`.",
    )
    app.state.mysimbdp = _Context(platform, broker, clock, RateLimiter(clock))
    app.add_exception_handler(Refused, _on_refused)
    app.add_exception_handler(RequestValidationError, _on_invalid)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.include_router(router)
    from mysimbdp.api import admin, dashboard, history, metrics  # they build on this module

    app.include_router(admin.router)
    app.include_router(history.router)
    from mysimbdp.api import quarantine  # replay and purge, beside the history's listing

    app.include_router(quarantine.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.STATIC, name="static")
    return app
