"""mysimbdp-api: the HTTP door for tenants' stream producers and readers (FastAPI).

``create_app(platform, broker)`` wires thin routes to a started platform and a connected
broker; the caller owns both (starts and closes them). A request's tenant is the owner of its
API key, never a URL or body field. Routes raise :class:`~mysimbdp.api.deps.Refused`; one
handler renders every error as JSON ``{"error": "<tenant, stream, rule, value>", ...fields}``.

This module only assembles: the shared context, auth and errors are in :mod:`mysimbdp.api.deps`,
the routes in :mod:`mysimbdp.api.routes`.
"""

from __future__ import annotations

import time

from fastapi import FastAPI

from mysimbdp import __version__
from mysimbdp.adapters.broker import Broker
from mysimbdp.api.deps import EXCEPTION_HANDLERS, Context
from mysimbdp.api.ratelimit import Clock, RateLimiter
from mysimbdp.api.routes import (
    admin,
    dashboard,
    datasets,
    files,
    history,
    messages,
    metrics,
    quarantine,
    uploads,
    worker,
)
from mysimbdp.runtime.platform import Platform

__all__ = ["create_app"]


def create_app(platform: Platform, broker: Broker, *, clock: Clock = time.monotonic) -> FastAPI:
    """The API over a started ``platform`` and a connected ``broker`` (neither is closed here)."""
    app = FastAPI(
        title="mysimbdp-api",
        version=__version__,
        description="Publish messages to your streams and read your stored documents. "
        "Authenticate with `Authorization: Bearer <api key>`.",
    )
    app.state.mysimbdp = Context(platform, broker, clock, RateLimiter(clock))
    for error, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(error, handler)
    for routes in (
        messages,
        datasets,
        files,
        uploads,
        admin,
        history,
        quarantine,
        metrics,
        dashboard,
        worker,
    ):  # the order of /docs
        app.include_router(routes.router)
    app.mount("/static", dashboard.STATIC, name="static")
    return app
