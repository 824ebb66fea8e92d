"""Imports that leave out another package's optional extras (a leaf module).

Some libraries load an optional package whenever it is installed, for a feature this platform
never uses. The CLI installs them (rich for progress bars; tuspy brings aiohttp), so every
process paid for them: ``structlog`` and ``httpx`` load rich and pygments (pretty tracebacks,
httpx's own command line), ``nats-py`` loads aiohttp (WebSocket servers). Measured in one
process: 4.5 MB of RSS for rich and pygments, 8.4 MB for aiohttp, and their import time.
:func:`without` hides them while such a library is first imported; they stay importable
afterwards, for the CLI that does use them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["without"]


@contextmanager
def without(*names: str) -> Iterator[None]:
    """Within the block, ``import NAME`` of each of ``names`` not imported yet raises
    ImportError (the library then goes without it); after it, they import as usual. A
    package imported already stays as it is: leaving it out would save nothing."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not found"
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
