"""``mysimbdp tenant add|update|list|show|remove`` (``rotate-key``: ``keys``) and
``mysimbdp check-profile``: tenants and their profiles (``services.tenants``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from mysimbdp.cli.context import emit_json, with_platform

if TYPE_CHECKING:
    from mysimbdp.runtime.platform import Platform


@click.group()
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
@with_platform
def tenant_add(platform: Platform, tenant_id: str, profile_path: Path | None, as_json: bool) -> None:
    """Register TENANT_ID and print its API key (shown once; only its hash is stored)."""
    from mysimbdp.services import tenants as tenant_service

    new = tenant_service.add_tenant(platform, tenant_id, profile_path)
    if as_json:
        emit_json(
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
@with_platform
def tenant_update(platform: Platform, tenant_id: str, profile_path: Path) -> None:
    """Give TENANT_ID a new profile and apps (after a fix), keeping its key, data and history.

    Runs already started finish with the old code; stream app instances pick up the new
    one when restarted (`stream stop` / `stream start`). Replay what the old version
    quarantined with `mysimbdp quarantine replay`."""
    from mysimbdp.services import tenants as tenant_service

    tenant_service.update_tenant(platform, tenant_id, profile_path)
    click.echo(f"tenant {tenant_id} updated from {profile_path}")


@tenant.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_platform
def tenant_list(platform: Platform, as_json: bool) -> None:
    """List the tenants."""
    from mysimbdp.cli import render

    tenants = platform.meta.list_tenants()
    if as_json:
        emit_json([{"id": t.id, "created_at": t.created_at} for t in tenants])
    else:
        render.tenant_list(tenants)


@tenant.command("show")
@click.argument("tenant_id")
@click.option("--json", "as_json", is_flag=True)
@with_platform
def tenant_show(platform: Platform, tenant_id: str, as_json: bool) -> None:
    """Show a tenant's profile and directories (webhook secrets masked)."""
    import yaml

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
        emit_json(info)
    else:
        click.echo(f"tenant {record.id}\nbundle: {record.bundle_dir}\ninbox: {info['inbox']}\n")
        click.echo(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True))


@tenant.command("remove")
@click.argument("tenant_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_platform
def tenant_remove(platform: Platform, tenant_id: str, yes: bool) -> None:
    """Remove a tenant with its key, its coredms data and its directories."""
    from mysimbdp.services import tenants as tenant_service

    platform.meta.get_tenant(tenant_id)
    if not yes:
        click.confirm(f"remove tenant {tenant_id} and ALL its data?", abort=True)
    tenant_service.remove_tenant(platform, tenant_id)
    click.echo(f"tenant {tenant_id} removed")


@click.command("check-profile")
@click.argument("profile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_profile(profile: Path) -> None:
    """Validate a profile.yaml and print every problem (file, field, value), then where its
    files and streams go and what no app would take (warnings)."""
    from mysimbdp.domain.profile import parse_profile
    from mysimbdp.domain.routing import routes, routing_warnings

    loaded = parse_profile(profile.read_text(encoding="utf-8"), str(profile))
    click.echo(f"{profile}: ok")
    for line in routes(loaded):
        click.echo(line)
    for warning in routing_warnings(loaded):
        click.echo(f"warning: {profile}: {warning}", err=True)
