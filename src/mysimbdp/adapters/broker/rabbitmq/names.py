"""What the RabbitMQ backend names after a tenant: its exchange and its dead-letter queue. A
leaf: what only names things (the tenants service) does not load ``aio-pika``."""

from __future__ import annotations

from mysimbdp.adapters.broker.base import PREFIX

__all__ = ["dead_letter_queue", "exchange_name"]


def exchange_name(tenant: str) -> str:
    """``mysimbdp.<tenant>``: the tenant's direct exchange (its streams' and dead letters' routes)."""
    return f"{PREFIX}.{tenant}"


def dead_letter_queue(tenant: str) -> str:
    """``mysimbdp.<tenant>._dead``: no stream name starts with ``_``, so it is no stream's queue."""
    return f"{PREFIX}.{tenant}._dead"
