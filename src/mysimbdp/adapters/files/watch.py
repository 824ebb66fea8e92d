"""Wake a manager's loop when something changes under a directory (inotify via watchfiles).

An event only wakes the loop early; the loop's own look at the directory (or the meta store)
decides what there is to do, and its polling goes on where inotify is not available."""

from __future__ import annotations

import asyncio
from pathlib import Path

import watchfiles

from mysimbdp.logs import get_logger

log = get_logger("watch")


async def wake_on_changes(directory: Path, stop: asyncio.Event, wake: asyncio.Event) -> None:
    """Set ``wake`` on every batch of changes under ``directory`` (made if missing) until ``stop``."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        async for _changes in watchfiles.awatch(directory, stop_event=stop, debounce=50, step=25):
            wake.set()
    except (OSError, RuntimeError) as exc:  # inotify unavailable: polling still works
        log.warning("watch_unavailable_polling", directory=str(directory), error=str(exc))
