"""api.streaming.read_ahead: the next chunk is made while the one before is sent, every
chunk comes once and in order, and the iterator is closed once, never while it runs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from mysimbdp.api.streaming import read_ahead

WAIT_S = 10.0  # a bound for a thread to get somewhere, not a speed


class Chunks:
    """A generator of ``count`` chunks that records what happened, in which thread."""

    def __init__(self, count: int, *, fail_at: int | None = None) -> None:
        self.count, self.fail_at = count, fail_at
        self.started = [threading.Event() for _ in range(count)]
        self.release = [threading.Event() for _ in range(count)]
        self.closed = threading.Event()
        self.closed_in: threading.Thread | None = None
        self.running = threading.Lock()

    def make(self, *, hold_from: int = 10**9) -> Iterator[bytes]:
        try:
            for n in range(self.count):
                with self.running:
                    self.started[n].set()
                    if n >= hold_from:
                        assert self.release[n].wait(WAIT_S)
                    if n == self.fail_at:
                        raise ValueError(f"chunk {n} failed")
                yield b"%d\n" % n
        finally:
            assert self.running.acquire(blocking=False), "closed while a next() ran"
            self.running.release()
            self.closed_in = threading.current_thread()
            self.closed.set()


async def test_every_chunk_comes_once_in_order_and_the_iterator_is_closed() -> None:
    chunks = Chunks(5)
    got = [chunk async for chunk in read_ahead(chunks.make())]
    assert got == [b"0\n", b"1\n", b"2\n", b"3\n", b"4\n"]
    assert await asyncio.to_thread(chunks.closed.wait, WAIT_S)
    assert chunks.closed_in is not threading.current_thread()


async def test_the_next_chunk_is_made_while_the_current_one_is_being_sent() -> None:
    """The consumer holds chunk 0 (as a socket write would) and the producer has begun chunk
    1 meanwhile; a plain ``iterate_in_threadpool`` would not start it until asked."""
    chunks = Chunks(3)
    body = read_ahead(chunks.make())
    assert await anext(body) == b"0\n"
    assert await asyncio.to_thread(chunks.started[1].wait, WAIT_S), "chunk 1 was not made ahead"
    assert not chunks.started[2].is_set()  # one chunk ahead, not more: memory stays bounded
    assert [c async for c in body] == [b"1\n", b"2\n"]


async def test_a_client_gone_midway_closes_the_iterator_after_the_next_in_flight() -> None:
    """aclose() while chunk 1 is still being made (held in its thread): the generator is
    closed only once that next() returned, in a thread, and exactly once."""
    chunks = Chunks(4)
    body = read_ahead(chunks.make(hold_from=1))
    assert await anext(body) == b"0\n"
    assert await asyncio.to_thread(chunks.started[1].wait, WAIT_S)
    await body.aclose()
    assert not chunks.closed.is_set()  # chunk 1 is still running: not closed under it
    chunks.release[1].set()
    assert await asyncio.to_thread(chunks.closed.wait, WAIT_S)
    assert not chunks.started[2].is_set()
    assert chunks.closed_in is not threading.current_thread()  # a store's close never blocks the event loop


async def test_an_error_while_making_a_chunk_reaches_the_sender() -> None:
    chunks = Chunks(3, fail_at=1)
    body = read_ahead(chunks.make())
    assert await anext(body) == b"0\n"
    with pytest.raises(ValueError, match="chunk 1 failed"):
        await anext(body)
    assert await asyncio.to_thread(chunks.closed.wait, WAIT_S)
