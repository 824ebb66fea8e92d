"""Long-running loops, each with ``run(stop: asyncio.Event)``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mysimbdp.adapters.broker import open_broker
from mysimbdp.adapters.embedded_nats import EmbeddedNats
from mysimbdp.logs import get_logger
from mysimbdp.managers.apiserver import bind_api, serve_api
from mysimbdp.managers.batchingest import BatchIngestManager
from mysimbdp.managers.fetchdata import FetchData
from mysimbdp.managers.streamingest import StreamIngestManager
from mysimbdp.managers.streammonitor import StreamMonitor
from mysimbdp.platform import Platform

__all__ = ["BatchIngestManager", "FetchData", "StreamIngestManager", "StreamMonitor", "databroker", "run_services"]

log = get_logger("databroker")


@asynccontextmanager
async def databroker(platform: Platform) -> AsyncIterator[str]:
    """The broker URL for this run: ``MYSIMBDP_BROKER_URL``, else an embedded NATS server
    started under ``HOME/broker`` for as long as the block runs (its URL is written to
    ``HOME/broker/url`` for tools and tenants on this machine)."""
    if platform.settings.broker_url:
        yield platform.settings.broker_url
        return
    server = EmbeddedNats(platform.settings.home / "broker")
    url = await asyncio.to_thread(server.start)
    url_file = server.store_dir / "url"
    url_file.write_text(url + "\n")
    log.info("embedded_broker_started", url=url, store=str(server.store_dir))
    try:
        yield url
    finally:
        url_file.unlink(missing_ok=True)
        await asyncio.to_thread(server.stop)
        log.info("embedded_broker_stopped")


async def run_services(
    platform: Platform, stop: asyncio.Event, *, drain_s: float = 30.0, api_port: int | None = None
) -> None:
    """Run the broker (embedded unless configured), the REST API, fetchdata, the batch ingest
    manager, the stream ingest manager and the stream monitor until ``stop`` is set, then drain. ``api_port``
    overrides the settings' (0: any free port)."""
    api_socket = bind_api(platform.settings, api_port)
    async with databroker(platform) as broker_url:
        broker = open_broker(broker_url)
        await broker.connect()
        try:
            manager = BatchIngestManager(platform, drain_s=drain_s)
            fetcher = FetchData(platform, on_decision=lambda _d: manager.wake())
            streams = StreamIngestManager(platform, broker_url)
            monitor = StreamMonitor(platform, broker)
            await asyncio.gather(
                fetcher.run(stop),
                manager.run(stop),
                streams.run(stop),
                monitor.run(stop),
                serve_api(platform, broker, stop, api_socket),
            )
        finally:
            api_socket.close()
            await broker.close()
