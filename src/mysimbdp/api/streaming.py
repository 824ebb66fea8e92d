"""Response bodies made in a worker thread and sent on the event loop, overlapped.

A ``StreamingResponse`` over a plain iterator asks for the next chunk only once the last
one is sent, and makes it in a thread: the store's read (or the disk's) and the socket's
writes take turns. :func:`read_ahead` makes the next chunk while the current one is sent,
so the two overlap (both release the GIL in their IO): an NDJSON export of 1M documents took
the sum of its reading and its sending before, about the larger of the two now
(docs/performance.md, "NDJSON export"). Memory stays bounded: two chunks at most, the one
being sent and the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator

__all__ = ["read_ahead"]


async def read_ahead(chunks: Iterator[bytes]) -> AsyncGenerator[bytes, None]:
    """``chunks``, each next one made in a worker thread while the one before is sent.

    ``chunks`` is closed (a generator's ``finally`` runs, e.g. a store is closed) in a worker
    thread once the ``next`` in flight has returned: also when the client goes away midway,
    so a generator is never closed while it runs in another thread."""
    loop = asyncio.get_running_loop()

    def ahead() -> asyncio.Task[bytes | None]:
        return asyncio.ensure_future(asyncio.to_thread(next, chunks, None))

    def close_when_done(done: asyncio.Future[bytes | None]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved: an error raised after the client left is not reported twice
        close = getattr(chunks, "close", None)
        if close is not None:
            loop.run_in_executor(None, close)

    pending = ahead()
    try:
        while (chunk := await asyncio.shield(pending)) is not None:
            pending = ahead()
            yield chunk
    finally:
        pending.add_done_callback(close_when_done)
