"""The nodes of a RabbitMQ cluster and the declaration of the platform's queues on them.

A broker URL may list a cluster's nodes, comma-separated (:func:`split_urls` of the port):
``amqp://u:p@h1:5672/vh,amqp://u:p@h2:5672/vh`` or, shorter, ``amqp://u:p@h1:5672/vh,h2:5672``
(an item without a scheme takes the first item's scheme, user and vhost). aio-pika and aiormq
take one URL, so the client (:mod:`.client`) tries the nodes in turn, and when its connection
or a channel is lost it connects again, from the next node on: a killed node costs its clients
one reconnection to the next node. A leaf: it loads no ``aio-pika`` (the users' module uses it).

The queues are quorum queues. With ``replicas`` 1 (``MYSIMBDP_BROKER_REPLICAS``' default) their
arguments are the ones the platform has always used (RabbitMQ picks the group size: every node
up to its ``quorum_cluster_size``, 3), and an existing queue is used as it is (a stream app does
not know the platform's setting: the platform declares, the app finds). With ``replicas`` > 1
they are declared with ``x-quorum-initial-group-size: replicas``; a queue declared before with
other arguments cannot be redeclared (RabbitMQ answers ``PRECONDITION_FAILED``) and
:func:`inequivalent` says what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from mysimbdp.adapters.broker.base import split_urls
from mysimbdp.errors import BrokerError

if TYPE_CHECKING:
    from pamqp.common import FieldTable

__all__ = ["QUEUE_TYPE", "inequivalent", "node_urls", "queue_arguments"]

QUEUE_TYPE = "quorum"


def node_urls(url: str) -> list[str]:
    """One complete ``amqp://`` URL per node; items after the first without a path (``h2:5672``)
    take the first one's vhost."""
    urls = split_urls(url)
    if not urls:
        raise BrokerError(f"broker URL {url!r}: no node listed; use amqp://user:password@host:port/vhost")
    path = urlsplit(urls[0]).path
    return [u if urlsplit(u).path else urlunsplit(urlsplit(u)._replace(path=path)) for u in urls]


def queue_arguments(replicas: int, extra: Mapping[str, str | int] | None = None) -> FieldTable:
    """The arguments of a platform queue for ``replicas`` (see the module's doc)."""
    arguments: FieldTable = {"x-queue-type": QUEUE_TYPE}
    if replicas > 1:
        arguments["x-quorum-initial-group-size"] = replicas
    return {**arguments, **(extra or {})}


def inequivalent(where: str, queue: str, replicas: int, answer: str) -> BrokerError:
    """The error of a queue RabbitMQ refuses to redeclare (``answer``: its ``PRECONDITION_FAILED``
    text, which names the argument that differs and its current value)."""
    return BrokerError(
        f"{where}: queue {queue!r} exists already with other arguments than a {QUEUE_TYPE} queue of "
        f"x-quorum-initial-group-size {replicas} (MYSIMBDP_BROKER_REPLICAS={replicas}); RabbitMQ says: {answer}. "
        "A queue's type and group size cannot change: set MYSIMBDP_BROKER_REPLICAS back to the value it "
        "was declared with (1 for a queue declared without a group size), or delete the queue (and its "
        "messages) so that the platform declares it again"
    )
