"""What the NATS backend names after a tenant: its JetStream stream, a group's durable
consumer, its users' inbox prefix and its user. A leaf: what only names things (the tenants
service, the users) does not load ``nats-py``."""

from __future__ import annotations

__all__ = ["durable_name", "inbox_prefix", "stream_name", "tenant_user"]


def stream_name(tenant: str) -> str:
    return f"MYSIMBDP_{tenant}"


def durable_name(stream: str, group: str) -> str:
    return f"{stream}-{group}"


def inbox_prefix(tenant: str) -> str:
    return f"_INBOX_{tenant}"


def tenant_user(tenant: str) -> str:
    return f"t_{tenant}"
