"""``mysimbdp doctor``: the environment checks an operator runs first — the tenant-app
sandbox, the meta store, coredms, the broker, the broker's replicas, the store's replication,
the API address (and the platform's API from a worker node), Python and disk space.

Each check gives ``ok``, ``warn`` or ``fail`` with one line saying what was found and, when
something is wrong, what to do. Every network check gives up after ``CONNECT_TIMEOUT_S``.
A store or broker URL naming several hosts has each host asked, and named in the detail
with whether it answers; a cluster with one host down still works, so that is a warning.
Nothing is changed except that the meta store is opened (created on SQLite, as every
command does).
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mysimbdp.adapters.broker.nats import nats_server_binary
from mysimbdp.adapters.coredms import sqlite_path
from mysimbdp.errors import ConfigError, MysimbdpError
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.doctor_net import CONNECT_TIMEOUT_S, Check, answers, host_list, reach
from mysimbdp.services.doctor_postgres import store_replication
from mysimbdp.services.doctor_replication import broker_replicas
from mysimbdp.settings import mask_url

__all__ = ["CONNECT_TIMEOUT_S", "Check", "run_checks"]

LOW_DISK_BYTES = 1 << 30
MIN_PYTHON = (3, 11)
BROKER_KINDS = {"nats": "NATS", "tls": "NATS", "amqp": "RabbitMQ", "amqps": "RabbitMQ"}


def _silent(url: str) -> list[str]:
    """The ``host:port`` of ``url`` that accept no TCP connection (asked at once)."""
    return [where for where, up in reach(url).items() if not up]


def _hosts(url: str) -> tuple[str, dict[str, bool]]:
    """The hosts of a multi-host URL, each said to answer or not ("" for one host), and all."""
    reached = reach(url)
    return (f"; hosts: {host_list(reached)}" if len(reached) > 1 else ""), reached


def _sandbox(platform: Platform) -> Check:
    status = platform.sandbox_status
    state = "ok" if status.enforced else "warn" if status.mode == "off" else "fail"
    return Check("sandbox", state, status.summary().removeprefix("sandbox: "), status.as_dict())


def _meta(platform: Platform) -> Check:
    url = platform.settings.meta_url
    backend = "sqlite" if urlsplit(url).scheme == "sqlite" else "postgresql"
    data: dict[str, Any] = {"backend": backend, "url": mask_url(url)}
    hosts, reached = _hosts(url) if backend == "postgresql" else ("", {})
    data["hosts"] = reached
    silent = [where for where, up in reached.items() if not up]
    if silent and len(silent) == len(reached):
        detail = f"PostgreSQL {mask_url(url)}: {', '.join(silent)} does not answer; start it or fix MYSIMBDP_META_URL"
        return Check("meta store", "fail", detail, data)
    try:
        platform.start()
        tenants = len(platform.meta.list_tenants())
    except MysimbdpError as exc:
        return Check("meta store", "fail", f"{mask_url(url)}: {exc}{hosts}; fix MYSIMBDP_META_URL", data)
    name = "SQLite" if backend == "sqlite" else "PostgreSQL"
    detail = f"{name} {mask_url(url)}: open, {tenants} tenant(s){hosts}"
    return Check("meta store", "warn" if silent else "ok", detail, {**data, "tenants": tenants})


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _coredms(platform: Platform) -> Check:
    url = platform.settings.coredms_url
    if urlsplit(url).scheme == "sqlite":
        directory = Path(sqlite_path(url))
        found = _existing(directory)
        data = {"backend": "sqlite", "url": url, "directory": str(directory)}
        try:
            if not found.is_dir():
                raise NotADirectoryError(20, "not a directory")
            with tempfile.TemporaryFile(dir=found):  # a real write: modes, ACLs and read-only mounts all count
                pass
        except OSError as exc:
            detail = f"SQLite {url}: cannot write in {found} ({exc.strerror}); fix it or MYSIMBDP_COREDMS_URL"
            return Check("coredms", "fail", detail, data)
        where = "writable" if found == directory else f"to be created under {found} (writable)"
        return Check("coredms", "ok", f"SQLite {url}: one database per tenant, {where}", data)
    return _postgres_admin(url)


def _postgres_admin(url: str) -> Check:
    """Connect with the admin URL and check the role can provision tenants (roles, schemas)."""
    import psycopg  # only when coredms is PostgreSQL

    masked = mask_url(url)
    hosts, reached = _hosts(url)
    data: dict[str, Any] = {"backend": "postgresql", "url": masked, "hosts": reached}
    silent = [where for where, up in reached.items() if not up]
    if silent and len(silent) == len(reached):
        detail = f"PostgreSQL {masked}: {', '.join(silent)} does not answer; start it or fix MYSIMBDP_COREDMS_URL"
        return Check("coredms", "fail", detail, data)
    try:
        with psycopg.connect(url, connect_timeout=round(CONNECT_TIMEOUT_S), autocommit=True) as conn:
            row = conn.execute(
                "SELECT current_user, rolsuper OR rolcreaterole, has_database_privilege(current_database(), 'CREATE')"
                " FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        detail = f"PostgreSQL {masked}: cannot connect: {reason}{hosts}; fix MYSIMBDP_COREDMS_URL"
        return Check("coredms", "fail", detail, data)
    user, create_roles, create_schemas = row if row is not None else ("?", False, False)
    data.update(user=user, can_create_roles=bool(create_roles), can_create_schemas=bool(create_schemas))
    needed = (("CREATEROLE", create_roles), ("CREATE on the database", create_schemas))
    missing = [what for what, can in needed if not can]
    if missing:
        detail = (
            f"PostgreSQL {masked}: connected as {user}, who lacks {' and '.join(missing)}: `tenant add` would fail; "
            "put an admin role in MYSIMBDP_COREDMS_URL"
        )
        return Check("coredms", "fail", detail, data)
    detail = f"PostgreSQL {masked}: connected as {user}, can create tenant roles and schemas{hosts}"
    return Check("coredms", "warn" if silent else "ok", detail, data)


def _broker(platform: Platform) -> Check:
    url = platform.settings.broker_url
    if url:
        kind = BROKER_KINDS.get(urlsplit(url).scheme, "broker")
        hosts, reached = _hosts(url)
        data = {"kind": kind.lower(), "url": mask_url(url), "hosts": reached}
        silent = [where for where, up in reached.items() if not up]
        if len(silent) == len(reached):
            detail = f"{kind} {mask_url(url)}: {', '.join(silent)} does not answer; start it or fix MYSIMBDP_BROKER_URL"
            return Check("broker", "fail", detail, data)
        if silent:
            detail = f"{kind} {mask_url(url)}: {len(silent)} of {len(reached)} hosts do not answer: {', '.join(silent)}"
            return Check("broker", "warn", f"{detail}{hosts}", data)
        if hosts:
            return Check("broker", "ok", f"{kind} {mask_url(url)}: answers{hosts}", data)
        return Check("broker", "ok", f"{kind} {mask_url(url)}: answers", data)
    try:
        binary = nats_server_binary()
    except ConfigError as exc:
        return Check("broker", "fail", f"embedded NATS: {exc}", {"kind": "embedded"})
    data = {"kind": "embedded", "binary": str(binary), "running_url": ""}
    detail = f"embedded NATS JetStream, {binary}"
    try:
        running = platform.running_broker_url()
    except ConfigError:
        return Check("broker", "ok", f"{detail}; no platform running with this home", data)
    data["running_url"] = mask_url(running)
    if _silent(running):
        stale = f"HOME/broker/url lists {mask_url(running)} but it does not answer (left by a platform that died?)"
        return Check("broker", "warn", f"{detail}; {stale}: `up` replaces it", data)
    return Check("broker", "ok", f"{detail}; the running platform's broker {mask_url(running)} answers", data)


def _healthz(address: str) -> str:
    """What ``GET address/healthz`` says: "" when a platform answers ok."""
    import httpx  # only when the port is taken

    try:
        answer = httpx.get(f"{address}/healthz", timeout=CONNECT_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return f"no HTTP answer ({type(exc).__name__})"
    try:
        body = answer.json() if answer.status_code == 200 else None
    except ValueError:
        body = None
    return "" if isinstance(body, dict) and body.get("status") == "ok" else f"/healthz answered {answer.status_code}"


def _api(platform: Platform) -> Check:
    host, port = platform.settings.api_host, platform.settings.api_port
    ipv6 = ":" in host
    local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 (the bind-everything addresses)
    address = f"http://[{local}]:{port}" if ipv6 else f"http://{local}:{port}"
    data: dict[str, Any] = {"host": host, "port": port, "in_use": False}
    with socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as `up` binds it
        try:
            sock.bind((host, port))
        except OSError as exc:
            bind_error = exc.strerror or str(exc)
        else:
            return Check("api", "ok", f"{host}:{port} is free: `up` serves the API and the dashboard there", data)
    data["in_use"] = True
    if not answers((local, port)):
        detail = f"{host}:{port}: cannot listen there ({bind_error}); set MYSIMBDP_API_HOST/MYSIMBDP_API_PORT"
        return Check("api", "fail", detail, data)
    problem = _healthz(address)
    if problem:
        detail = f"{host}:{port} is taken by another program ({problem}); `up` cannot start: set MYSIMBDP_API_PORT"
        return Check("api", "fail", detail, data)
    return Check("api", "ok", f"{host}:{port}: a running platform answers {address}/healthz", data)


def _secrets(platform: Platform) -> Check:
    """The key that seals the platform's secrets: usable (a seal that opens), and where it is."""
    box = platform.secrets
    box.open(box.seal("doctor"), "doctor")  # raises ConfigError naming the variable and the remedy
    data = {"source": box.source}
    return Check("secrets", "ok", f"sealed at rest with the key from {box.source}", data)


def _python(_: Platform) -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    state = "ok" if sys.version_info >= MIN_PYTHON else "fail"
    return Check("python", state, f"Python {version} at {sys.executable}", {"version": version})


def _disk(platform: Platform) -> Check:
    found = _existing(platform.settings.home)
    free = shutil.disk_usage(found).free
    state = "ok" if free >= LOW_DISK_BYTES else "warn"
    advice = "" if state == "ok" else f" (under {LOW_DISK_BYTES >> 30} GiB: staging and the stores may fill it)"
    return Check("disk", state, f"{free / (1 << 30):.1f} GiB free at {found}{advice}", {"free_bytes": free})


def _platform_api(url: str) -> Check:
    """A worker node's platform: ``GET URL/healthz`` answers ok within the timeout."""
    base = url.rstrip("/")
    data = {"url": mask_url(base)}
    problem = _healthz(base)
    if problem:
        detail = f"{mask_url(base)}: {problem}; start `mysimbdp up` there or fix MYSIMBDP_API_URL (--api)"
        return Check("platform api", "fail", detail, data)
    return Check("platform api", "ok", f"{mask_url(base)}/healthz answers ok (this node works through it)", data)


CHECKS: tuple[tuple[str, Callable[[Platform], Check]], ...] = (
    ("sandbox", _sandbox),
    ("meta store", _meta),
    ("coredms", _coredms),
    ("broker", _broker),
    ("broker replicas", broker_replicas),
    ("store replication", store_replication),
    ("api", _api),
    ("secrets", _secrets),
    ("python", _python),
    ("disk", _disk),
)


def run_checks(platform: Platform, api_url: str = "") -> list[Check]:
    """Every check, in order (``platform api`` after ``api`` when ``api_url``, a worker node's
    MYSIMBDP_API_URL, is given); one that raises becomes a failed check naming the error."""
    checks = list(CHECKS)
    if api_url:
        checks.insert(checks.index(("api", _api)) + 1, ("platform api", lambda _: _platform_api(api_url)))
    found = []
    for name, check in checks:
        try:
            found.append(check(platform))
        except (OSError, MysimbdpError) as exc:
            found.append(Check(name, "fail", f"{type(exc).__name__}: {exc}"))
    return found
