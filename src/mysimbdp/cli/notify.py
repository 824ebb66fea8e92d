"""``mysimbdp notifications list``: what was sent to a tenant's webhooks and how it went."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import orjson

from mysimbdp.cli.context import LazyChoice, with_platform

if TYPE_CHECKING:
    from mysimbdp.adapters.metastore.notifications import Delivery
    from mysimbdp.runtime.platform import Platform


@click.group("notifications")
def notifications() -> None:
    """Webhook notifications (docs/notifications.md): sent by a running `mysimbdp up`."""


def _events() -> list[str]:
    from mysimbdp.domain.notifications import NotifyEvent  # pydantic: only when an event is given or shown

    return [str(e) for e in NotifyEvent]


def _when(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _as_json(d: Delivery) -> dict[str, Any]:
    from mysimbdp.adapters.metastore.notifications import DeliveryStatus
    from mysimbdp.settings import mask_url

    return {
        "id": d.id,
        "event": d.event,
        "url": mask_url(d.url),
        "status": str(d.status),
        "attempts": d.attempts,
        "created_at": _when(d.created_at),
        "next_attempt_at": _when(d.next_attempt_at) if d.status is DeliveryStatus.PENDING else None,
        "delivered_at": _when(d.delivered_at),
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "payload": orjson.loads(d.payload),
    }


def _line(d: Delivery, now: float) -> str:
    from mysimbdp.adapters.metastore.notifications import DeliveryStatus
    from mysimbdp.settings import mask_url

    tries = f"{d.attempts} attempt{'s' if d.attempts != 1 else ''}"
    if d.status is DeliveryStatus.DELIVERED:
        outcome = f"delivered ({tries}, HTTP {d.last_status_code})"
    elif d.status is DeliveryStatus.DEAD:
        outcome = f"dead ({tries}; last: {d.last_error})"
    elif d.status is DeliveryStatus.REFUSED:
        outcome = f"refused, never sent ({d.last_error})"
    else:
        wait = max(0.0, d.next_attempt_at - now)
        outcome = f"pending ({tries}, next in {wait:.0f} s" + (f"; last: {d.last_error})" if d.last_error else ")")
    return f"{_when(d.created_at)} {d.id} {d.event} -> {mask_url(d.url)}: {outcome}"


@notifications.command("list")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.option("--event", type=LazyChoice(_events), help="Only this event.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Each delivery with its payload as JSON.")
@with_platform
def notifications_list(platform: Platform, tenant_id: str, event: str | None, limit: int, as_json: bool) -> None:
    """The tenant's latest webhook deliveries: event, receiver, status (pending, delivered,
    dead, refused), attempts and the last error."""
    platform.tenant(tenant_id)  # an unknown tenant is an error, not an empty list
    deliveries = platform.meta.notifications.recent(tenant_id, limit=limit, event=event)
    if as_json:
        click.echo(orjson.dumps([_as_json(d) for d in deliveries], option=orjson.OPT_INDENT_2).decode())
        return
    now = time.time()
    for delivery in deliveries:
        click.echo(_line(delivery, now))
    if not deliveries:
        click.echo(f"tenant {tenant_id}: no notifications")
