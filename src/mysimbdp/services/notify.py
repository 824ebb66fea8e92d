"""notify: tell a tenant's webhooks that something failed (``docs/notifications.md``).

:func:`notify` builds the event's JSON payload and puts one delivery per subscribed webhook
of the tenant's profile into the meta store's outbox; the notifier (``managers/notifier.py``)
sends them. It never raises into its caller and never touches the network: ingestion goes
on whatever the receivers do. :func:`sign` is the signature a receiver verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from mysimbdp.adapters.metastore.notifications import Delivery
from mysimbdp.domain.ids import new_id
from mysimbdp.domain.notifications import NotifyEvent, Webhook
from mysimbdp.domain.profile import Profile
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform

log = get_logger("notify")

RESERVED_FIELDS = frozenset({"id", "event", "tenant", "at"})
EXCERPT_CHARS = 2000  # of a stderr tail in a payload


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``<timestamp>.<body>`` keyed with ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signed_headers(delivery: Delivery, secret: str, now: float) -> dict[str, str]:
    """The headers of one attempt; the timestamp is the attempt's, so replays can be refused."""
    timestamp = str(int(now))
    return {
        "Content-Type": "application/json",
        "User-Agent": "mysimbdp-webhook/1",
        "X-Mysimbdp-Event": delivery.event,
        "X-Mysimbdp-Delivery": delivery.id,
        "X-Mysimbdp-Timestamp": timestamp,
        "X-Mysimbdp-Signature": sign(secret, timestamp, delivery.payload.encode()),
    }


def iso_utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_payload(delivery_id: str, tenant: str, event: NotifyEvent, at: float, fields: dict[str, Any]) -> str:
    """The JSON body: ``id``, ``event``, ``tenant``, ``at`` (ISO 8601 UTC) and the event's fields."""
    if clash := RESERVED_FIELDS & fields.keys():
        raise ValueError(f"event fields may not be named {sorted(clash)}")
    body = {"id": delivery_id, "event": str(event), "tenant": tenant, "at": iso_utc(at), **fields}
    return orjson.dumps(body, default=str).decode()


def subscribed(webhook: Webhook, event: NotifyEvent, fields: dict[str, Any]) -> bool:
    """Whether ``webhook`` wants this event (for a ratio, one above its threshold)."""
    if event not in webhook.events:
        return False
    if event is NotifyEvent.QUARANTINE_RATIO_EXCEEDED:
        return float(fields.get("ratio", 0.0)) > webhook.quarantine_ratio_high
    return True


def lowest_ratio_threshold(profile: Profile) -> float | None:
    """The lowest ``quarantine_ratio_high`` of the webhooks that want ratio events (None: none do)."""
    thresholds = [
        hook.quarantine_ratio_high
        for hook in profile.notifications.webhooks
        if NotifyEvent.QUARANTINE_RATIO_EXCEEDED in hook.events
    ]
    return min(thresholds, default=None)


def excerpt(text: str, chars: int = EXCERPT_CHARS) -> str:
    """The end of ``text`` (a stderr tail), at most ``chars`` characters."""
    return text if len(text) <= chars else "…" + text[-chars:]


def notify(platform: Platform, tenant: str, event: NotifyEvent, **fields: Any) -> int:
    """Enqueue ``event`` for each of ``tenant``'s webhooks that subscribe to it; returns how
    many. Never raises: a failure to enqueue is logged (with its traceback) and ingestion goes on."""
    try:
        _, profile = platform.tenant(tenant)
        now = time.time()
        deliveries = []
        for hook in profile.notifications.webhooks:
            if not subscribed(hook, event, fields):
                continue
            extra = {"threshold": hook.quarantine_ratio_high} if event is NotifyEvent.QUARANTINE_RATIO_EXCEEDED else {}
            delivery_id = new_id("n")
            payload = build_payload(delivery_id, tenant, event, now, {**fields, **extra})
            deliveries.append(Delivery(delivery_id, tenant, str(event), hook.url, payload, created_at=now))
        platform.meta.notifications.enqueue(deliveries)
    except Exception:  # never into the caller: a notification must not stop ingestion
        log.exception("notification_not_enqueued", tenant=tenant, notify_event=str(event))
        return 0
    if deliveries:
        log.info("notification_enqueued", tenant=tenant, notify_event=str(event), webhooks=len(deliveries))
    return len(deliveries)
