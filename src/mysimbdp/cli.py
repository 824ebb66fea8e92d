"""The ``mysimbdp`` command line: parse arguments → settings → call a service. No logic here.

Exit codes: 0 success; 1 a platform error (message on stderr); 2 usage error;
3 the file was rejected (profile rule or duplicate); 4 the file's ingestion failed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import orjson
import yaml

from mysimbdp import _render, logs
from mysimbdp._libc import keep_freed_memory
from mysimbdp.adapters.coredms import open_store
from mysimbdp.cli_doctor import doctor
from mysimbdp.cli_keys import rotate_key
from mysimbdp.cli_notify import notifications
from mysimbdp.cli_quarantine import quarantine
from mysimbdp.cli_stream import stream
from mysimbdp.domain.profile import parse_profile
from mysimbdp.domain.routing import routes, routing_warnings
from mysimbdp.domain.states import FileStatus
from mysimbdp.errors import MysimbdpError
from mysimbdp.platform import Platform
from mysimbdp.services import tenants as tenant_service
from mysimbdp.services.ingest import ingest_one
from mysimbdp.services.plots import plot_series
from mysimbdp.services.report import platform_report
from mysimbdp.services.timeseries import first_activity, parse_duration, tenant_series
from mysimbdp.settings import Settings

EXIT_REJECTED = 3
EXIT_FAILED = 4


def _emit_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode())


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

    Tenants drop CSV / JSON Lines / JSON files into their inbox (or use `ingest`); the
    platform checks each against the tenant's profile, stages or rejects it, and runs the
    tenant's own batch app on it, which writes into the tenant's part of coredms.

    \b
    Quick start:
      mysimbdp tenant add acme --json          # prints the API key once
      mysimbdp ingest data.csv --tenant acme --wait
      mysimbdp query --tenant acme --dataset data --count
      mysimbdp up                              # run the services until Ctrl-C
    """
    level = "debug" if verbose else "warning" if quiet else None
    settings = Settings.from_env(
        os.environ, home=home, meta_url=meta_url, coredms_url=coredms_url, log_format=log_format, log_level=level
    )
    logs.configure(settings.log_level, settings.log_format)
    keep_freed_memory()
    platform = Platform(settings, os.environ)
    ctx.obj = platform
    ctx.call_on_close(platform.close)


def pass_platform(f: Callable[..., Any]) -> Callable[..., Any]:
    """Pass the Platform, started on first use (so `--help` touches nothing on disk)."""

    @click.pass_obj
    @functools.wraps(f)
    def wrapper(platform: Platform, *args: Any, **kwargs: Any) -> Any:
        platform.start()
        return f(platform, *args, **kwargs)

    return wrapper


# -- tenants ---------------------------------------------------------------------------------
@main.group()
def tenant() -> None:
    """Register, update, list, show and remove tenants; rotate their API keys."""


@tenant.command("add")
@click.argument("tenant_id")
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The tenant's profile.yaml; it, its apps' entry points and its bundle_files are copied into HOME. "
    "Without it: the default profile with the built-in generic app.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the new tenant as JSON (the API key is shown only now).",
)
@pass_platform
def tenant_add(platform: Platform, tenant_id: str, profile_path: Path | None, as_json: bool) -> None:
    """Register TENANT_ID and print its API key (shown once; only its hash is stored)."""
    new = tenant_service.add_tenant(platform, tenant_id, profile_path)
    if as_json:
        _emit_json(
            {
                "id": new.record.id,
                "api_key": new.api_key,
                "bundle": new.record.bundle_dir,
                "inbox": str(platform.home.area("inbox", tenant_id)),
                "broker": new.broker,
            }
        )
    else:
        click.echo(f"tenant {tenant_id} added\napi key (shown once): {new.api_key}")
        click.echo(f"inbox: {platform.home.area('inbox', tenant_id)}")


@tenant.command("update")
@click.argument("tenant_id")
@click.option(
    "--profile",
    "profile_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The new profile.yaml; its directory (the apps) replaces the tenant's bundle.",
)
@pass_platform
def tenant_update(platform: Platform, tenant_id: str, profile_path: Path) -> None:
    """Give TENANT_ID a new profile and apps (after a fix), keeping its key, data and history.

    Runs already started finish with the old code; stream app instances pick up the new
    one when restarted (`stream stop` / `stream start`). Replay what the old version
    quarantined with `mysimbdp quarantine replay`."""
    tenant_service.update_tenant(platform, tenant_id, profile_path)
    click.echo(f"tenant {tenant_id} updated from {profile_path}")


@tenant.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_platform
def tenant_list(platform: Platform, as_json: bool) -> None:
    """List the tenants."""
    tenants = platform.meta.list_tenants()
    if as_json:
        _emit_json([{"id": t.id, "created_at": t.created_at} for t in tenants])
    else:
        _render.tenant_list(tenants)


@tenant.command("show")
@click.argument("tenant_id")
@click.option("--json", "as_json", is_flag=True)
@pass_platform
def tenant_show(platform: Platform, tenant_id: str, as_json: bool) -> None:
    """Show a tenant's profile and directories (webhook secrets masked)."""
    record, profile = platform.tenant(tenant_id)
    shown = profile.model_dump(mode="json")
    for hook in shown.get("notifications", {}).get("webhooks", []):
        hook["secret"] = "***"  # noqa: S105 (a mask, not a password)
    info = {
        "id": record.id,
        "created_at": record.created_at,
        "bundle": record.bundle_dir,
        "inbox": str(platform.home.area("inbox", tenant_id)),
        "profile": shown,
    }
    if as_json:
        _emit_json(info)
    else:
        click.echo(f"tenant {record.id}\nbundle: {record.bundle_dir}\ninbox: {info['inbox']}\n")
        click.echo(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True))


@tenant.command("remove")
@click.argument("tenant_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_platform
def tenant_remove(platform: Platform, tenant_id: str, yes: bool) -> None:
    """Remove a tenant with its key, its coredms data and its directories."""
    platform.meta.get_tenant(tenant_id)
    if not yes:
        click.confirm(f"remove tenant {tenant_id} and ALL its data?", abort=True)
    tenant_service.remove_tenant(platform, tenant_id)
    click.echo(f"tenant {tenant_id} removed")


# -- data ------------------------------------------------------------------------------------
@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", "tenant_id", required=True, help="The tenant the file belongs to.")
@click.option("--wait", is_flag=True, help="Follow the file to its final state with a progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON (implies --wait).")
@pass_platform
def ingest(platform: Platform, file: Path, tenant_id: str, wait: bool, as_json: bool) -> None:
    """Put FILE into the tenant's inbox and ingest it.

    With a running platform (`mysimbdp up`) the file is handed over to it; without one,
    this command fetches, validates, stages and runs it itself. Exit code 0 when the file
    was ingested (fully, or partly with quarantined rows the profile tolerates), 3 when it
    was rejected, 4 when its ingestion failed.
    """
    wait = wait or as_json
    with _render.ingest_progress(enabled=wait and not as_json, name=file.name) as on_progress:
        record = asyncio.run(ingest_one(platform, tenant_id, file, wait=wait, on_progress=on_progress))
    if record is None:
        click.echo(f"{file.name}: handed to the running platform (use --wait to follow it)")
        return
    summary = _render.file_summary(platform, record)
    if as_json:
        _emit_json(summary)
    else:
        _render.print_file_summary(summary)
    if record.status in (FileStatus.REJECTED, FileStatus.DUPLICATE):
        sys.exit(EXIT_REJECTED)
    if record.status is not FileStatus.INGESTED:
        sys.exit(EXIT_FAILED)


@main.command()
@click.option("--tenant", "tenant_id", required=True)
@click.option("--dataset", required=True, help="Dataset name (default profile: the file's stem).")
@click.option("--count", is_flag=True, help="Print the number of documents only.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help="Print up to N documents as JSON Lines.",
)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@pass_platform
def query(platform: Platform, tenant_id: str, dataset: str, count: bool, limit: int | None, offset: int) -> None:
    """Read a tenant's dataset back: the count, or documents as JSON Lines."""
    if count == (limit is not None):
        raise click.UsageError("give exactly one of --count or --limit N")
    record = platform.meta.get_tenant(tenant_id)
    store = open_store(record.coredms_url)
    try:
        if count:
            click.echo(store.count(dataset))
        else:
            for doc in store.documents(dataset, limit=limit or 0, offset=offset):
                click.echo(orjson.dumps(doc).decode())
    finally:
        store.close()


@main.command()
@click.option("--tenant", "tenant_id", default=None, help="One tenant only.")
@click.option("--since", default=None, help="Only what came in this long ago or later, e.g. 90s, 15m, 1h, 2d.")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a PNG of throughput and latency over time (per tenant).",
)
@pass_platform
def report(platform: Platform, tenant_id: str | None, since: str | None, as_json: bool, plot: Path | None) -> None:
    """Per-tenant and platform-wide ingestion statistics: files by outcome, rows, bytes,
    failures with their rules, run time and rows/s; stream records, messages, errors and
    latency from the stream apps' reports."""
    if tenant_id:
        platform.meta.get_tenant(tenant_id)
    now = time.time()
    start = now - parse_duration(since) if since else 0.0
    data = platform_report(platform, tenant_id, start)
    if as_json:
        _emit_json(data)
    else:
        _render.report(data)
    if plot is not None:
        ids = [tenant_id] if tenant_id else [t.id for t in platform.meta.list_tenants()]
        first = first_activity(platform, ids, start) or now - 60  # the chart starts where activity does
        series = [tenant_series(platform, t, since=first, until=now) for t in ids]
        plot_series(series, plot, title=f"mysimbdp ingestion, {'tenant ' + tenant_id if tenant_id else 'all tenants'}")
        click.echo(f"plot written to {plot}", err=True)


@main.command()
@click.option("--tenant", "tenant_id", default=None, help="One tenant only.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_platform
def files(platform: Platform, tenant_id: str | None, limit: int, as_json: bool) -> None:
    """The ingestion history: files with status, rows and reasons (newest last)."""
    records = platform.meta.list_files(tenant=tenant_id, limit=1_000_000)[-limit:]
    if as_json:
        _emit_json([_render.file_summary(platform, r) for r in records])
    else:
        _render.file_table(records)


# -- services --------------------------------------------------------------------------------
def _run_until_signal(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    async def main_loop() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    asyncio.run(main_loop())


@main.command()
@pass_platform
def up(platform: Platform) -> None:
    """Run the platform's services until Ctrl-C or SIGTERM, then drain.

    The databroker (an embedded NATS JetStream server under HOME/broker unless
    MYSIMBDP_BROKER_URL names one), fetchdata, the batch ingest manager, chunk workers for
    big files (MYSIMBDP_WORKERS slots, default the CPU count) and the stream ingest manager.
    Each inbox file's scan runs in a limited process: over MYSIMBDP_SCAN_TIMEOUT_S (default
    300) or MYSIMBDP_SCAN_MEMORY_BYTES (default 1 GiB) the file is rejected. On stop,
    running scans are killed (their files stay in the inbox), running batch apps get up to
    30 s to finish (the rest are requeued) and stream app instances finish and ack their batch."""
    from mysimbdp.managers import run_services  # the servers' imports: only when serving

    status = platform.require_sandbox()
    click.echo(f"mysimbdp up: home {platform.settings.home}; {status.summary()}; Ctrl-C to stop", err=True)
    _run_until_signal(lambda stop: run_services(platform, stop))


@main.command()
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    default=None,
    help="Chunks to run at once.  [default: the CPU count]",
)
@pass_platform
def worker(platform: Platform, slots: int | None) -> None:
    """Run big files' chunks: take chunk tasks from the broker until Ctrl-C or SIGTERM.

    Start one per machine beside `mysimbdp up` (same --home, or the same MYSIMBDP_META_URL,
    MYSIMBDP_COREDMS_URL and shared home directory) to ingest big files faster. The broker is
    MYSIMBDP_BROKER_URL, else the embedded one of the running platform (HOME/broker/url).
    A worker stopped or killed mid-chunk loses nothing: the chunk runs again."""
    from mysimbdp.managers.chunkworker import serve_worker

    count = slots or os.cpu_count() or 1
    status = platform.require_sandbox()
    click.echo(
        f"mysimbdp worker: home {platform.settings.home}, {count} slots; {status.summary()}; Ctrl-C to stop", err=True
    )
    _run_until_signal(lambda stop: serve_worker(platform, stop, slots=count))


@main.command()
@click.option(
    "--examples",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("examples/tenants"),
    show_default=True,
    help="Directory of example tenants (each with profile.yaml and data/).",
)
@click.option("--fresh/--keep", default=True, show_default=True, help="Start from an empty home.")
@pass_platform
def demo(platform: Platform, examples: Path, fresh: bool) -> None:
    """The main job on the embedded default: register the example tenants, ingest their
    sample files through fetchdata and the batch manager, post their stream samples to the
    REST API, then pause each stream app while its devices re-send everything 40 times and
    start it again (the monitor scales the instances up to drain the backlog and back down);
    print a summary of both."""
    from mysimbdp.services import demo as demo_service  # the servers' imports: only when serving

    status = platform.require_sandbox()
    click.echo(f"demo: {status.summary()}")
    if fresh:
        platform.close()
        demo_service.fresh_home(platform.settings.home)
        platform.start()
    result = asyncio.run(demo_service.run_demo(platform, examples))
    _render.demo_summary(result.batch)
    _render.demo_stream_summary(result.stream)
    if any(f.status is FileStatus.FAILED for s in result.batch for f in s.files):
        sys.exit(EXIT_FAILED)


@main.command("check-profile")
@click.argument("profile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_profile(profile: Path) -> None:
    """Validate a profile.yaml and print every problem (file, field, value), then where its
    files and streams go and what no app would take (warnings)."""
    loaded = parse_profile(profile.read_text(encoding="utf-8"), str(profile))
    click.echo(f"{profile}: ok")
    for line in routes(loaded):
        click.echo(line)
    for warning in routing_warnings(loaded):
        click.echo(f"warning: {profile}: {warning}", err=True)


main.add_command(stream)
main.add_command(notifications)
main.add_command(quarantine)
main.add_command(doctor)
tenant.add_command(rotate_key)
