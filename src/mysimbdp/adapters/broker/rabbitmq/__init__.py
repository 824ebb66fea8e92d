"""The RabbitMQ backend: quorum queues through ``aio-pika``, a user per tenant.

- :mod:`.client`: ``RabbitBroker``, the ``Broker`` on RabbitMQ;
- :mod:`.users`: ``RabbitUsers``, the tenants' users and their permissions;
- :mod:`.management`: ``ManagementApi``, the broker's management HTTP API the users are made with;
- :mod:`.names`: what is named after a tenant (exchange, dead-letter queue);
- :mod:`.nodes`: a cluster's nodes (tried in turn) and the queues' arguments (``replicas``).

:func:`open_broker` and :func:`tenant_users` are what :mod:`mysimbdp.adapters.broker` calls
(the ``Backend`` of :mod:`mysimbdp.adapters.broker.base`). The client, the users and the
management API are imported when first used (PEP 562 ``__getattr__``), so naming a tenant's
exchange does not load ``aio-pika`` or ``httpx``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from mysimbdp.adapters.broker.base import DEFAULT_ACK_WAIT_S
from mysimbdp.adapters.broker.rabbitmq.names import dead_letter_queue, exchange_name

if TYPE_CHECKING:
    from mysimbdp.adapters.broker.rabbitmq.client import RabbitBroker
    from mysimbdp.adapters.broker.rabbitmq.management import ManagementApi, default_admin_url
    from mysimbdp.adapters.broker.rabbitmq.users import RabbitUsers, rabbit_user, tenant_permission
    from mysimbdp.adapters.secretbox import SecretBox

__all__ = [
    "ManagementApi",
    "RabbitBroker",
    "RabbitUsers",
    "dead_letter_queue",
    "default_admin_url",
    "exchange_name",
    "open_broker",
    "rabbit_user",
    "tenant_permission",
    "tenant_users",
]

LAZY = {  # name -> its module
    "RabbitBroker": "client",
    "ManagementApi": "management",
    "default_admin_url": "management",
    "RabbitUsers": "users",
    "rabbit_user": "users",
    "tenant_permission": "users",
}


def __getattr__(name: str) -> object:
    if name in LAZY:
        return getattr(importlib.import_module(f"{__name__}.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_broker(url: str, *, ack_wait_s: float = DEFAULT_ACK_WAIT_S, replicas: int = 1) -> RabbitBroker:
    """The broker at ``url`` (``amqp://`` or ``amqps://``; a cluster's nodes comma-separated),
    its queues declared for ``replicas`` (:mod:`.nodes`); does no IO."""
    from mysimbdp.adapters.broker.rabbitmq.client import RabbitBroker

    return RabbitBroker(url, ack_wait_s=ack_wait_s, replicas=replicas)


def tenant_users(broker_url: str, broker_dir: Path, admin_url: str, secrets: SecretBox) -> RabbitUsers:
    """The tenants' users on the broker at ``broker_url`` (the platform's URL), made through
    the management API at ``admin_url`` ("" = the broker's host, port 15672), their passwords
    kept in ``broker_dir``."""
    from mysimbdp.adapters.broker.rabbitmq.users import RabbitUsers

    return RabbitUsers(broker_url, broker_dir, admin_url, secrets)
