"""``mysimbdp up``'s wiring: the databroker (embedded NATS, or the one of
``MYSIMBDP_BROKER_URL``) and every manager, run together until stopped (:func:`run_services`)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mysimbdp.adapters.broker import TenantUsers
from mysimbdp.adapters.broker.nats import BrokerUsers, EmbeddedNats
from mysimbdp.errors import ConfigError
from mysimbdp.logs import get_logger
from mysimbdp.managers.batchingest import BatchIngestManager
from mysimbdp.managers.chunkworker import ChunkTasks, ChunkWorker
from mysimbdp.managers.fetchdata import FetchData
from mysimbdp.managers.notifier import Notifier
from mysimbdp.managers.streamingest import StreamIngestManager
from mysimbdp.managers.streammonitor import StreamMonitor
from mysimbdp.runtime.platform import Platform
from mysimbdp.settings import Settings

__all__ = ["BrokerAccess", "api_urls", "check_tls", "databroker", "run_services"]

log = get_logger("databroker")


@dataclass(frozen=True)
class BrokerAccess:
    """The platform's broker URL, and the URL a tenant's apps get (its own user)."""

    url: str
    users: TenantUsers | None = None  # None: an external NATS, whose users the operator keeps

    def tenant_url(self, tenant: str) -> str:
        if self.users is None:
            return self.url
        return self.users.tenant_url(tenant) or self.users.add_tenant(tenant)


def check_tls(settings: Settings) -> None:
    """Load the API's certificate and key now, so that a wrong file stops ``up`` before it starts."""
    if not settings.api_tls_cert:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.api_tls_cert, settings.api_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"api: rule tls: cannot load certificate {settings.api_tls_cert!r} with key {settings.api_tls_key!r}: "
            f"{exc}; give PEM files (up --tls-cert FILE --tls-key FILE)"
        ) from exc


def api_urls(settings: Settings, sock: socket.socket) -> tuple[str, str]:
    """The API's and the dashboard's URLs on ``sock`` (its real port: ``--port 0`` picks one)."""
    host, port = sock.getsockname()[:2]
    scheme = "https" if settings.api_tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}/v1/", f"{scheme}://{shown}:{port}/"


@asynccontextmanager
async def databroker(platform: Platform) -> AsyncIterator[BrokerAccess]:
    """The broker for this run: ``MYSIMBDP_BROKER_URL``, else an embedded NATS server started
    under ``HOME/broker`` (users and permissions from :mod:`broker.nats.users`) for as long as the
    block runs; its platform URL is in ``HOME/broker/url`` (mode 0600, sealed) meanwhile."""
    if platform.settings.broker_url:
        yield BrokerAccess(platform.settings.broker_url, platform.broker_users())
        return
    users = BrokerUsers(platform.settings.home / "broker", platform.secrets)
    server = EmbeddedNats(users.dir, port=users.port, config=users.write_config())
    await asyncio.to_thread(server.start)
    url_file = users.dir / "url"
    url_file.touch(mode=0o600)
    url_file.write_text(platform.secrets.seal(users.platform_url()) + "\n")  # for workers; sealed
    log.info("embedded_broker_started", url=server.url, store=str(server.store_dir))
    try:
        yield BrokerAccess(users.platform_url(), users)
    finally:
        url_file.unlink(missing_ok=True)
        await asyncio.to_thread(server.stop)
        log.info("embedded_broker_stopped")


async def run_services(
    platform: Platform,
    stop: asyncio.Event,
    *,
    drain_s: float = 30.0,
    api_socket: socket.socket | None = None,
    ready: asyncio.Future[BrokerAccess] | None = None,
) -> None:
    """Run the broker (embedded unless configured), the REST API, fetchdata, the batch ingest
    manager, chunk workers (``settings.workers`` slots), the stream ingest manager, the stream
    monitor and the notifier until ``stop`` is set, then drain.
    The API listens on ``api_socket`` (default: bound to the settings' host and port); ``ready``
    gets the broker's access once it is connected."""
    from mysimbdp.managers.apiserver import bind_api, serve_api  # FastAPI's imports: only when serving

    api_socket = api_socket or bind_api(platform.settings)
    async with databroker(platform) as access:
        broker = platform.broker(access.url)
        await broker.connect()
        if ready is not None:
            ready.set_result(access)
        try:
            manager = BatchIngestManager(platform, drain_s=drain_s, publish=ChunkTasks(broker).publish)
            fetcher = FetchData(platform, on_decision=lambda _d: manager.wake())
            streams = StreamIngestManager(platform, broker, access.tenant_url)
            monitor = StreamMonitor(platform, broker)
            workers = platform.settings.workers
            chunk_workers = [ChunkWorker(platform, broker, slots=workers, drain_s=drain_s).run(stop)] if workers else []
            await asyncio.gather(
                *chunk_workers,
                fetcher.run(stop),
                manager.run(stop),
                streams.run(stop),
                monitor.run(stop),
                Notifier(platform).run(stop),
                serve_api(platform, broker, stop, api_socket),
            )
        finally:
            api_socket.close()
            await broker.close()
