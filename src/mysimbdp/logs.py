"""The one logging setup: structlog, JSON lines or console, to stderr.

Call :func:`configure` once at the entry point. Every line names its ``component``
(:func:`get_logger`); a unit of work binds its ids (``tenant``, ``file_id``, ``run_id``,
``stream``, ``instance``) with :func:`log_context`, so the lines of everything it calls,
the runner's included, carry them: one tenant's story is one grep.

structlog is imported when the first line at an enabled level is written, not before: a
quiet command (``mysimbdp -q ingest``) writes no line at all. It is imported without rich
(``mysimbdp.optional``): structlog would load it for tracebacks this setup never uses
(``format_exc_info`` renders them as text first); an app's process is 4 MB smaller. The
ids of :func:`log_context` live in a context variable of this module, merged into each line
by a processor of its own.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from mysimbdp.optional import without

if TYPE_CHECKING:
    import structlog

__all__ = ["Logger", "configure", "get_logger", "log_context"]

_LEVELS = logging.getLevelNamesMapping()
_IDS: ContextVar[dict[str, str]] = ContextVar("mysimbdp_log_ids", default={})  # noqa: B039  (replaced, never mutated)


class _Setup:
    """What :func:`configure` asked for; structlog is set up from it on the first line."""

    level: int = logging.DEBUG  # not configured: every line, as structlog's default does
    fmt: str | None = None  # None: structlog's own default configuration
    applied: bool = False


def configure(level: str = "info", fmt: str = "auto") -> None:
    _Setup.level = _LEVELS[level.upper()]
    _Setup.fmt = fmt
    _Setup.applied = False


def _merge_ids(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in _IDS.get().items():
        event.setdefault(key, value)
    return event


def _import_structlog() -> Any:
    """structlog, imported without rich (``optional.without``) unless rich is loaded already;
    once imported, straight from ``sys.modules`` (this runs for every line written)."""
    if (loaded := sys.modules.get("structlog")) is not None:
        return loaded
    with without("rich"):
        import structlog

    return structlog


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """A logger on whatever ``sys.stderr`` is when the line is written (not when configured):
    a replaced stderr (a test's capture, a daemon's redirect) is followed, never a closed one."""
    slog = _import_structlog()
    return slog.PrintLogger(sys.stderr)  # type: ignore[no-any-return]


def _structlog() -> Any:
    slog = _import_structlog()

    if not _Setup.applied and _Setup.fmt is not None:
        use_json = _Setup.fmt == "json" or (_Setup.fmt == "auto" and not sys.stderr.isatty())
        renderer: structlog.typing.Processor = (
            slog.processors.JSONRenderer() if use_json else slog.dev.ConsoleRenderer()
        )
        slog.configure(
            processors=[
                _merge_ids,
                slog.processors.add_log_level,
                slog.processors.TimeStamper(fmt="iso", utc=True),
                slog.processors.format_exc_info,
                renderer,
            ],
            wrapper_class=slog.make_filtering_bound_logger(_Setup.level),
            logger_factory=_stderr_logger,
            cache_logger_on_first_use=False,
        )
    _Setup.applied = True
    return slog


class Logger:
    """A component's logger: ``log.info("event", key=value, ...)``. Below the configured
    level a call costs one comparison; at or above it, the line goes through structlog."""

    __slots__ = ("component",)

    def __init__(self, component: str) -> None:
        self.component = component

    def _emit(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        if level >= _Setup.level:
            logger = _structlog().get_logger(component=self.component)
            if _Setup.fmt is None:  # structlog's default setup: merge the ids here
                fields = {**_IDS.get(), **fields}
            getattr(logger, method)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, "error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        fields.setdefault("exc_info", True)
        self._emit(logging.ERROR, "error", event, fields)


@contextmanager
def _bound(ids: dict[str, str]) -> Iterator[None]:
    token = _IDS.set({**_IDS.get(), **ids})
    try:
        yield
    finally:
        _IDS.reset(token)


def log_context(**ids: str) -> AbstractContextManager[None]:
    """Within the block, every log line (of this task and the tasks it starts) carries
    ``ids``: e.g. ``tenant``, ``file_id``, ``run_id``, ``stream``, ``instance``."""
    return _bound(ids)


def get_logger(component: str) -> Logger:
    """A logger carrying ``component``; lazy, so module-level loggers follow ``configure``."""
    return Logger(component)
