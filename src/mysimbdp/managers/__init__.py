"""Long-running loops, each with ``run(stop: asyncio.Event)``."""

from __future__ import annotations

import asyncio

from mysimbdp.managers.batchingest import BatchIngestManager
from mysimbdp.managers.fetchdata import FetchData
from mysimbdp.platform import Platform

__all__ = ["BatchIngestManager", "FetchData", "run_services"]


async def run_services(platform: Platform, stop: asyncio.Event, *, drain_s: float = 30.0) -> None:
    """Run fetchdata and the batch ingest manager until ``stop`` is set, then drain."""
    manager = BatchIngestManager(platform, drain_s=drain_s)
    fetcher = FetchData(platform, on_decision=lambda _d: manager.wake())
    await asyncio.gather(fetcher.run(stop), manager.run(stop))
