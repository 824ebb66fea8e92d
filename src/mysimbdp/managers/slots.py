"""What the chunk workers (local and remote) share about their running chunks: waiting for the
next thing to happen, and draining what still runs when they stop."""

from __future__ import annotations

import asyncio
from collections.abc import Set
from typing import Any

from mysimbdp.logs import get_logger

__all__ = ["drain", "wait_for_change"]

log = get_logger("worker")


async def wait_for_change(stop: asyncio.Event, running: Set[asyncio.Future[Any]], timeout_s: float) -> None:
    """Until ``stop`` is set, one of ``running`` ends, or ``timeout_s`` have passed."""
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({stopped, *running}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()


async def drain(running: Set[asyncio.Future[Any]], drain_s: float, **who: str) -> None:
    """Give ``running`` up to ``drain_s`` to end, then cancel the rest (their chunks are killed;
    their leases expire and they run again). ``who``: the worker's name for the log."""
    if not running:
        return
    log.info("worker_draining", running=len(running), drain_s=drain_s, **who)
    _, pending = await asyncio.wait(list(running), timeout=drain_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
