"""The dashboard: ``/`` for the operator (every tenant) or, signed in with a tenant's API
key, that tenant only. Pages are rendered on the server (Jinja2, charts as inline SVG from
:mod:`charts`); one small script of our own refreshes the panel every few seconds without
reloading the page. Assets are served from the package: nothing is fetched from elsewhere.

Who sees what (:mod:`mysimbdp.api.deps`): the key from the login form is kept in an HttpOnly,
SameSite=Strict cookie; with no key, the operator's view is open to loopback clients only,
and only while no operator key (``MYSIMBDP_ADMIN_KEY``) is configured.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from mysimbdp.api.charts import line_chart
from mysimbdp.api.deps import KEY_COOKIE, OPERATOR, Viewer, context_of, is_loopback, viewer_for_key
from mysimbdp.errors import ConfigError
from mysimbdp.services.overview import Overview, overview
from mysimbdp.services.timeseries import parse_duration

router = APIRouter(include_in_schema=False)
STATIC = StaticFiles(directory=Path(__file__).parent.parent / "static")
PERIODS = (("15m", 900), ("1h", 3600), ("6h", 21600), ("24h", 86400))
REFRESH_MS = 2000


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


_templates = Environment(loader=PackageLoader("mysimbdp.api", "templates"), autoescape=select_autoescape())
_templates.filters.update(clock=_clock, seconds=_seconds)


async def _viewer(request: Request) -> Viewer | None:
    key = request.cookies.get(KEY_COOKIE)
    if key:
        return await viewer_for_key(request, key)
    if not context_of(request).platform.settings.admin_key and is_loopback(request):
        return OPERATOR
    return None


def _since(text: str) -> tuple[str, float]:
    try:
        return text, min(parse_duration(text), 30 * 86400.0)
    except ConfigError:
        return "1h", 3600.0


def _charts(view: Overview) -> list[Markup]:
    span = {"start": view.since, "end": view.generated_at}
    panels = (
        ("batch rows/s", {"": "batch_rows_per_s"}),
        ("stream records/s", {"": "stream_records_per_s"}),
        ("batch run p50 / p95 (s)", {" p50": "batch_run_p50_s", " p95": "batch_run_p95_s"}),
        ("stream latency p50 / p95 (ms)", {" p50": "stream_latency_p50_ms", " p95": "stream_latency_p95_ms"}),
    )
    return [
        Markup(  # noqa: S704 (line_chart escapes every name)
            line_chart(title, {s.tenant + k: getattr(s, f) for s in view.series for k, f in fields.items()}, **span)
        )
        for title, fields in panels
    ]


async def _panel_context(request: Request, viewer: Viewer, since: str, tenant: str | None) -> dict[str, object]:
    label, seconds = _since(since)
    scope = viewer.tenant or tenant
    platform = context_of(request).platform
    view = await asyncio.to_thread(overview, platform, scope, since_s=seconds)
    return {
        "view": view,
        "charts": _charts(view),
        "since": label,
        "operator": viewer.is_operator and scope is None,
        "scope": f"tenant {scope}" if scope else "all tenants",
        "sandbox": platform.sandbox_status,
    }


Since = Annotated[str, Query(max_length=16)]
TenantFilter = Annotated[str | None, Query(max_length=64)]


async def _viewed(request: Request, since: str, tenant: str | None) -> tuple[Viewer, dict[str, object]] | None:
    """Who is looking and the panel's data for them; None when nobody is signed in."""
    viewer = await _viewer(request)
    if viewer is None:
        return None
    return viewer, await _panel_context(request, viewer, since, tenant)


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request, since: Since = "1h", tenant: TenantFilter = None) -> Response:
    viewed = await _viewed(request, since, tenant)
    if viewed is None:
        return RedirectResponse("/login", 303)
    viewer, context = viewed
    query = {"since": context["since"], **({"tenant": tenant} if tenant and viewer.is_operator else {})}
    html = _templates.get_template("dashboard.html").render(
        **context,
        periods=PERIODS,
        query=urlencode(query),
        tenant_filter=tenant if viewer.is_operator else None,
        refresh_ms=REFRESH_MS,
        signed_in=KEY_COOKIE in request.cookies,
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/dashboard/panel", response_class=HTMLResponse)
async def panel(request: Request, since: Since = "1h", tenant: TenantFilter = None) -> Response:
    viewed = await _viewed(request, since, tenant)
    if viewed is None:
        return HTMLResponse("sign in at /login", 401)
    html = _templates.get_template("panel.html").render(**viewed[1])
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/login", response_class=HTMLResponse)
async def login_form() -> Response:
    return HTMLResponse(_templates.get_template("login.html").render(error=None))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode(errors="replace"))
    key = (form.get("key") or [""])[0].strip()
    if not key or await viewer_for_key(request, key) is None:
        error = "That key is neither a tenant's API key nor the operator key."
        return HTMLResponse(_templates.get_template("login.html").render(error=error), 401)
    answer = RedirectResponse("/", 303)
    answer.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return answer


@router.get("/logout")
async def logout() -> Response:
    answer = RedirectResponse("/login", 303)
    answer.delete_cookie(KEY_COOKIE)
    return answer
