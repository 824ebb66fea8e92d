"""The databroker on RabbitMQ (``aio-pika``, one connection per broker object, to one node
of the cluster at a time: :mod:`.nodes`).

Every name a tenant's stream uses starts with ``mysimbdp.<tenant>``, so one permission regex
per tenant user (:mod:`.users`) keeps tenants apart: a durable direct exchange
``mysimbdp.<tenant>``; per stream a durable quorum queue named and bound by
``mysimbdp.<tenant>.<stream>``, with a delivery limit after which a message is dead-lettered
(through the same exchange) to the tenant's queue ``mysimbdp.<tenant>._dead`` instead of
blocking the stream. Publishing uses a
publisher-confirm channel: every message is sent at once (persistent, ``mandatory``) and the
call returns when all confirms are in. Consuming uses one consumer per queue with a prefetch
that fills an in-process buffer; ``pull`` drains it. RabbitMQ itself redelivers an unacked
message only when its consumer's channel closes, so ``ack_wait_s`` is kept here: a message
handed out and neither acked nor nak'ed within it is nack'ed (requeued) at the next pull.

A lost connection (its node killed) or channel is replaced at the next call, on the next node
that answers; what the old one held is forgotten: RabbitMQ requeues the messages it had
delivered and not been acked, so an ack of one of them is skipped (it is on its way to another
attempt, as after ``ack_wait_s``), and a publish whose confirm was lost raises
``BrokerUnavailable``: the caller retries it with the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    ConsumerTag,
)
from aiormq.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed

from mysimbdp.adapters.broker.base import DEFAULT_ACK_WAIT_S, Message, subject
from mysimbdp.adapters.broker.rabbitmq.names import dead_letter_queue, exchange_name
from mysimbdp.adapters.broker.rabbitmq.nodes import inequivalent, node_urls, queue_arguments
from mysimbdp.errors import BrokerError, BrokerUnavailable
from mysimbdp.logs import get_logger
from mysimbdp.settings import mask_url

CONNECT_TIMEOUT_S = 5.0
PUBLISH_TIMEOUT_S = 30.0
PREFETCH = 100
DELIVERY_LIMIT = 20
_REFUSED_LOGIN = (aio_pika.exceptions.AuthenticationError, aio_pika.exceptions.ProbableAuthenticationError)
_TRANSIENT = (
    OSError,  # includes ConnectionError and aio-pika's AMQPConnectionError
    TimeoutError,
    aio_pika.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.DeliveryError,  # a nack, or (PublishError) a return
)
log = get_logger("broker")


class RabbitBroker:
    """``Broker`` on RabbitMQ quorum queues; ``url`` lists one node or several (:mod:`.nodes`)."""

    def __init__(self, url: str, *, ack_wait_s: float = DEFAULT_ACK_WAIT_S, replicas: int = 1) -> None:
        self.url = url
        self.ack_wait_s = ack_wait_s
        self.replicas = replicas
        self._urls = node_urls(url)
        self._node = 0  # the index in _urls of the node connected to, or tried next
        self._wanted = False  # connect() was called, close() was not: a lost connection is replaced
        self._lock = asyncio.Lock()
        self._conn: AbstractConnection | None = None
        self._admin: AbstractChannel | None = None  # declares, consumes, acks
        self._confirming: AbstractChannel | None = None  # publisher confirms on
        self._exchanges: dict[str, AbstractExchange] = {}  # per tenant, on the confirming channel
        self._queues: dict[str, AbstractQueue] = {}  # declared on this connection
        self._buffers: dict[str, asyncio.Queue[AbstractIncomingMessage]] = {}
        self._consumers: dict[str, tuple[AbstractQueue, ConsumerTag]] = {}
        self._handed: dict[AbstractIncomingMessage, float] = {}  # handed out, not settled: since when

    async def connect(self) -> None:
        self._wanted = True
        async with self._lock:
            await self._reconnect()

    async def _reconnect(self) -> None:
        """Drop the connection (if any) and connect to the first node that answers, from the
        current one on (after a loss: from the next one)."""
        lost = self._conn is not None
        await self._drop()
        with _errors(f"broker {mask_url(self.url)}", "connect"):
            self._conn, self._node = await connect_any(self._urls, self._node + lost, CONNECT_TIMEOUT_S)
            self._admin = await self._conn.channel(publisher_confirms=False)
            await self._admin.set_qos(prefetch_count=PREFETCH)
            self._confirming = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
        (log.warning if lost else log.debug)("broker_connected", node=mask_url(self._urls[self._node]), replaced=lost)

    async def close(self) -> None:
        """Close the connection: RabbitMQ cancels the consumers and requeues what is not acked."""
        self._wanted = False
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn, self._admin, self._confirming = self._conn, None, None, None
        self._exchanges.clear()
        self._queues.clear()
        self._buffers.clear()
        self._consumers.clear()
        self._handed.clear()
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(*_TRANSIENT, aio_pika.exceptions.AMQPError):
                await conn.close()

    async def _channel(self, tenant: str, stream: str) -> AbstractChannel:
        """The declaring and consuming channel; a lost connection or channel is replaced first."""
        if not self._wanted:
            raise BrokerUnavailable(
                f"tenant {tenant!r}, stream {stream!r}: broker {mask_url(self.url)}: not connected; call connect()"
            )
        if _closed(self._admin) or _closed(self._confirming):
            async with self._lock:
                with self._errors(tenant, stream, "reconnect"):
                    if _closed(self._admin):
                        await self._reconnect()
                    elif _closed(self._confirming) and self._conn is not None:  # the connection is fine
                        self._exchanges.clear()  # they were got on the old channel
                        self._confirming = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
        assert self._admin is not None
        return self._admin

    async def declare(self, tenant: str, stream: str) -> None:
        await self._queue(tenant, stream)

    async def _exchange(self, tenant: str, stream: str) -> AbstractExchange:
        """The tenant's exchange and dead-letter queue, declared once per connection."""
        if tenant not in self._exchanges:
            channel = await self._channel(tenant, stream)
            confirming = self._confirming
            assert confirming is not None  # set with _admin
            name = exchange_name(tenant)
            with self._errors(tenant, stream, "declare"):
                await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT, durable=True)
                dead = await self._declare(channel, tenant, stream, dead_letter_queue(tenant), {})
                await dead.bind(name, routing_key=dead.name)
                self._exchanges[tenant] = await confirming.get_exchange(name, ensure=False)
        return self._exchanges[tenant]

    async def _queue(self, tenant: str, stream: str) -> AbstractQueue:
        name = subject(tenant, stream)
        channel = await self._channel(tenant, stream)  # first: a lost connection drops what is cached
        if name not in self._queues:
            exchange = await self._exchange(tenant, stream)
            dead_letters: dict[str, str | int] = {
                "x-dead-letter-exchange": exchange.name,
                "x-dead-letter-routing-key": dead_letter_queue(tenant),
                "x-delivery-limit": DELIVERY_LIMIT,
            }
            with self._errors(tenant, stream, "declare"):
                queue = await self._declare(channel, tenant, stream, name, dead_letters)
                await queue.bind(exchange.name, routing_key=name)
            self._queues[name] = queue
        return self._queues[name]

    async def _declare(
        self, channel: AbstractChannel, tenant: str, stream: str, name: str, extra: dict[str, str | int]
    ) -> AbstractQueue:
        """Queue ``name`` with the arguments of ``self.replicas`` (:mod:`.nodes`): at 1 an existing
        queue is taken as it is (a passive declaration, tried on a channel of its own since a
        missing queue closes it), at more it is declared and a refusal explained."""
        assert self._conn is not None
        if self.replicas == 1:
            probe = await self._conn.channel(publisher_confirms=False)
            try:
                await probe.declare_queue(name, passive=True)
                return await channel.declare_queue(name, passive=True)
            except ChannelNotFoundEntity:
                pass  # declared below
            finally:
                if not probe.is_closed:
                    with contextlib.suppress(*_TRANSIENT, aio_pika.exceptions.AMQPError):
                        await probe.close()
        try:
            return await channel.declare_queue(name, durable=True, arguments=queue_arguments(self.replicas, extra))
        except ChannelPreconditionFailed as exc:
            where = f"tenant {tenant!r}, stream {stream!r}: broker {mask_url(self.url)}"
            raise inequivalent(where, name, self.replicas, str(exc.args[0] if exc.args else exc)) from exc

    async def publish(self, tenant: str, stream: str, bodies: Sequence[bytes], ids: Sequence[str]) -> None:
        if len(bodies) != len(ids):
            raise BrokerError(f"tenant {tenant!r}, stream {stream!r}: {len(bodies)} messages but {len(ids)} ids")
        name = (await self._queue(tenant, stream)).name
        exchange = await self._exchange(tenant, stream)  # again: a renewed channel forgets it
        now = datetime.now(UTC)  # AMQP keeps whole seconds
        messages = [
            aio_pika.Message(body, message_id=msg_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, timestamp=now)
            for body, msg_id in zip(bodies, ids, strict=True)
        ]
        with self._errors(tenant, stream, "publish"):
            confirms = await asyncio.gather(
                *(exchange.publish(m, name, mandatory=True, timeout=PUBLISH_TIMEOUT_S) for m in messages),
                return_exceptions=True,
            )
            for outcome in confirms:
                if isinstance(outcome, aio_pika.exceptions.PublishError):
                    self._forget(name)  # returned: the queue was deleted elsewhere; declare it again on the retry
                elif isinstance(outcome, BaseException) and (confirming := self._confirming) is not None:
                    # a nack (or no confirm): a channel that published while the quorum queue had no
                    # leader may go on nacking after a new one is elected; the retry gets a new channel
                    self._confirming = None
                    with contextlib.suppress(*_TRANSIENT, aio_pika.exceptions.AMQPError):
                        await confirming.close()
                if isinstance(outcome, BaseException):
                    raise outcome

    async def _buffer(self, tenant: str, stream: str) -> asyncio.Queue[AbstractIncomingMessage]:
        queue = await self._queue(tenant, stream)
        if queue.name not in self._buffers:
            buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

            async def receive(message: AbstractIncomingMessage) -> None:
                buffer.put_nowait(message)

            with self._errors(tenant, stream, "consume"):
                self._consumers[queue.name] = (queue, await queue.consume(receive))
            self._buffers[queue.name] = buffer
        return self._buffers[queue.name]

    async def pull(self, tenant: str, stream: str, group: str, *, max_messages: int, timeout_s: float) -> list[Message]:
        buffer = await self._buffer(tenant, stream)
        with self._errors(tenant, stream, "give back the messages not acked in time"):
            await self._give_back_overdue()
        try:
            got = [buffer.get_nowait() if not buffer.empty() else await asyncio.wait_for(buffer.get(), timeout_s)]
        except TimeoutError:
            return []
        while len(got) < max_messages and not buffer.empty():
            got.append(buffer.get_nowait())
        now = asyncio.get_running_loop().time()
        self._handed.update((m, now) for m in got)
        return [
            Message(m.body, _deliveries(m), m.message_id, m, m.timestamp.timestamp() if m.timestamp else None)
            for m in got
        ]

    async def _give_back_overdue(self) -> None:
        oldest = asyncio.get_running_loop().time() - self.ack_wait_s
        for message in [m for m, since in self._handed.items() if since <= oldest]:
            if self._handed.pop(message, None) is None:
                continue  # acked meanwhile (the stream loop acks while it pulls again)
            await message.nack(requeue=True)

    async def ack(self, messages: Sequence[Message]) -> None:
        await self._settle(messages, requeue=None)

    async def nak(self, messages: Sequence[Message]) -> None:
        await self._settle(messages, requeue=True)

    async def _settle(self, messages: Sequence[Message], *, requeue: bool | None) -> None:
        """Ack (``requeue`` None) or nack the messages still handed out; one given back after
        ``ack_wait_s`` is skipped: it is already on its way to another attempt."""
        for message in messages:
            handle: AbstractIncomingMessage = message.handle
            if self._handed.pop(handle, None) is None:
                continue
            _, tenant, stream = (handle.routing_key or "?.?.?").split(".", 2)
            with self._errors(tenant, stream, "ack" if requeue is None else "nak"):
                await (handle.ack() if requeue is None else handle.nack(requeue=requeue))

    async def backlog(self, tenant: str, stream: str, group: str) -> int:
        """Ready messages plus those this object holds unacked (buffered or handed out)."""
        queue = await self._queue(tenant, stream)
        with self._errors(tenant, stream, "backlog"):
            declared = await queue.declare()
        buffered = self._buffers[queue.name].qsize() if queue.name in self._buffers else 0
        handed = sum(1 for m in self._handed if m.routing_key == queue.name)
        return int(declared.message_count or 0) + buffered + handed

    async def delete(self, tenant: str, stream: str) -> None:
        name = subject(tenant, stream)
        channel = await self._channel(tenant, stream)
        with self._errors(tenant, stream, "delete"):
            if consumer := self._consumers.get(name):
                queue, tag = consumer
                await queue.cancel(tag)
            await channel.queue_delete(name)  # quorum queues refuse if_unused/if_empty
        self._forget(name)

    def _forget(self, name: str) -> None:
        """Drop what this object knows of queue ``name`` (deleted): its declaration, consumer and messages."""
        self._queues.pop(name, None)
        self._consumers.pop(name, None)
        self._buffers.pop(name, None)
        for message in [m for m in self._handed if m.routing_key == name]:
            del self._handed[message]

    @contextmanager
    def _errors(self, tenant: str, stream: str, what: str) -> Iterator[None]:
        with _errors(f"tenant {tenant!r}, stream {stream!r}: broker {mask_url(self.url)}", what):
            yield


async def connect_any(urls: list[str], first: int, timeout_s: float) -> tuple[AbstractConnection, int]:
    """A connection to the first node that answers, trying ``urls`` in turn from index ``first``;
    the connection and the node's index. Refused credentials or a bad URL raise ``BrokerError``
    at once (every node has the same users); when no node answers, the last node's error."""
    error: BaseException | None = None
    for step in range(len(urls)):
        at = (first + step) % len(urls)
        try:
            return await aio_pika.connect(urls[at], timeout=timeout_s), at
        except (ValueError, *_REFUSED_LOGIN) as exc:
            raise BrokerError(
                f"broker {mask_url(urls[at])}: cannot connect: {exc!r}; check the URL and the credentials"
            ) from exc
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPConnectionError) as exc:
            error = exc
    assert error is not None
    raise error


def _closed(channel: AbstractChannel | None) -> bool:
    return channel is None or channel.is_closed


def _deliveries(message: AbstractIncomingMessage) -> int:
    """1 + the quorum queue's ``x-delivery-count`` (absent or 0 on the first delivery)."""
    count = message.headers.get("x-delivery-count")
    if isinstance(count, int):
        return 1 + count
    return 2 if message.redelivered else 1


@contextmanager
def _errors(where: str, what: str) -> Iterator[None]:
    """Map aio-pika errors: transient ones to ``BrokerUnavailable``, the rest to ``BrokerError``."""
    try:
        yield
    except BrokerError:
        raise
    except _TRANSIENT as exc:
        raise BrokerUnavailable(f"{where}: {what}: broker unavailable: {exc!r}; retry later") from exc
    except aio_pika.exceptions.AMQPError as exc:
        raise BrokerError(f"{where}: {what}: {exc!r}") from exc
