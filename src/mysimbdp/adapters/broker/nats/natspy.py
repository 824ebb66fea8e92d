"""``nats-py`` loaded without its WebSocket transport: import this module before ``nats``.

nats-py imports ``aiohttp`` (for ``ws://`` servers) whenever it is installed, and tuspy (the
remote CLI's tus client) installs it. The platform connects by ``nats://`` or ``tls://`` only
(``broker.base.BACKENDS`` refuses any other scheme), so every process that talks to NATS
(`up`, a worker, each stream app) carried aiohttp for nothing: measured after FastAPI and
structlog, ``import nats`` took 9.9 MB of RSS with it and 1.5 MB without, and ~80 ms less.
"""

from __future__ import annotations

from mysimbdp.optional import without

__all__: list[str] = []

with without("aiohttp"):
    import nats.aio.transport  # noqa: F401  # its `import aiohttp` fails: no WebSocket transport
