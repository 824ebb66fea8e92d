"""mysimbdp-api served inside ``mysimbdp up``: uvicorn on the platform's event loop.

uvicorn would take SIGINT/SIGTERM for itself; here ``up`` owns the signals and stops every
service through one ``stop`` event, so the server is told to exit when that event is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn

from mysimbdp.adapters.broker import Broker
from mysimbdp.api import create_app
from mysimbdp.errors import ConfigError
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.settings import Settings

log = get_logger("api")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the caller's stop event decides


def bind_api(settings: Settings, port: int | None = None) -> socket.socket:
    """The API's listening socket, bound now so that a taken port stops ``up`` before it starts."""
    port = settings.api_port if port is None else port
    sock = socket.socket(socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.api_host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"api: cannot listen on {settings.api_host}:{port}: {exc.strerror}; "
            "choose a free port with up --port (or MYSIMBDP_API_PORT)"
        ) from exc
    return sock


async def serve_api(platform: Platform, broker: Broker, stop: asyncio.Event, sock: socket.socket) -> None:
    """Serve the REST API on ``sock`` until ``stop`` is set."""
    settings = platform.settings
    tls = bool(settings.api_tls_cert)
    config = uvicorn.Config(
        create_app(platform, broker),
        log_config=None,
        access_log=False,
        lifespan="off",
        ssl_certfile=settings.api_tls_cert or None,
        ssl_keyfile=settings.api_tls_key or None,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    host, port = sock.getsockname()[:2]
    log.info("api_listening", url=f"{'https' if tls else 'http'}://{host}:{port}", docs="/docs")
    await stop.wait()
    server.should_exit = True
    await task
