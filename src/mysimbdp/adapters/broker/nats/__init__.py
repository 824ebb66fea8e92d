"""The NATS backend: JetStream through ``nats-py``, and the embedded ``nats-server``.

- :mod:`.client`: ``NatsBroker``, the ``Broker`` on JetStream;
- :mod:`.pull`: ``Puller``, its pull requests with few Python steps per message;
- :mod:`.server`: ``EmbeddedNats``, the platform's own ``nats-server`` process;
- :mod:`.users`: ``NatsUsers``, the embedded server's platform and tenant users.

:func:`open_broker` and :func:`tenant_users` are what :mod:`mysimbdp.adapters.broker` calls
(the ``Backend`` of :mod:`mysimbdp.adapters.broker.base`).
"""

from __future__ import annotations

from pathlib import Path

from mysimbdp.adapters.broker.base import DEFAULT_ACK_WAIT_S
from mysimbdp.adapters.broker.nats.client import NatsBroker, durable_name, stream_name
from mysimbdp.adapters.broker.nats.server import EmbeddedNats, free_port, nats_server_binary
from mysimbdp.adapters.broker.nats.users import BrokerUsers, NatsUsers, inbox_prefix, tenant_user
from mysimbdp.adapters.secretbox import SecretBox

__all__ = [
    "BrokerUsers",
    "EmbeddedNats",
    "NatsBroker",
    "NatsUsers",
    "durable_name",
    "free_port",
    "inbox_prefix",
    "nats_server_binary",
    "open_broker",
    "stream_name",
    "tenant_user",
    "tenant_users",
]


def open_broker(url: str, *, ack_wait_s: float = DEFAULT_ACK_WAIT_S) -> NatsBroker:
    """The broker at ``url`` (``nats://`` or ``tls://``); does no IO."""
    return NatsBroker(url, ack_wait_s=ack_wait_s)


def tenant_users(broker_url: str, broker_dir: Path, admin_url: str, secrets: SecretBox) -> NatsUsers | None:
    """The embedded server's users (``broker_url`` empty), kept in ``broker_dir``; None for an
    external NATS server, which keeps its own users (``admin_url`` is RabbitMQ's only)."""
    if broker_url:
        return None
    return NatsUsers(broker_dir, secrets)
