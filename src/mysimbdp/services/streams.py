"""Stream instances, as the operator asks for them: targets in the meta store that the
stream ingest manager (inside ``mysimbdp up``) carries out within a poll interval."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from mysimbdp.adapters.broker import tenant_stream_problem
from mysimbdp.domain.profile import StreamApp
from mysimbdp.domain.records import StreamTarget
from mysimbdp.errors import BrokerError, TenantError
from mysimbdp.runtime.platform import Platform


def _app(platform: Platform, tenant: str, stream: str, app_name: str | None) -> StreamApp:
    if problem := tenant_stream_problem(stream):
        raise BrokerError(f"tenant {tenant!r}: {problem}")
    _, profile = platform.tenant(tenant)
    if app_name is None:
        app = profile.stream_app_for(stream)
        if app is None:
            raise TenantError(f"tenant {tenant!r}: no stream app's 'streams' pattern matches stream {stream!r}")
        return app
    for app in profile.stream_apps:
        if app.name == app_name:
            return app
    names = [a.name for a in profile.stream_apps]
    raise TenantError(f"tenant {tenant!r}: no stream app named {app_name!r} (the profile has {names})")


def start(platform: Platform, tenant: str, stream: str, app_name: str | None, instances: int | None) -> StreamTarget:
    """Ask for ``instances`` instances (default: the app's ``min_instances``, at least 1)."""
    app = _app(platform, tenant, stream, app_name)
    count = instances if instances is not None else max(1, app.min_instances)
    if not 0 <= count <= app.max_instances:
        raise TenantError(
            f"tenant {tenant!r}, stream {stream!r}, app {app.name!r}: rule max_instances: "
            f"{count} instances asked, the profile allows 0 to {app.max_instances}"
        )
    platform.meta.streams.set_target(tenant, stream, app.name, count)
    return StreamTarget(tenant, stream, app.name, count)


def stop(platform: Platform, tenant: str, stream: str | None, app_name: str | None) -> list[StreamTarget]:
    """Set the matching targets to 0 instances; return them."""
    platform.tenant(tenant)  # an unknown tenant is an error, not a no-op
    stopped = []
    for target in platform.meta.streams.targets(tenant):
        if (stream is None or target.stream == stream) and (app_name is None or target.app == app_name):
            platform.meta.streams.set_target(target.tenant, target.stream, target.app, 0)
            stopped.append(StreamTarget(target.tenant, target.stream, target.app, 0))
    return stopped


def status(platform: Platform, tenant: str | None) -> list[dict[str, Any]]:
    """Each target with its live instances (pid, state, restarts, last exit)."""
    if tenant is not None:
        platform.tenant(tenant)
    instances = platform.meta.streams.instances(tenant)
    out = []
    for target in platform.meta.streams.targets(tenant):
        mine = [
            asdict(i) for i in instances if (i.tenant, i.stream, i.app) == (target.tenant, target.stream, target.app)
        ]
        out.append({**asdict(target), "running": sum(i["state"] == "running" for i in mine), "instance_list": mine})
    return out
