"""mysimbdp-fetchdata: watches every tenant's inbox and fetches complete files.

Event-driven through ``watchfiles`` (inotify) with a polling fallback every
``poll_interval_s``: an event only wakes the loop early, the scan of the inbox decides.

Fetches run in worker threads of fetchdata's own pool, one file at a time per tenant and at
most ``max_workers`` at once, and each file's scan runs in a limited process of its own
(:mod:`mysimbdp.adapters.files.scanjob`): one tenant's slow or poison file holds up only that
tenant's next file, never another tenant's, the loop or the API. On stop, running scans are
killed and their files go back to the inbox untouched, so SIGTERM is answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mysimbdp.adapters.files.home import Seen, inbox_candidates, inbox_specials, is_settled
from mysimbdp.adapters.files.watch import wake_on_changes
from mysimbdp.domain.components import FETCHDATA
from mysimbdp.errors import FileStillWritten, MysimbdpError, RunCancelled, TenantError
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.fetch import FetchDecision, fetch_file
from mysimbdp.services.reconcile import reconcile

log = get_logger("fetchdata")

COMPONENT = FETCHDATA  # its heartbeat's name (domain/components.py)


class FetchData:
    def __init__(self, platform: Platform, on_decision: Callable[[FetchDecision], None] | None = None) -> None:
        self.platform = platform
        self.on_decision = on_decision
        self.owner = f"{os.getpid()}"
        self.slots = max(1, platform.settings.max_workers)  # fetches at once, each of another tenant
        self._seen: dict[Path, Seen] = {}
        self._unknown_logged: set[str] = set()
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[FetchDecision | None]] = {}  # tenant -> its fetch
        self._cancel = threading.Event()  # set on stop: running scans are killed
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, stop: asyncio.Event) -> None:
        repaired = await asyncio.to_thread(reconcile, self.platform)
        log.info("fetchdata_started", inbox=str(self.platform.home.root / "inbox"), reconciled=repaired)
        self._pool = ThreadPoolExecutor(self.slots, thread_name_prefix="mysimbdp-fetch")
        watcher = asyncio.create_task(wake_on_changes(self.platform.home.root / "inbox", stop, self._wake))
        try:
            while not stop.is_set():
                self.platform.meta.beat(COMPONENT, self.owner)
                try:
                    self.start_fetches()
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
            self._cancel.set()  # running scans are killed; their files go back to the inbox
            await asyncio.gather(*self._running.values(), return_exceptions=True)
            self._pool.shutdown(wait=True)
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            self.platform.meta.clear_beat(COMPONENT, self.owner)
            log.info("fetchdata_stopped")

    def start_fetches(self) -> list[asyncio.Task[FetchDecision | None]]:
        """Start a fetch of the first settled file of every tenant that has none running, while
        slots are free; returns the fetches started (each resolves to its decision, or None)."""
        started: list[asyncio.Task[FetchDecision | None]] = []
        now = time.time()
        for tenant in self.platform.home.tenants_with_inbox():
            if len(self._running) >= self.slots:
                break
            if tenant in self._running:
                continue
            inbox = self.platform.home.area("inbox", tenant)
            specials = inbox_specials(inbox)  # links, FIFOs, devices: rejected at once, never opened
            for path in specials + inbox_candidates(inbox):
                if path in specials or is_settled(path, self._seen, now, self.platform.settings.settle_s):
                    task = asyncio.create_task(self._fetch(tenant, path))
                    self._running[tenant] = task
                    started.append(task)
                    break
        return started

    async def scan_once(self) -> list[FetchDecision]:
        """Fetch the settled files of every tenant inbox, round by round (one file per tenant
        each), until a round decides nothing; the decisions (one-shot use and tests)."""
        decisions: list[FetchDecision] = []
        while started := self.start_fetches():
            decided = [d for d in await asyncio.gather(*started) if d is not None]
            if not decided:
                break
            decisions += decided
        return decisions

    async def _fetch(self, tenant: str, path: Path) -> FetchDecision | None:
        loop = asyncio.get_running_loop()
        fetch = functools.partial(fetch_file, self.platform, tenant, path, cancel=self._cancel)
        try:
            decision = await loop.run_in_executor(self._pool, fetch)  # no pool (scan_once alone): the loop's
        except TenantError:
            if tenant not in self._unknown_logged:
                log.warning("inbox_of_unknown_tenant", tenant=tenant)
                self._unknown_logged.add(tenant)
            return None
        except FileNotFoundError:
            return None  # taken by another fetcher (the CLI) meanwhile
        except FileStillWritten as exc:  # given back: it must settle again before it is taken
            log.info("file_still_written", tenant=tenant, file=path.name, error=str(exc))
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                self._seen[path] = Seen(st.st_size, st.st_mtime_ns, time.time())
            return None
        except RunCancelled:
            return None  # stopping: the file is back in the inbox
        except MysimbdpError as exc:  # a store outage, a sandbox refusal: the file is tried again
            log.warning("fetch_failed", tenant=tenant, file=path.name, error=str(exc))
            return None
        except Exception:  # a bug or an OS failure: logged with its traceback, the others go on
            log.exception("fetch_crashed", tenant=tenant, file=path.name)
            return None
        finally:
            self._running.pop(tenant, None)
            self._wake.set()  # this tenant's next file, or another tenant's, may start
        self._seen.pop(path, None)
        if self.on_decision is not None:
            self.on_decision(decision)
        return decision
