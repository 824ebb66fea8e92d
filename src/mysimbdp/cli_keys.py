"""``mysimbdp tenant rotate-key``: a new API key, the old ones refused after a grace period."""

from __future__ import annotations

from datetime import UTC, datetime

import click
import orjson

from mysimbdp.platform import Platform


@click.command("rotate-key")
@click.argument("tenant_id")
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    help="How long the tenant's current keys keep working, for its clients to switch: 90s, 15m, 1h, 2d, 0.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new key and the old keys' end as JSON.")
@click.pass_obj
def rotate_key(platform: Platform, tenant_id: str, grace: str, as_json: bool) -> None:
    """Issue TENANT_ID a new API key (shown once); its current keys stop working after GRACE.
    Also on the operator API: POST /v1/admin/tenants/ID/rotate-key {"grace_s": 3600}."""
    from mysimbdp.services.tenants import rotate_key as rotate
    from mysimbdp.services.timeseries import parse_duration

    grace_s = 0.0 if grace.strip() == "0" else parse_duration(grace)
    platform.start()
    rotated = rotate(platform, tenant_id, grace_s)
    ends = datetime.fromtimestamp(rotated.old_keys_expire_at, UTC).isoformat(timespec="seconds")
    if as_json:
        click.echo(orjson.dumps({"id": tenant_id, "api_key": rotated.api_key, "old_keys_expire_at": ends}).decode())
    else:
        click.echo(f"tenant {tenant_id}: new api key (shown once): {rotated.api_key}")
        click.echo(f"the previous keys stop working at {ends}")
