"""ingest_one: the CLI's ``ingest`` use case, with or without a running platform.

The file is dropped into the tenant's inbox (via a ``.part`` name and a rename) and, unless
the command hands it to a running platform without waiting, fetched (validated and staged)
in this process at once. If the platform is up, its batch manager runs the staged file and
this follows the file's record; if not, this process runs it too.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mysimbdp.adapters.files.home import drop_into_inbox, kind_of
from mysimbdp.domain.components import BATCH_MANAGER as MANAGER
from mysimbdp.domain.components import FETCHDATA as FETCHER
from mysimbdp.domain.ids import new_id
from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.states import FINAL_FILE_STATES, FileStatus
from mysimbdp.errors import FileRejected, MysimbdpError
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.fetch import fetch_file
from mysimbdp.services.rejection import NOT_REGULAR
from mysimbdp.services.run_batch import run_file

ALIVE_S = 10.0
POLL_S = 0.05  # how often a waiting CLI looks at the meta store (one indexed read)


@dataclass(frozen=True)
class Progress:
    status: str
    rows: int
    bytes_done: int
    size_bytes: int


ProgressFn = Callable[[Progress], None]


def platform_running(platform: Platform) -> bool:
    return platform.meta.alive(FETCHER, ALIVE_S) and platform.meta.alive(MANAGER, ALIVE_S)


def _progress_of(platform: Platform, record: FileRecord) -> Progress:
    rows, done, status = 0, 0, str(record.status)
    if record.status is FileStatus.RUNNING and record.run_id:
        try:
            data: dict[str, Any] = orjson.loads((platform.home.run_dir(record.run_id) / "progress.json").read_bytes())
            rows, done = int(data.get("rows", 0)), int(data.get("bytes", 0))
            if "chunks" in data:  # a big file, ingested chunk by chunk
                status = f"running: {data.get('chunks_done', 0)}/{data['chunks']} chunks"
        except (OSError, orjson.JSONDecodeError, ValueError):
            pass
    elif record.status in FINAL_FILE_STATES:
        rows, done = (
            record.rows_written + record.rows_rejected + record.rows_skipped,
            record.size_bytes,
        )
    return Progress(status, rows, done, record.size_bytes)


async def _follow(platform: Platform, record: FileRecord, on_progress: ProgressFn | None) -> FileRecord:
    while record.status not in FINAL_FILE_STATES:
        if on_progress is not None:
            on_progress(_progress_of(platform, record))
        await asyncio.sleep(POLL_S)
        latest = platform.meta.get_file(record.id)
        assert latest is not None
        record = latest
    if on_progress is not None:
        on_progress(_progress_of(platform, record))
    return record


async def _find_dropped(platform: Platform, tenant: str, name: str, since: float, timeout_s: float) -> FileRecord:
    """The record fetchdata made for the file dropped as ``name`` (names in an inbox are unique)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = platform.meta.latest_file_named(tenant, name, since)
        if record is not None:
            return record
        await asyncio.sleep(POLL_S)
    raise MysimbdpError(f"tenant {tenant!r}: the platform did not pick up the file within {timeout_s:.0f} s")


async def ingest_one(
    platform: Platform, tenant: str, source: Path, *, wait: bool, on_progress: ProgressFn | None = None
) -> FileRecord | None:
    """Drop ``source`` into ``tenant``'s inbox; return its final record (None if not waiting
    and the running platform will handle it)."""
    platform.tenant(tenant)  # fail early for an unknown tenant
    mode = os.stat(source).st_mode  # a link given on the command line is the caller's own: followed
    if not stat.S_ISREG(mode):  # a FIFO would block the copy, a device never end: refused, nothing taken
        why = f"rule {NOT_REGULAR}: it is {kind_of(mode)}; only regular files are ingested"
        raise FileRejected(tenant, source.name, [why])
    if not platform_running(platform):
        platform.require_sandbox()  # this command will run the app itself: refuse before the file is taken
    since = time.time() - 1.0
    dropped = drop_into_inbox(source, platform.home.area("inbox", tenant), source.name)
    running = platform_running(platform)
    if running and not wait:
        return None  # fetchdata takes it once it has settled
    # Fetch here, at once: this process knows the file is complete, so it need not wait out
    # fetchdata's settle rule; a running platform's batch manager sees the staged file
    # (inotify on the staging area) and runs it, and this follows the record.
    try:
        decision = await asyncio.to_thread(fetch_file, platform, tenant, dropped)
    except FileNotFoundError:
        if not running:
            raise
        # fetchdata claimed it first (a file that kept its old mtime counts as settled at once)
        found = await _find_dropped(platform, tenant, dropped.name, since, timeout_s=300.0)
        return await _follow(platform, found, on_progress)
    record = platform.meta.get_file(decision.file_id)
    assert record is not None
    if decision.status is not FileStatus.STAGED:
        return record
    if running:
        return await _follow(platform, record, on_progress)
    return await _run_here(platform, record, on_progress)


async def _run_here(platform: Platform, record: FileRecord, on_progress: ProgressFn | None) -> FileRecord:
    """Run the staged file in this process, as the batch manager would, retrying transient
    failures; the lease is renewed so a platform started meanwhile leaves it alone."""
    owner = f"cli:{new_id('c')}"
    ttl_s = platform.settings.lease_ttl_s

    async def renew() -> None:
        while True:
            await asyncio.sleep(ttl_s / 3)
            platform.meta.renew_leases(owner, ttl_s)

    renewer = asyncio.create_task(renew())
    follower = asyncio.create_task(_follow(platform, record, on_progress))
    try:
        while record.status in (FileStatus.STAGED, FileStatus.RETRY):
            await asyncio.sleep(max(0.0, record.next_attempt_at - time.time()))
            run_id = new_id("r")
            if not platform.meta.claim(record.id, owner, ttl_s, run_id):
                break  # a platform started and took it: just follow it
            claimed = platform.meta.get_file(record.id)
            assert claimed is not None
            record = await run_file(platform, claimed, run_id)
    finally:
        renewer.cancel()
        await asyncio.gather(renewer, return_exceptions=True)
    return await follower
