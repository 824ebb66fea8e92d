"""The operator's part of the API: stream app instances, as `mysimbdp stream start|stop|status`;
API key rotation; the tenant-app sandbox's status.

Authenticated with the operator key (``MYSIMBDP_ADMIN_KEY``, compared in constant time), from
the ``Authorization`` header or, for GET, the dashboard's cookie (:mod:`mysimbdp.api.deps`).
Without a key: 401; with a tenant's key: 403 (a tenant never steers instances); with no
operator key configured the operator API is off: 403 for everyone, saying so.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from mysimbdp.api.deps import OperatorKey, Refused, context_of, documented
from mysimbdp.domain.naming import TENANT_ID_RE
from mysimbdp.errors import BrokerError, TenantError
from mysimbdp.services import streams as stream_service
from mysimbdp.services import tenants as tenant_service

router = APIRouter(prefix="/v1/admin", tags=["operator"])
TenantPath = Annotated[str, Path(pattern=TENANT_ID_RE.pattern)]
_AUTH_ERRORS = {
    401: "No operator key, or an unknown one",
    403: "A tenant's API key, or the operator API is off (no MYSIMBDP_ADMIN_KEY)",
    422: "Invalid request, or a stream the tenant's profile does not allow",
}
_ERRORS = documented({**_AUTH_ERRORS, 404: "No such tenant"})
_PUT_ERRORS = documented({**_AUTH_ERRORS, 400: "The body is not JSON", 404: "No such tenant"})
_STATUS_ERRORS = documented({code: text for code, text in _AUTH_ERRORS.items() if code != 422})


class InstancesRequest(BaseModel):
    instances: Annotated[int | None, Field(ge=0)] = None  # default: the app's min_instances, at least 1
    app: str | None = None  # default: the first stream app whose patterns match


async def _call(function: Any, *args: Any) -> Any:
    try:
        return await asyncio.to_thread(function, *args)
    except TenantError as exc:
        raise Refused(404 if "does not exist" in str(exc) else 422, str(exc)) from exc
    except BrokerError as exc:
        raise Refused(422, str(exc)) from exc


@router.put(
    "/tenants/{tenant}/streams/{stream}/instances",
    dependencies=[OperatorKey],
    summary="Start or scale",
    responses=_PUT_ERRORS,
)
async def start_instances(request: Request, tenant: TenantPath, stream: str, body: InstancesRequest) -> dict[str, Any]:
    platform = context_of(request).platform
    target = await _call(stream_service.start, platform, tenant, stream, body.app, body.instances)
    return {"tenant": target.tenant, "stream": target.stream, "app": target.app, "instances": target.instances}


@router.delete(
    "/tenants/{tenant}/streams/{stream}/instances", dependencies=[OperatorKey], summary="Stop", responses=_ERRORS
)
async def stop_instances(request: Request, tenant: TenantPath, stream: str) -> list[dict[str, Any]]:
    stopped = await _call(stream_service.stop, context_of(request).platform, tenant, stream, None)
    return [{"tenant": t.tenant, "stream": t.stream, "app": t.app, "instances": t.instances} for t in stopped]


@router.get("/streams", dependencies=[OperatorKey], summary="Instances of every stream app", responses=_ERRORS)
async def stream_status(
    request: Request, tenant: Annotated[str | None, Query(pattern=TENANT_ID_RE.pattern)] = None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await _call(stream_service.status, context_of(request).platform, tenant)
    return rows


@router.get("/sandbox", dependencies=[OperatorKey], summary="The tenant-app sandbox", responses=_STATUS_ERRORS)
async def sandbox(request: Request) -> dict[str, Any]:
    """Which sandbox confines tenant apps here (``mechanism``, ``landlock_abi``), or the
    ``warning`` an operator must see: apps running unconfined (``MYSIMBDP_SANDBOX=off``) or
    not running at all (no sandbox on this machine), as ``mysimbdp doctor`` shows it."""
    status = context_of(request).platform.sandbox_status
    return {**status.as_dict(), "summary": status.summary()}


class RotateKeyRequest(BaseModel):
    grace_s: Annotated[float, Field(ge=0, le=tenant_service.MAX_GRACE_S)] = 3600.0  # the current keys' time left


@router.post(
    "/tenants/{tenant}/rotate-key", dependencies=[OperatorKey], summary="Rotate an API key", responses=_PUT_ERRORS
)
async def rotate_key(request: Request, tenant: TenantPath, body: RotateKeyRequest) -> dict[str, Any]:
    """A new API key for the tenant (in this answer only); its current keys stop working
    after ``grace_s`` seconds (default 3600, at most 30 days; 0: at once)."""
    context = context_of(request)
    rotated = await _call(tenant_service.rotate_key, context.platform, tenant, body.grace_s)
    context.forget_tenant(tenant)  # this API's cache learns the old keys' end at their next use
    return {"tenant": tenant, "api_key": rotated.api_key, "old_keys_expire_at": rotated.old_keys_expire_at}
