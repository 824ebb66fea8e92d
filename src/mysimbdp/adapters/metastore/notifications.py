"""The meta store's notification outbox: one row per (event, webhook), delivered by the
notifier (``managers/notifier.py``) and kept with its outcome.

A row is ``pending`` until a 2xx answer makes it ``delivered`` or ``max_attempts`` failed
attempts make it ``dead``. A notifier claims a due row by moving its ``next_attempt_at``
past the send's timeout (a lease: if that notifier dies, the row is due again later) and
counting the attempt, so two notifiers on one meta store never send the same attempt.
Rows hold no secret: the notifier signs with the webhook's secret from the current profile.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mysimbdp.adapters.metastore.sql import SqlConnection

_COLUMNS = (
    "id, tenant, event, url, payload, status, attempts, created_at, next_attempt_at, delivered_at, "
    "last_status_code, last_error"
)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    REFUSED = "refused"  # never sent: its address is one the platform does not post to (egress rule)


@dataclass(frozen=True)
class Delivery:
    """One notification to one webhook, and how its delivery went so far."""

    id: str  # also the payload's ``id`` and the ``X-Mysimbdp-Delivery`` header
    tenant: str
    event: str
    url: str
    payload: str  # the JSON body, exactly as sent
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    created_at: float = 0.0
    next_attempt_at: float = 0.0
    delivered_at: float | None = None
    last_status_code: int | None = None  # the receiver's HTTP status; None: no answer
    last_error: str = ""


def _delivery(row: Sequence[Any]) -> Delivery:
    values = list(row)
    values[5] = DeliveryStatus(values[5])
    return Delivery(*values)


class NotificationOutbox:
    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    def enqueue(self, deliveries: Sequence[Delivery]) -> None:
        """Insert pending deliveries (one quick statement; the notifier sends them)."""
        self._db.executemany(
            "INSERT INTO notifications (id, tenant, event, url, payload, status, created_at, next_attempt_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (d.id, d.tenant, d.event, d.url, d.payload, DeliveryStatus.PENDING, d.created_at, d.created_at)
                for d in deliveries
            ],
        )

    def due(self, now: float, *, per_receiver: int, limit: int) -> list[Delivery]:
        """Pending deliveries whose time has come: the oldest ``per_receiver`` of each
        (tenant, url), so one slow receiver's backlog never hides anyone else's notification."""
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM (SELECT *, ROW_NUMBER() OVER "
            "(PARTITION BY tenant, url ORDER BY next_attempt_at, id) AS rank FROM notifications "
            "WHERE status = ? AND next_attempt_at <= ?) AS q WHERE rank <= ? ORDER BY next_attempt_at, id LIMIT ?",
            (DeliveryStatus.PENDING, now, per_receiver, limit),
        )
        return [_delivery(row) for row in rows]

    def next_due_at(self) -> float | None:
        row = self._db.one("SELECT MIN(next_attempt_at) FROM notifications WHERE status = ?", (DeliveryStatus.PENDING,))
        return None if row is None or row[0] is None else float(row[0])

    def claim(self, delivery: Delivery, now: float, lease_s: float) -> bool:
        """Take ``delivery`` for one attempt (counted now); False if another notifier was faster."""
        return (
            self._db.execute(
                "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = ? "
                "WHERE id = ? AND status = ? AND attempts = ? AND next_attempt_at <= ?",
                (now + lease_s, delivery.id, DeliveryStatus.PENDING, delivery.attempts, now),
            )
            > 0
        )

    def delivered(self, delivery_id: str, status_code: int) -> None:
        self._db.execute(
            "UPDATE notifications SET status = ?, delivered_at = ?, last_status_code = ?, last_error = '' WHERE id = ?",
            (DeliveryStatus.DELIVERED, time.time(), status_code, delivery_id),
        )

    def failed(self, delivery_id: str, status_code: int | None, error: str, retry_at: float | None) -> None:
        """Record a failed attempt: retried at ``retry_at``, or ``dead`` when it is None."""
        status = DeliveryStatus.DEAD if retry_at is None else DeliveryStatus.PENDING
        self._db.execute(
            "UPDATE notifications SET status = ?, next_attempt_at = ?, last_status_code = ?, last_error = ? "
            "WHERE id = ?",
            (status, retry_at if retry_at is not None else time.time(), status_code, error[:2000], delivery_id),
        )

    def refused(self, delivery_id: str, reason: str) -> None:
        """Record a delivery the platform will not send (no connection was made): final, not retried."""
        self._db.execute(
            "UPDATE notifications SET status = ?, next_attempt_at = ?, last_status_code = NULL, last_error = ? "
            "WHERE id = ?",
            (DeliveryStatus.REFUSED, time.time(), reason[:2000], delivery_id),
        )

    def get(self, delivery_id: str) -> Delivery | None:
        row = self._db.one(f"SELECT {_COLUMNS} FROM notifications WHERE id = ?", (delivery_id,))
        return None if row is None else _delivery(row)

    def recent(self, tenant: str, *, limit: int = 50, event: str | None = None) -> list[Delivery]:
        """The tenant's latest deliveries (of one ``event`` if given), newest first."""
        where, params = ("tenant = ?", [tenant]) if event is None else ("tenant = ? AND event = ?", [tenant, event])
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM notifications WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [_delivery(row) for row in rows]
