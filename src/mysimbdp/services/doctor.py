"""``mysimbdp doctor``: the environment checks an operator runs first — the tenant-app
sandbox, the meta store, coredms, the broker, the API address, Python and disk space.

Each check gives ``ok``, ``warn`` or ``fail`` with one line saying what was found; nothing
is changed except that the meta store is opened (created on SQLite, as every command does).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mysimbdp.adapters.embedded_nats import nats_server_binary
from mysimbdp.adapters.sandbox import url_ports
from mysimbdp.errors import MysimbdpError
from mysimbdp.platform import Platform
from mysimbdp.settings import mask_url

__all__ = ["Check", "run_checks"]

CONNECT_TIMEOUT_S = 2.0
LOW_DISK_BYTES = 1 << 30


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # ok | warn | fail
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def _sandbox(platform: Platform) -> Check:
    status = platform.sandbox_status
    state = "ok" if status.enforced else "warn" if status.mode == "off" else "fail"
    return Check("sandbox", state, status.summary().removeprefix("sandbox: "), status.as_dict())


def _meta(platform: Platform) -> Check:
    url = platform.settings.meta_url
    try:
        platform.start()
        tenants = len(platform.meta.list_tenants())
    except MysimbdpError as exc:
        return Check("meta store", "fail", f"{mask_url(url)}: {exc}")
    return Check("meta store", "ok", f"{mask_url(url)}: open, {tenants} tenant(s)")


def _coredms(platform: Platform) -> Check:
    url = platform.settings.coredms_url
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        directory = Path(parts.path)
        probe = directory if directory.exists() else directory.parent
        while not probe.exists():
            probe = probe.parent
        if not os.access(probe, os.W_OK):
            return Check("coredms", "fail", f"{url}: {probe} is not writable")
        return Check("coredms", "ok", f"{url}: SQLite, one directory per tenant")
    host = (parts.hostname or "127.0.0.1").split(",")[0]
    port = url_ports(url)[0]
    if not _reachable(host, port):
        return Check("coredms", "fail", f"{mask_url(url)}: PostgreSQL at {host}:{port} does not answer")
    return Check("coredms", "ok", f"{mask_url(url)}: PostgreSQL at {host}:{port} answers")


def _broker(platform: Platform) -> Check:
    url = platform.settings.broker_url
    if url:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", url_ports(url)[0]
        if not _reachable(host, port):
            return Check("broker", "fail", f"{mask_url(url)}: {host}:{port} does not answer")
        return Check("broker", "ok", f"{mask_url(url)}: {host}:{port} answers")
    try:
        binary = nats_server_binary()
    except MysimbdpError as exc:
        return Check("broker", "fail", f"embedded NATS: {exc}")
    running = platform.settings.home / "broker" / "url"
    extra = "; a running platform's broker is listed in HOME/broker/url" if running.exists() else ""
    return Check("broker", "ok", f"embedded NATS JetStream ({binary}){extra}")


def _api(platform: Platform) -> Check:
    host, port = platform.settings.api_host, platform.settings.api_port
    address = f"http://{host}:{port}"
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            if _reachable(host, port):
                return Check("api", "ok", f"{address}: in use, by a running platform or another program")
            return Check("api", "fail", f"{address}: cannot be bound (MYSIMBDP_API_HOST/MYSIMBDP_API_PORT)")
    return Check("api", "ok", f"{address}: free; `up` serves the API and the dashboard (/) there")


def _python(_: Platform) -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    state = "ok" if sys.version_info >= (3, 11) else "fail"
    return Check("python", state, f"Python {version} at {sys.executable}")


def _disk(platform: Platform) -> Check:
    home = platform.settings.home
    probe = home if home.exists() else home.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    state = "ok" if free >= LOW_DISK_BYTES else "warn"
    return Check("disk", state, f"{free / (1 << 30):.1f} GiB free at {probe}")


CHECKS: tuple[Callable[[Platform], Check], ...] = (_sandbox, _meta, _coredms, _broker, _api, _python, _disk)


def run_checks(platform: Platform) -> list[Check]:
    """Every check, in order; one that raises becomes a failed check naming the error."""
    found = []
    for check in CHECKS:
        try:
            found.append(check(platform))
        except (OSError, MysimbdpError) as exc:
            found.append(Check(check.__name__.strip("_"), "fail", str(exc)))
    return found
