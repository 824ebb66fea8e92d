"""Values shared by the SDK, the platform and the stores, written once.

- A quarantine entry's source: a file's id, or ``stream:<stream>:<instance>`` for a stream
  app's rows (:func:`stream_source`).
- ``RAW_LIMIT_CHARS``: how much of a bad row's text the SDK keeps in the quarantine (a CSV
  row that long may have been cut, so a replay does not trust it).
"""

from __future__ import annotations

__all__ = ["RAW_LIMIT_CHARS", "STREAM_PREFIX", "stream_source"]

STREAM_PREFIX = "stream:"
RAW_LIMIT_CHARS = 10 * 1024


def stream_source(stream: str, instance: str | None = None) -> str:
    """``stream:<stream>`` (an SDK's source), or ``stream:<stream>:<instance>`` (a
    quarantine entry's file id); with ``instance=""``, the prefix of all of a stream's."""
    return f"{STREAM_PREFIX}{stream}" if instance is None else f"{STREAM_PREFIX}{stream}:{instance}"
