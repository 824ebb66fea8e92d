"""``mysimbdp tenant rotate-key``: a new API key, the old ones refused after a grace period."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from mysimbdp.cli.context import with_platform
from mysimbdp.errors import ConfigError

if TYPE_CHECKING:
    from mysimbdp.runtime.platform import Platform


def _grace(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from mysimbdp.services.tenants import MAX_GRACE_S
    from mysimbdp.services.timeseries import parse_duration

    try:
        grace_s = parse_duration(value)
    except ConfigError as exc:
        raise click.BadParameter(f"{exc} (or 0: the old keys stop at once)") from exc
    if grace_s > MAX_GRACE_S:
        raise click.BadParameter(f"{value!r} is over 30 days: a rotated-out key works at most 30d more")
    return grace_s


@click.command("rotate-key")
@click.argument("tenant_id")
@click.option(
    "--grace",
    "grace_s",
    default="1h",
    show_default=True,
    callback=_grace,
    help="How long the tenant's current keys keep working, for its clients to switch: "
    "30s, 10m, 1h, 2d (at most 30d), or 0 for at once.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new key and the old keys' end as JSON.")
@with_platform
def rotate_key(platform: Platform, tenant_id: str, grace_s: float, as_json: bool) -> None:
    """Issue TENANT_ID a new API key (shown once); its current keys stop working after GRACE.
    Also on the operator API: POST /v1/admin/tenants/ID/rotate-key {"grace_s": 3600}."""
    from datetime import UTC, datetime

    import orjson

    from mysimbdp.services.tenants import rotate_key as rotate

    rotated = rotate(platform, tenant_id, grace_s)
    ends = datetime.fromtimestamp(rotated.old_keys_expire_at, UTC).isoformat(timespec="seconds")
    if as_json:
        answer = {"id": tenant_id, "api_key": rotated.api_key, "grace_s": grace_s, "old_keys_expire_at": ends}
        click.echo(orjson.dumps(answer).decode())
    else:
        click.echo(f"tenant {tenant_id}: new api key (shown once): {rotated.api_key}")
        click.echo(f"its previous keys stop working at {ends} (grace {grace_s:g} s)")
