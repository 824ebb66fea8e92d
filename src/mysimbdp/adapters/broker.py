"""mysimbdp-databroker: one asyncio interface over two real brokers.

``open_broker(url)`` picks the backend by scheme: ``nats://`` for NATS JetStream
(``broker_nats``, also the embedded default), ``amqp://`` for RabbitMQ
(``broker_rabbitmq``). Both give the same guarantees:

- ``publish`` returns only once the broker confirmed every message durable (JetStream
  PubAck, RabbitMQ publisher confirm), with the confirms pipelined; a failure raises
  :class:`BrokerUnavailable` and the caller must answer "not accepted".
- A tenant's stream is one durable queue shared by all of the tenant's app instances that
  consume it under the same ``group`` (work-queue semantics: each message goes to one of
  them). A message not acked within ``ack_wait_s`` (its consumer died) is delivered again,
  with ``deliveries`` counting the attempts.
- ``backlog`` counts the messages not yet acked (waiting or in flight): what the monitor
  scales on.

Names: a stream ``S`` of tenant ``T`` is the subject / routing key / queue ``mysimbdp.T.S``.
Tenant ids are checked by :func:`mysimbdp.domain.naming.tenant_id_problem`; stream names
by :func:`stream_problem` (tenants' own by :func:`tenant_stream_problem`: the platform keeps
``mysimbdp*`` for itself, e.g. :data:`REPORTS_STREAM`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from mysimbdp.domain.naming import tenant_id_problem
from mysimbdp.errors import BrokerError, TenantError

PREFIX = "mysimbdp"
STREAM_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
DEFAULT_ACK_WAIT_S = 30.0
REPORTS_STREAM = f"{PREFIX}_reports"  # each tenant's instance reports to the monitor
CHUNKS_STREAM = f"{PREFIX}_chunks"  # tasks of a tenant's big files for the chunk workers


def stream_problem(stream: str) -> str | None:
    """Why ``stream`` is no valid stream name, or None."""
    if STREAM_RE.fullmatch(stream):
        return None
    return (
        f"stream name {stream!r} is not valid: use 1-63 characters, lower-case letters, digits and '_', "
        "starting with a letter"
    )


def tenant_stream_problem(stream: str) -> str | None:
    """:func:`stream_problem`, plus: names starting with ``mysimbdp`` are the platform's."""
    if stream.startswith(PREFIX):
        return f"stream name {stream!r} is reserved: names starting with {PREFIX!r} belong to the platform"
    return stream_problem(stream)


def subject(tenant: str, stream: str) -> str:
    """``mysimbdp.<tenant>.<stream>``, after checking both names."""
    if problem := tenant_id_problem(tenant):
        raise TenantError(problem)
    if problem := stream_problem(stream):
        raise BrokerError(problem)
    return f"{PREFIX}.{tenant}.{stream}"


@dataclass(eq=False)
class Message:
    """One delivered message: its body, how many times it has been delivered (1 the first
    time), the id it was published with, the backend's handle for ack/nak, and when the
    broker took it (epoch s; None when the broker does not say)."""

    body: bytes
    deliveries: int
    msg_id: str | None = None
    handle: Any = field(default=None, repr=False)
    published_at: float | None = None


class Broker(Protocol):
    """A connection to the broker; one per process, used from one event loop."""

    url: str

    async def connect(self) -> None:
        """Connect (raises :class:`BrokerUnavailable`)."""
        ...

    async def close(self) -> None: ...

    async def declare(self, tenant: str, stream: str) -> None:
        """Create the tenant's stream durably if it does not exist (idempotent)."""
        ...

    async def publish(self, tenant: str, stream: str, bodies: Sequence[bytes], ids: Sequence[str]) -> None:
        """Publish ``bodies`` (``ids[i]`` is body i's message id, used by the broker to drop
        a re-publication where it can); return once all are confirmed durable."""
        ...

    async def pull(self, tenant: str, stream: str, group: str, *, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages, waiting at most ``timeout_s`` for the first; []
        when none came."""
        ...

    async def ack(self, messages: Sequence[Message]) -> None:
        """Done with these: never deliver them again."""
        ...

    async def nak(self, messages: Sequence[Message]) -> None:
        """Not done: deliver these again (to any consumer of the group)."""
        ...

    async def backlog(self, tenant: str, stream: str, group: str) -> int:
        """Messages of the stream not acked yet by ``group`` (waiting or being processed)."""
        ...

    async def delete(self, tenant: str, stream: str) -> None:
        """Drop the stream and every message in it (tenant removal, tests)."""
        ...


def open_broker(url: str, *, ack_wait_s: float = DEFAULT_ACK_WAIT_S) -> Broker:
    """The broker for ``url``; does no IO (call ``connect``)."""
    scheme = urlsplit(url).scheme
    if scheme in ("nats", "tls"):
        from mysimbdp.adapters.broker_nats import NatsBroker

        return NatsBroker(url, ack_wait_s=ack_wait_s)
    if scheme in ("amqp", "amqps"):
        from mysimbdp.adapters.broker_rabbitmq import RabbitBroker

        return RabbitBroker(url, ack_wait_s=ack_wait_s)
    raise BrokerError(f"broker URL {url!r}: unknown scheme {scheme!r}; use nats://host:port or amqp://user:pw@host/")
