"""The RabbitMQ backend: quorum queues through ``aio-pika``, a user per tenant.

- :mod:`.client`: ``RabbitBroker``, the ``Broker`` on RabbitMQ;
- :mod:`.users`: ``RabbitUsers``, the tenants' users and their permissions;
- :mod:`.management`: ``ManagementApi``, the broker's management HTTP API the users are made with.

:func:`open_broker` and :func:`tenant_users` are what :mod:`mysimbdp.adapters.broker` calls
(the ``Backend`` of :mod:`mysimbdp.adapters.broker.base`).
"""

from __future__ import annotations

from pathlib import Path

from mysimbdp.adapters.broker.base import DEFAULT_ACK_WAIT_S
from mysimbdp.adapters.broker.rabbitmq.client import RabbitBroker, dead_letter_queue, exchange_name
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


def open_broker(url: str, *, ack_wait_s: float = DEFAULT_ACK_WAIT_S) -> RabbitBroker:
    """The broker at ``url`` (``amqp://`` or ``amqps://``); does no IO."""
    return RabbitBroker(url, ack_wait_s=ack_wait_s)


def tenant_users(broker_url: str, broker_dir: Path, admin_url: str, secrets: SecretBox) -> RabbitUsers:
    """The tenants' users on the broker at ``broker_url`` (the platform's URL), made through
    the management API at ``admin_url`` ("" = the broker's host, port 15672), their passwords
    kept in ``broker_dir``."""
    return RabbitUsers(broker_url, broker_dir, admin_url, secrets)
