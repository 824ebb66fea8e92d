"""The ``mysimbdp`` command line: parse arguments → settings → call a service. No logic here.

One module per command group (``tenants``, ``keys``, ``files``, ``serve``, ``stream``,
``quarantine``, ``notify``, ``doctor``); ``context`` holds what they share (``with_platform``),
``render`` the terminal output. Each imports its services inside the command, so ``--help``
loads click and little else.

Exit codes: 0 success; 1 a platform error (message on stderr); 2 usage error;
3 the file was rejected (profile rule or duplicate); 4 the file's ingestion failed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from mysimbdp.cli.context import CliState
from mysimbdp.cli.doctor import doctor
from mysimbdp.cli.files import files, ingest, query, report
from mysimbdp.cli.keys import rotate_key
from mysimbdp.cli.notify import notifications
from mysimbdp.cli.quarantine import quarantine
from mysimbdp.cli.serve import demo, up, worker
from mysimbdp.cli.stream import stream
from mysimbdp.cli.tenants import check_profile, tenant
from mysimbdp.cli.workers import worker_token
from mysimbdp.errors import MysimbdpError

__all__ = ["main"]


class _Errors(click.Group):
    """Turn platform errors into one clear line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MysimbdpError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Errors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    envvar="MYSIMBDP_HOME",
    default=None,
    help="Platform home directory. [default: $MYSIMBDP_HOME, else ./mysimbdp-home]",
)
@click.option(
    "--meta-url",
    envvar="MYSIMBDP_META_URL",
    default=None,
    help="Meta store URL: sqlite:///PATH or postgresql://user@host:port/db. [default: sqlite in HOME]",
)
@click.option(
    "--coredms-url",
    envvar="MYSIMBDP_COREDMS_URL",
    default=None,
    help="coredms URL: sqlite:///DIR (one file per tenant) or postgresql://... [default: sqlite in HOME]",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default=None,
    help="Log format on stderr. [default: json when not a terminal]",
)
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@click.pass_context
def main(
    ctx: click.Context,
    home: Path | None,
    meta_url: str | None,
    coredms_url: str | None,
    log_format: str | None,
    verbose: bool,
    quiet: bool,
) -> None:
    """mysimbdp: a multi-tenant data ingestion platform.

    Tenants drop CSV / JSON Lines / JSON / Parquet files into their inbox (or use `ingest`); the
    platform checks each against the tenant's profile, stages or rejects it, and runs the
    tenant's own batch app on it, which writes into the tenant's part of coredms.

    \b
    Quick start:
      mysimbdp tenant add acme --json          # prints the API key once
      mysimbdp ingest data.csv --tenant acme --wait
      mysimbdp query --tenant acme --dataset data --count
      mysimbdp up                              # run the services until Ctrl-C
    """
    from mysimbdp.settings import Settings

    level = "debug" if verbose else "warning" if quiet else None
    settings = Settings.from_env(
        os.environ, home=home, meta_url=meta_url, coredms_url=coredms_url, log_format=log_format, log_level=level
    )
    ctx.obj = CliState(settings)  # the Platform is made by the first command that needs it


for command in (tenant, ingest, query, report, files, up, worker, demo, check_profile):
    main.add_command(command)
main.add_command(stream)
main.add_command(notifications)
main.add_command(quarantine)
main.add_command(doctor)
tenant.add_command(rotate_key)
worker.add_command(worker_token)
