"""The one logging setup: structlog, JSON lines or console, to stderr.

Call :func:`configure` once at the entry point. Every line names its ``component``
(:func:`get_logger`); a unit of work binds its ids (``tenant``, ``file_id``, ``run_id``,
``stream``, ``instance``) with :func:`log_context`, so the lines of everything it calls,
the runner's included, carry them: one tenant's story is one grep.
"""

from __future__ import annotations

import logging
import sys
from contextlib import AbstractContextManager

import structlog


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """A logger on whatever ``sys.stderr`` is when the line is written (not when configured):
    a replaced stderr (a test's capture, a daemon's redirect) is followed, never a closed one."""
    return structlog.PrintLogger(sys.stderr)


def configure(level: str = "info", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def log_context(**ids: str) -> AbstractContextManager[None]:
    """Within the block, every log line (of this task and the tasks it starts) carries
    ``ids``: e.g. ``tenant``, ``file_id``, ``run_id``, ``stream``, ``instance``."""
    return structlog.contextvars.bound_contextvars(**ids)


def get_logger(component: str) -> structlog.typing.FilteringBoundLogger:
    """A logger carrying ``component``; lazy, so module-level loggers follow ``configure``."""
    return structlog.get_logger(component=component)  # type: ignore[no-any-return]
