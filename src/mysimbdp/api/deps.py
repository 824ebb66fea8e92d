"""What every route builds on: the request's context, who is asking, and how errors answer.

Routes raise :class:`Refused`; :data:`EXCEPTION_HANDLERS` renders every error as JSON
``{"error": "<tenant, stream, rule, value>", ...fields}``. A request's tenant is the owner of
its API key, never a URL or body field.

Who is looking (:class:`Viewer`): credentials come from ``Authorization: Bearer <key>`` or,
for reads only (GET, HEAD), the cookie :data:`KEY_COOKIE` that the dashboard sets after its
login form; a cookie never authorizes a write, so a page on another site cannot make a
browser change anything.

- the operator key (``MYSIMBDP_ADMIN_KEY``, compared in constant time) → the operator;
- a tenant's API key → that tenant;
- no credentials at all → the operator only when no operator key is configured and the
  request comes from loopback (the default: ``mysimbdp up`` on one machine), else 401.

A tenant's key on an operator-only route is 403.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, cast

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from mysimbdp.adapters.broker import Broker
from mysimbdp.api.ratelimit import Clock, RateLimiter
from mysimbdp.domain.profile import Profile, StreamApp
from mysimbdp.domain.records import TenantRecord
from mysimbdp.errors import TenantError
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.tenants import hash_key

__all__ = [
    "AUTH_HEADERS",
    "EXCEPTION_HANDLERS",
    "KEY_COOKIE",
    "OPERATOR",
    "TENANT_CACHE_S",
    "AnyViewer",
    "Authenticated",
    "Caller",
    "Context",
    "ErrorBody",
    "OperatorKey",
    "OperatorViewer",
    "Refused",
    "Viewer",
    "authenticated",
    "bearer_scheme",
    "context_of",
    "credentials",
    "documented",
    "is_loopback",
    "require_operator_key",
    "viewer_for_key",
]

TENANT_CACHE_S = 5.0  # a removed key or a changed profile takes effect within this
AUTH_HEADERS = {"WWW-Authenticate": "Bearer"}
KEY_COOKIE = "mysimbdp_key"
SAFE_METHODS = frozenset({"GET", "HEAD"})

log = get_logger("api")


class Refused(Exception):
    """A request answered with an error ``status``; ``fields`` go into the JSON body."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None, **fields: Any) -> None:
        super().__init__(error)
        self.status, self.error, self.headers, self.fields = status, error, headers or {}, fields


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: str


def documented(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, each with its description and :class:`ErrorBody`."""
    return {status: {"model": ErrorBody, "description": text} for status, text in descriptions.items()}


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


EXCEPTION_HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
    Refused: _on_refused,
    RequestValidationError: _on_invalid,
    StarletteHTTPException: _on_http,
}
"""The one error → HTTP table: every error answers as JSON with an ``error`` field."""


@dataclass(frozen=True)
class Caller:
    """The tenant owning the request's API key."""

    tenant: str
    record: TenantRecord
    profile: Profile


@dataclass
class Context:
    """What the routes share, kept on ``app.state``: the platform, the broker, the clock,
    the rate limiter and a short-lived cache of API key owners."""

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


def context_of(request: Request) -> Context:
    """The app's :class:`Context` (set by ``create_app``)."""
    return cast(Context, request.app.state.mysimbdp)


bearer_scheme = HTTPBearer(auto_error=False, description="The tenant's API key: `Authorization: Bearer <api key>`")

_cookie = APIKeyCookie(
    name=KEY_COOKIE,
    auto_error=False,
    description=f"The same key in the `{KEY_COOKIE}` cookie (set by the dashboard's login; GET only)",
)


async def authenticated(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Caller:
    """The tenant owning the bearer token; 401 without one or for an unknown key."""
    if credentials is None:
        message = "missing or malformed Authorization header: send 'Authorization: Bearer <api key>'"
        raise Refused(401, message, AUTH_HEADERS)
    caller = await context_of(request).caller(credentials.credentials)
    if caller is None:
        raise Refused(401, "unknown API key: use the key given when the tenant was added", AUTH_HEADERS)
    return caller


Authenticated = Annotated[Caller, Depends(authenticated)]


@dataclass(frozen=True)
class Viewer:
    """Who is looking: ``tenant`` is None for the operator, who sees every tenant."""

    tenant: str | None

    @property
    def is_operator(self) -> bool:
        return self.tenant is None

    def scope(self, requested: str | None) -> str | None:
        """The tenant whose rows to show: a tenant always sees its own; the operator the
        ``requested`` one, or every tenant (None)."""
        if self.tenant is None:
            return requested
        if requested is not None and requested != self.tenant:
            raise Refused(403, f"tenant {self.tenant!r}: a tenant's key sees only its own tenant, not {requested!r}")
        return self.tenant


OPERATOR = Viewer(None)


def is_loopback(request: Request) -> bool:
    """Whether the request's peer is this machine (127.0.0.0/8, ::1, ::ffff:127.x)."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


async def credentials(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> str | None:
    """The key the request carries: the bearer token, else (reads only) the cookie."""
    if bearer is not None:
        return bearer.credentials
    if cookie and request.method in SAFE_METHODS:
        return cookie
    return None


async def viewer_for_key(request: Request, key: str) -> Viewer | None:
    """The operator for the operator key, the tenant owning an API key, None for neither."""
    ctx = context_of(request)
    admin_key = ctx.platform.settings.admin_key
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        return OPERATOR
    caller = await ctx.caller(key)
    return None if caller is None else Viewer(caller.tenant)


async def _viewer(request: Request, key: Annotated[str | None, Depends(credentials)]) -> Viewer:
    if key is None:
        if not context_of(request).platform.settings.admin_key and is_loopback(request):
            return OPERATOR
        message = f"no credentials: send 'Authorization: Bearer <api key or operator key>' (or the {KEY_COOKIE} cookie)"
        raise Refused(401, message, AUTH_HEADERS)
    viewer = await viewer_for_key(request, key)
    if viewer is None:
        raise Refused(401, "unknown key: use a tenant's API key or the operator key (MYSIMBDP_ADMIN_KEY)", AUTH_HEADERS)
    return viewer


async def _operator(viewer: Annotated[Viewer, Depends(_viewer)]) -> Viewer:
    if not viewer.is_operator:
        raise Refused(403, f"tenant {viewer.tenant!r}: this route is the operator's; a tenant's API key cannot use it")
    return viewer


AnyViewer = Annotated[Viewer, Depends(_viewer)]
OperatorViewer = Annotated[Viewer, Depends(_operator)]


async def require_operator_key(request: Request, key: Annotated[str | None, Depends(credentials)]) -> None:
    """The operator API's check: the operator key, never loopback alone. Without a key: 401;
    with a tenant's key: 403; with no operator key configured the operator API is off: 403."""
    if key is None:
        raise Refused(401, "missing Authorization header: send 'Authorization: Bearer <operator key>'", AUTH_HEADERS)
    viewer = await viewer_for_key(request, key)
    if viewer is not None and viewer.is_operator:
        return
    if viewer is not None:
        raise Refused(403, "a tenant's API key cannot use the operator API")
    if not context_of(request).platform.settings.admin_key:
        raise Refused(403, "the operator API is off: start the platform with MYSIMBDP_ADMIN_KEY set")
    raise Refused(401, "unknown operator key", AUTH_HEADERS)


OperatorKey = Depends(require_operator_key)
