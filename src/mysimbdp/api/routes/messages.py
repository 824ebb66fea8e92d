"""The tenants' door: publish messages to a stream, liveness (reads: ``routes.datasets``).

``POST /v1/streams/{stream}/messages`` checks the content type, the body size (while
reading, never holding an oversize body), the envelopes, the item count and sizes and the
tenant's token bucket, and answers 202 only once the broker confirmed the batch durable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel

from mysimbdp.adapters.broker import tenant_stream_problem
from mysimbdp.api.deps import Authenticated, Refused, context_of, documented
from mysimbdp.api.ratelimit import retry_after_s
from mysimbdp.domain.envelope import Envelope, MessageInvalid, batch_id, encode_batch, parse_post
from mysimbdp.domain.profile import StreamLimits
from mysimbdp.errors import BrokerError, BrokerUnavailable
from mysimbdp.logs import get_logger

__all__ = ["BROKER_RETRY_AFTER_S", "MEDIA_TYPES", "Accepted", "Health", "router"]

BROKER_RETRY_AFTER_S = 2
MEDIA_TYPES = {"application/json": False, "application/x-ndjson": True}  # media type -> is NDJSON

log = get_logger("api")
T = TypeVar("T")


class Health(BaseModel):
    status: str


class Accepted(BaseModel):
    tenant: str
    stream: str
    dataset: str
    ids: list[str]


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


_ERRORS = {401: "No or unknown API key", 422: "Invalid request (body, stream or dataset name, query)"}
_POST_ERRORS = documented(
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
    ctx, tenant, limits = context_of(request), caller.tenant, caller.profile.stream_limits
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
