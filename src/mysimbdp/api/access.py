"""Who is looking: a tenant (its own history only) or the operator (every tenant).

Credentials come from ``Authorization: Bearer <key>`` or, for reads only (GET, HEAD), the
cookie :data:`KEY_COOKIE` that the dashboard sets after its login form; a cookie never
authorizes a write, so a page on another site cannot make a browser change anything.

- the operator key (``MYSIMBDP_ADMIN_KEY``, compared in constant time) → the operator;
- a tenant's API key → that tenant;
- no credentials at all → the operator only when no operator key is configured and the
  request comes from loopback (the default: ``mysimbdp up`` on one machine), else 401.

A tenant's key on an operator-only route is 403.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials

from mysimbdp.api.app import AUTH_HEADERS, Refused, _bearer, _context

__all__ = ["KEY_COOKIE", "AnyViewer", "OperatorViewer", "Viewer", "credentials", "is_loopback", "viewer_for_key"]

KEY_COOKIE = "mysimbdp_key"
SAFE_METHODS = frozenset({"GET", "HEAD"})

_cookie = APIKeyCookie(
    name=KEY_COOKIE,
    auto_error=False,
    description=f"The same key in the `{KEY_COOKIE}` cookie (set by the dashboard's login; GET only)",
)


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
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
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
    ctx = _context(request)
    admin_key = ctx.platform.settings.admin_key
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        return OPERATOR
    caller = await ctx.caller(key)
    return None if caller is None else Viewer(caller.tenant)


async def _viewer(request: Request, key: Annotated[str | None, Depends(credentials)]) -> Viewer:
    if key is None:
        if not _context(request).platform.settings.admin_key and is_loopback(request):
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
