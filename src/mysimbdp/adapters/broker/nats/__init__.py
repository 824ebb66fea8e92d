"""The NATS backend: JetStream through ``nats-py``, and the embedded ``nats-server``.

- :mod:`.client`: ``NatsBroker``, the ``Broker`` on JetStream;
- :mod:`.pull`: ``Puller``, its pull requests with few Python steps per message;
- :mod:`.server`: ``EmbeddedNats``, the platform's own ``nats-server`` process;
- :mod:`.users`: ``NatsUsers``, the embedded server's platform and tenant users;
- :mod:`.names`: what is named after a tenant (stream, durable consumer, inbox, user).

:func:`open_broker` and :func:`tenant_users` are what :mod:`mysimbdp.adapters.broker` calls
(the ``Backend`` of :mod:`mysimbdp.adapters.broker.base`). The client and the users are
imported when first used (PEP 562 ``__getattr__``): a command that only names things or
finds the server binary does not pay for ``nats-py`` (190 ms) or ``bcrypt``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from mysimbdp.adapters.broker.base import DEFAULT_ACK_WAIT_S
from mysimbdp.adapters.broker.nats.names import durable_name, inbox_prefix, stream_name, tenant_user
from mysimbdp.adapters.broker.nats.server import EmbeddedNats, free_port, nats_server_binary

if TYPE_CHECKING:
    from mysimbdp.adapters.broker.nats.client import NatsBroker
    from mysimbdp.adapters.broker.nats.users import BrokerUsers, NatsUsers
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

LAZY = {"NatsBroker": "client", "BrokerUsers": "users", "NatsUsers": "users"}  # name -> its module


def __getattr__(name: str) -> object:
    if name in LAZY:
        return getattr(importlib.import_module(f"{__name__}.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_broker(url: str, *, ack_wait_s: float = DEFAULT_ACK_WAIT_S, replicas: int = 1) -> NatsBroker:
    """The broker at ``url`` (``nats://`` or ``tls://``; a cluster's nodes separated by commas),
    its streams kept on ``replicas`` nodes; does no IO."""
    from mysimbdp.adapters.broker.nats.client import NatsBroker

    return NatsBroker(url, ack_wait_s=ack_wait_s, replicas=replicas)


def tenant_users(broker_url: str, broker_dir: Path, admin_url: str, secrets: SecretBox) -> NatsUsers | None:
    """The embedded server's users (``broker_url`` empty), kept in ``broker_dir``; None for an
    external NATS server, which keeps its own users (``admin_url`` is RabbitMQ's only)."""
    if broker_url:
        return None
    from mysimbdp.adapters.broker.nats.users import NatsUsers

    return NatsUsers(broker_dir, secrets)
