"""The stream app's main loop: :func:`run_loop` consumes until stopped, waiting out outages;
:func:`run_stream` is a whole clientstreamingestapp (see :mod:`mysimbdp.sdk.stream`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from typing import NoReturn

from mysimbdp._libc import keep_freed_memory
from mysimbdp.adapters.broker import open_broker
from mysimbdp.adapters.coredms import DocumentStore, open_store
from mysimbdp.errors import AppContractError, BrokerUnavailable, StoreUnavailable
from mysimbdp.sdk.stream_config import StreamConfig
from mysimbdp.sdk.stream_context import StreamContext, StreamCounters, Transform

__all__ = ["GC_YOUNG_THRESHOLD", "RETRY_S", "run_loop", "run_stream"]

RETRY_S = 1.0
GC_YOUNG_THRESHOLD = 10_000  # allocations between two young-generation collections (default 700)


async def run_loop(config: StreamConfig, transform: Transform, stop: asyncio.Event) -> StreamCounters:
    """Consume until ``stop`` is set; transient outages are waited out."""
    broker = open_broker(config.broker_url, ack_wait_s=config.ack_wait_s)
    store: DocumentStore | None = None
    ctx: StreamContext | None = None
    next_report = 0.0
    try:
        while not stop.is_set():
            try:
                if store is None:
                    store = await asyncio.to_thread(open_store, config.coredms_url)
                if ctx is None:
                    await broker.connect()
                    ctx = StreamContext(config, broker, store)
                    next_report = time.monotonic()  # the first report after the first pull: a
                    # backlog found at start reaches the monitor at once, not one period later
                await ctx.step(transform)
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + config.report_period_s
                    await ctx.report()
            except (StoreUnavailable, BrokerUnavailable) as exc:
                sys.stderr.write(f"mysimbdp stream: {config.tenant}/{config.stream}: {exc}; retrying\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_S)
        return ctx.counters if ctx is not None else StreamCounters()
    finally:
        if ctx is not None:
            await ctx.give_back()
            ctx.close()
        await broker.close()
        if store is not None:
            store.close()


def run_stream(transform: Transform) -> NoReturn:
    """Run a complete clientstreamingestapp around ``transform`` until SIGTERM / SIGINT."""
    keep_freed_memory()
    # A write holds thousands of fresh acyclic documents: with the default thresholds the
    # cyclic collector ran ~400 times per 100k records (~9 % of the time); the objects of
    # start-up are moved out of its way.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
    sys.setswitchinterval(0.0001)
    try:
        config = StreamConfig.from_env(os.environ)
    except AppContractError as exc:
        sys.stderr.write(f"mysimbdp stream: {exc}\n")
        sys.exit(65)

    async def main() -> StreamCounters:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_loop(config, transform, stop)

    started = time.monotonic()
    counters = asyncio.run(main())
    sys.stderr.write(
        f"mysimbdp stream: {config.tenant}/{config.stream} instance {config.instance}: {counters.messages} messages, "
        f"{counters.records} records written, {counters.rejected} quarantined, {counters.skipped} skipped "
        f"in {time.monotonic() - started:.1f} s\n"
    )
    sys.exit(0)
