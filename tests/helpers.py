"""What many tests share: where the project's files are, and waiting for a condition, with a
bound and a message.

A test that waits polls its condition until it holds; past the bound it fails naming what it
waited for. The bound is a safety net for a broken build, never an assertion of speed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

__all__ = ["ROOT", "TESTS", "on_backends", "process_alive", "until", "until_async"]

TESTS = Path(__file__).resolve().parent  # tests/ (hostile_app.py lies here)
ROOT = TESTS.parent  # the project: examples/, docs/

T = TypeVar("T")


def until(check: Callable[[], T], timeout_s: float = 90.0, what: str = "condition", every_s: float = 0.1) -> T:
    """Call ``check`` every ``every_s`` until it returns something true, and return that;
    raise :class:`AssertionError` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if value := check():
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


async def until_async(
    check: Callable[[], Any], timeout_s: float = 60.0, what: str = "condition", every_s: float = 0.05
) -> Any:
    """:func:`until` for a coroutine: sleeps with ``asyncio.sleep`` so the loop runs meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        if value := check():
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(every_s)


def on_backends(*names: str) -> pytest.MarkDecorator:
    """Run a test on these store backends only, instead of the ``backend`` fixture's two.

    For end-to-end tests whose subject lies above the store (the CLI, the API, fetchdata's
    checks, the sandbox, the stream monitor): the store's behaviour under them is proved on
    both backends by the integration tests, and such an e2e test run twice costs a full
    platform start and its files again, for no path the other run would not take. The e2e
    tests that exercise the store itself (crash recovery, chunked files, write modes, the
    hostile tenant) stay on both; docs/architecture.md "Tests" lists the split."""
    return pytest.mark.parametrize("backend", names, indirect=True)


def process_alive(pid: int) -> bool:
    """A process ``pid`` runs (one that died but is not reaped yet, a zombie, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return pid > 0 and stat.rpartition(")")[2].split()[0] != "Z"
