"""``mysimbdp stream start|stop|status|decisions``: the operator's handle on stream app instances."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click
import orjson

from mysimbdp.cli.context import with_platform

if TYPE_CHECKING:
    from mysimbdp.runtime.platform import Platform


@click.group("stream")
def stream() -> None:
    """Start, stop and show the stream apps' instances (carried out by a running `mysimbdp up`)."""


def _tenant_option(f: click.decorators.FC) -> click.decorators.FC:
    return click.option("--tenant", "tenant_id", required=True, help="Tenant id.")(f)


@stream.command("start")
@_tenant_option
@click.option("--stream", "stream_name", required=True, help="The tenant's stream (as in POST /v1/streams/NAME).")
@click.option("--app", "app_name", help="Stream app from the profile. [default: the first whose patterns match]")
@click.option("--instances", type=click.IntRange(min=0), help="How many. [default: the app's min_instances, >= 1]")
@with_platform
def stream_start(
    platform: Platform, tenant_id: str, stream_name: str, app_name: str | None, instances: int | None
) -> None:
    """Run INSTANCES instances of the stream app consuming STREAM."""
    from mysimbdp.services import streams as stream_service

    target = stream_service.start(platform, tenant_id, stream_name, app_name, instances)
    click.echo(f"{target.tenant}/{target.stream}: app {target.app}: {target.instances} instance(s) requested")


@stream.command("stop")
@_tenant_option
@click.option("--stream", "stream_name", help="Only this stream. [default: all of the tenant's]")
@click.option("--app", "app_name", help="Only this app.")
@with_platform
def stream_stop(platform: Platform, tenant_id: str, stream_name: str | None, app_name: str | None) -> None:
    """Stop the tenant's stream app instances (each finishes and acks its batch first)."""
    from mysimbdp.services import streams as stream_service

    stopped = stream_service.stop(platform, tenant_id, stream_name, app_name)
    for target in stopped:
        click.echo(f"{target.tenant}/{target.stream}: app {target.app}: stopping")
    if not stopped:
        click.echo(f"tenant {tenant_id}: no matching stream app")


@stream.command("status")
@click.option("--tenant", "tenant_id", help="Only this tenant.")
@click.option("--json", "as_json", is_flag=True, help="Every target with its instances as JSON.")
@with_platform
def stream_status(platform: Platform, tenant_id: str | None, as_json: bool) -> None:
    """Each stream's requested and running instances (pid, state, restarts, last exit)."""
    from mysimbdp.services import streams as stream_service

    rows = stream_service.status(platform, tenant_id)
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    for row in rows:
        click.echo(f"{row['tenant']}/{row['stream']} app {row['app']}: {row['running']}/{row['instances']} running")
        for inst in row["instance_list"]:
            exit_note = f" (last exit: {inst['exit_detail']})" if inst["exit_detail"] else ""
            click.echo(f"  {inst['id']} pid {inst['pid']} {inst['state']} restarts {inst['restarts']}{exit_note}")


@stream.command("decisions")
@click.option("--tenant", "tenant_id", help="Only this tenant.")
@click.option(
    "--since",
    "since_s",
    type=click.FloatRange(min=0),
    default=86_400.0,
    show_default=True,
    help="Seconds back from now.",
)
@click.option("--json", "as_json", is_flag=True, help="Each decision with its inputs as JSON.")
@with_platform
def stream_decisions(platform: Platform, tenant_id: str | None, since_s: float, as_json: bool) -> None:
    """The scaling decisions the monitor carried out: when, from how many instances to how
    many, why, and the window's figures it decided on."""
    if tenant_id is not None:
        platform.tenant(tenant_id)
    decisions = platform.meta.streams.decisions(tenant_id, since=time.time() - since_s)
    if as_json:
        click.echo(orjson.dumps([asdict(d) for d in decisions], option=orjson.OPT_INDENT_2).decode())
        return
    for d in decisions:
        when = datetime.fromtimestamp(d.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{when} {d.tenant}/{d.stream} app {d.app}: {d.from_instances} -> {d.to_instances}: {d.reason}")
    if not decisions:
        click.echo("no scaling decisions" + (f" for tenant {tenant_id}" if tenant_id else ""))
