"""``--api URL``: run ``ingest``, ``query``, ``files`` and ``quarantine list`` from another
machine, through the platform's HTTP API, with the tenant's key.

:func:`or_remote` adds the options to a command; given an API URL (``--api`` or
``MYSIMBDP_API_URL``) it calls the command's remote twin in :mod:`mysimbdp.cli.remotecmds`
(imported then) instead of the local command, so no platform home or meta store is opened.
Without one the command runs locally, exactly as before. Imports only click and the
standard library, so that ``--help`` stays fast.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from mysimbdp.cli.context import Api

__all__ = ["DEFAULT_CHUNK_BYTES", "DEFAULT_RESUMABLE_BYTES", "UPLOAD_OPTIONS", "or_remote", "state_path"]

DEFAULT_RESUMABLE_BYTES = 8 * 1024 * 1024  # a file over this goes resumable (tus)
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024  # one PATCH of a resumable upload
UPLOAD_OPTIONS = ("resumable_over", "chunk_bytes", "limit_rate")  # ingest's options for --api only

F = Callable[..., Any]


def state_path(environ: Mapping[str, str]) -> Path:
    """The state file of unfinished resumable uploads: ``$XDG_CACHE_HOME/mysimbdp`` or ``~/.cache/mysimbdp``."""
    cache = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(cache) / "mysimbdp" / "uploads.json"


def _api_options(f: F, uploads: bool) -> F:
    if uploads:
        f = click.option(
            "--limit-rate",
            type=click.IntRange(min=1),
            default=None,
            metavar="BYTES_PER_S",
            help="With --api: send at most this many bytes a second.",
        )(f)
        f = click.option(
            "--chunk-bytes",
            type=click.IntRange(min=1024),
            envvar="MYSIMBDP_UPLOAD_CHUNK_BYTES",
            show_envvar=True,
            default=DEFAULT_CHUNK_BYTES,
            metavar="BYTES",
            show_default=True,
            help="With --api: the bytes of one resumable PATCH.",
        )(f)
        f = click.option(
            "--resumable-over",
            type=click.IntRange(min=0),
            envvar="MYSIMBDP_UPLOAD_RESUMABLE_BYTES",
            show_envvar=True,
            default=DEFAULT_RESUMABLE_BYTES,
            show_default=True,
            metavar="BYTES",
            help="With --api: a file over this size goes resumable through the API's tus server "
            "(/v1/uploads/); an interrupted ingest run again continues from the server's offset.",
        )(f)
    f = click.option(
        "--ca-cert",
        envvar=["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"],
        show_envvar=True,
        default=None,
        type=click.Path(exists=True, dir_okay=False),
        help="With --api over https: trust this CA certificate (PEM), e.g. the platform's self-signed one.",
    )(f)
    f = click.option(
        "--api-key",
        envvar="MYSIMBDP_API_KEY",
        show_envvar=True,
        default=None,
        metavar="KEY",
        help="With --api: the tenant's API key (better in MYSIMBDP_API_KEY than on the command line).",
    )(f)
    return click.option(
        "--api",
        "api_url",
        envvar="MYSIMBDP_API_URL",
        show_envvar=True,
        default=None,
        metavar="URL",
        help="Work through the platform's HTTP API at URL (e.g. http://HOST:8731) from any machine, with "
        "the tenant's key in MYSIMBDP_API_KEY, instead of this machine's platform home.",
    )(f)


def or_remote(name: str, *, uploads: bool = False) -> Callable[[F], F]:
    """Add ``--api``/``--api-key``/``--ca-cert`` (and ``uploads``: ingest's upload options) to a
    command; with an API URL, run ``remotecmds.COMMANDS[name]`` with the command's arguments."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, api_url: str | None, api_key: str | None, ca_cert: str | None, **kwargs: Any) -> Any:
            upload_options = {k: kwargs.pop(k) for k in UPLOAD_OPTIONS if k in kwargs}
            if not api_url:
                return command(*args, **kwargs)
            if not api_key:
                raise click.UsageError(f"--api {api_url}: give the tenant's API key in MYSIMBDP_API_KEY (or --api-key)")
            from mysimbdp.cli.remotecmds import COMMANDS

            api = Api(api_url, api_key, ca_cert, state_path(os.environ))
            return COMMANDS[name](api, **kwargs, **upload_options)

        return _api_options(wrapper, uploads)

    return decorate
