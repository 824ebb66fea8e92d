"""What every command shares: the settings read by the ``main`` group, the Platform made
from them on first use (``with_platform``), JSON output and the exit codes.

Imports only click and the standard library at the top, so that ``--help`` stays fast; the
platform and its adapters are imported when a command first asks for them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, overload

import click

if TYPE_CHECKING:
    from mysimbdp.runtime.platform import Platform
    from mysimbdp.settings import Settings

EXIT_REJECTED = 3
EXIT_FAILED = 4


@dataclass(frozen=True)
class Api:
    """Where a remote command (``--api URL``) goes: the API's URL, the tenant's key, the CA
    certificate to trust, and the state file of unfinished resumable uploads."""

    url: str
    key: str = field(repr=False)  # never printed
    ca_cert: str | None
    state: Path


@dataclass
class CliState:
    """The ``main`` group's ``ctx.obj``: the settings, and the Platform once a command needs it."""

    settings: Settings
    platform: Platform | None = None

    def override(self, **values: object) -> None:
        """Replace settings from a command's own options (None: keep), before the Platform is built."""
        import dataclasses

        if self.platform is not None:
            raise RuntimeError("settings overridden after the platform was built")
        changes = {k: v for k, v in values.items() if v is not None}
        if changes:
            self.settings = dataclasses.replace(self.settings, **changes)  # type: ignore[arg-type]

    def get_platform(self, ctx: click.Context) -> Platform:
        """Configure logging and build the Platform (no IO yet), once; it is closed with ``ctx``."""
        if self.platform is None:
            from mysimbdp import logs
            from mysimbdp._libc import keep_freed_memory
            from mysimbdp.runtime.platform import Platform

            logs.configure(self.settings.log_level, self.settings.log_format)
            keep_freed_memory()
            self.platform = Platform(self.settings, os.environ)
            ctx.find_root().call_on_close(self.platform.close)
        return self.platform


F = Callable[..., Any]


@overload
def with_platform(f: F, /) -> F: ...
@overload
def with_platform(*, start: bool = True) -> Callable[[F], F]: ...
def with_platform(f: F | None = None, /, *, start: bool = True) -> F | Callable[[F], F]:
    """Pass the Platform as the command's first argument, started on first use (so `--help`
    touches nothing on disk and imports none of it). ``start=False``: built but not started
    (``doctor`` opens what it checks itself)."""

    def decorate(command: F) -> F:
        @click.pass_context
        @functools.wraps(command)
        def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
            obj = ctx.obj  # a CliState under `main`; a Platform when a test invokes a group itself
            platform: Platform = obj.get_platform(ctx) if isinstance(obj, CliState) else obj
            if start:
                platform.start()
            return command(platform, *args, **kwargs)

        return wrapper

    return decorate if f is None else decorate(f)


@contextlib.contextmanager
def binary_output(out: Path | None, *, binary_format: bool) -> Iterator[BinaryIO]:
    """Where an export goes: ``out`` (written whole or not at all: a partial file is removed
    on an error), else stdout; a binary format (Parquet) is not written to a terminal."""
    if out is None:
        stdout = sys.stdout.buffer
        if binary_format and stdout.isatty():
            raise click.UsageError("Parquet is binary: give --out FILE (or redirect stdout)")
        yield stdout
        stdout.flush()
        return
    try:
        with out.open("wb") as f:
            yield f
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def emit_json(value: Any) -> None:
    """Print ``value`` as indented JSON (anything else as its ``str``)."""
    import orjson

    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode())


class LazyChoice(click.Choice[str]):
    """A ``click.Choice`` whose values come from ``load()`` when first needed (parsing the
    option, or this command's ``--help``), so that listing commands imports none of them."""

    def __init__(self, load: Callable[[], Sequence[str]], case_sensitive: bool = True) -> None:
        self._load = load
        self._choices: tuple[str, ...] | None = None
        self.case_sensitive = case_sensitive

    @property
    def choices(self) -> tuple[str, ...]:
        if self._choices is None:
            self._choices = tuple(self._load())
        return self._choices

    @choices.setter
    def choices(self, value: tuple[str, ...]) -> None:
        self._choices = tuple(value)
