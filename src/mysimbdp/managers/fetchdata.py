"""mysimbdp-fetchdata: watches every tenant's inbox and fetches complete files.

Event-driven through ``watchfiles`` (inotify) with a polling fallback every
``poll_interval_s``: an event only wakes the loop early, the scan of the inbox decides.
Files are validated in a worker thread so a large file never blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import watchfiles

from mysimbdp.adapters.filesystem import Seen, inbox_candidates, is_settled
from mysimbdp.errors import MysimbdpError, TenantError
from mysimbdp.logs import get_logger
from mysimbdp.platform import Platform
from mysimbdp.services.fetch import FetchDecision, fetch_file, reconcile

log = get_logger("fetchdata")

COMPONENT = "fetchdata"


class FetchData:
    def __init__(self, platform: Platform, on_decision: Callable[[FetchDecision], None] | None = None) -> None:
        self.platform = platform
        self.on_decision = on_decision
        self.owner = f"{os.getpid()}"
        self._seen: dict[Path, Seen] = {}
        self._unknown_logged: set[str] = set()
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        repaired = reconcile(self.platform)
        log.info("fetchdata_started", inbox=str(self.platform.home.root / "inbox"), reconciled=repaired)
        watcher = asyncio.create_task(self._watch(stop))
        try:
            while not stop.is_set():
                self.platform.meta.beat(COMPONENT, self.owner)
                try:
                    await self.scan_once()
                except MysimbdpError as exc:
                    log.warning("fetch_tick_failed", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    waiters = [
                        asyncio.ensure_future(stop.wait()),
                        asyncio.ensure_future(self._wake.wait()),
                    ]
                    await asyncio.wait(
                        waiters,
                        timeout=self.platform.settings.poll_interval_s,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    for w in waiters:
                        w.cancel()
                self._wake.clear()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            self.platform.meta.clear_beat(COMPONENT, self.owner)
            log.info("fetchdata_stopped")

    async def _watch(self, stop: asyncio.Event) -> None:
        inbox = self.platform.home.root / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        try:
            async for _changes in watchfiles.awatch(inbox, stop_event=stop, debounce=50, step=25):
                self._wake.set()
        except (OSError, RuntimeError) as exc:  # inotify unavailable: polling still works
            log.warning("watch_unavailable_polling", error=str(exc))

    async def scan_once(self) -> list[FetchDecision]:
        """Fetch every settled file in every tenant inbox once."""
        decisions: list[FetchDecision] = []
        now = time.time()
        for tenant in self.platform.home.tenants_with_inbox():
            for path in inbox_candidates(self.platform.home.area("inbox", tenant)):
                if not is_settled(path, self._seen, now, self.platform.settings.settle_s):
                    continue
                try:
                    decision = await asyncio.to_thread(fetch_file, self.platform, tenant, path)
                except TenantError:
                    if tenant not in self._unknown_logged:
                        log.warning("inbox_of_unknown_tenant", tenant=tenant)
                        self._unknown_logged.add(tenant)
                    break
                except FileNotFoundError:
                    continue  # taken by another fetcher (the CLI) meanwhile
                self._seen.pop(path, None)
                decisions.append(decision)
                if self.on_decision is not None:
                    self.on_decision(decision)
        return decisions
