"""The databroker port and its backends (kombu's ``transport/``, dlt's ``destinations/impl/``).

- :mod:`.base`: the ``Broker`` and ``TenantUsers`` ports, ``Message``, the names and
  :data:`~.base.BACKENDS`, the one URL scheme -> backend table; imports no backend.
- :mod:`.nats`: NATS JetStream (the client, its puller, the embedded ``nats-server`` and its
  users); :mod:`.rabbitmq`: RabbitMQ (the client, its users and the management API).

:func:`open_broker` and :func:`tenant_users` import a backend package only when it is used,
by its dotted name in the table; a backend imports :mod:`.base`, never this module.

A broker user per tenant: who gets which URL, and where the passwords are kept. With the
embedded NATS server (:mod:`.nats.users`) and with RabbitMQ (:mod:`.rabbitmq.users`) the
platform makes each tenant a broker user that can reach only the tenant's own streams; its
stream apps get that user's URL, never the platform's. An external NATS server keeps its own
users (:func:`tenant_users` is None): the operator makes them, and the apps get the
platform's URL.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from mysimbdp.adapters.broker.base import (
    BACKENDS,
    CHUNKS_STREAM,
    DEFAULT_ACK_WAIT_S,
    EMBEDDED_SCHEME,
    PREFIX,
    REPORTS_STREAM,
    STREAM_RE,
    Backend,
    Broker,
    Message,
    SecretFile,
    TenantUsers,
    split_urls,
    stream_problem,
    subject,
    tenant_stream_problem,
)
from mysimbdp.errors import BrokerError

if TYPE_CHECKING:
    from mysimbdp.adapters.secretbox import SecretBox
    from mysimbdp.settings import Settings

__all__ = [
    "BACKENDS",
    "CHUNKS_STREAM",
    "DEFAULT_ACK_WAIT_S",
    "PREFIX",
    "REPORTS_STREAM",
    "STREAM_RE",
    "Broker",
    "Message",
    "SecretFile",
    "TenantUsers",
    "open_broker",
    "split_urls",
    "stream_problem",
    "subject",
    "tenant_stream_problem",
    "tenant_users",
]


def _backend(scheme: str, url: str) -> Backend:
    """The backend package serving broker URLs of ``scheme`` (``url`` is named in the error)."""
    name = BACKENDS.get(scheme)
    if name is None:
        raise BrokerError(
            f"broker URL {url!r}: unknown scheme {scheme!r}; use nats://host:port or amqp://user:pw@host/"
        )
    return cast(Backend, importlib.import_module(name))


def open_broker(url: str, *, ack_wait_s: float = DEFAULT_ACK_WAIT_S, replicas: int = 1) -> Broker:
    """The broker for ``url`` (a comma-separated list for a cluster), whose streams it creates
    are kept on ``replicas`` nodes (``Settings.broker_replicas``); does no IO (call ``connect``)."""
    return _backend(urlsplit(url).scheme, url).open_broker(url, ack_wait_s=ack_wait_s, replicas=replicas)


def tenant_users(settings: Settings, secrets: SecretBox) -> TenantUsers | None:
    """The tenants' broker users for this platform's broker (their passwords sealed with
    ``secrets``); None for an external NATS."""
    url = settings.broker_url
    scheme = urlsplit(url).scheme if url else EMBEDDED_SCHEME
    return _backend(scheme, url).tenant_users(url, settings.home / "broker", settings.broker_admin_url, secrets)
