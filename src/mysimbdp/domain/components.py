"""The names the platform's long-running components beat under in the meta store
(``heartbeats``): how a command tells that ``mysimbdp up`` (or a worker) is running."""

from __future__ import annotations

__all__ = ["BATCH_MANAGER", "FETCHDATA", "NOTIFIER", "STREAM_MANAGER"]

FETCHDATA = "fetchdata"
BATCH_MANAGER = "batchingestmanager"
STREAM_MANAGER = "streamingestmanager"
NOTIFIER = "notifier"
