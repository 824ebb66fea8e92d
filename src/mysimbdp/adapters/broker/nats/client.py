"""The databroker on NATS JetStream (``nats-py``): the embedded default, or any NATS server.

Per tenant one JetStream stream ``MYSIMBDP_<tenant>`` over the subjects
``mysimbdp.<tenant>.>``, on file storage, with work-queue retention: a message is removed
once acked. Per (tenant stream, group) one durable pull consumer with explicit acks, shared
by every instance of the group; a message not acked within ``ack_wait_s`` is delivered
again. Publishing sends every message at once (``publish_async``) and then awaits all the
PubAcks, with the message id in ``Nats-Msg-Id`` so that JetStream drops a re-publication
inside its duplicate window (2 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from mysimbdp.adapters.broker.base import DEFAULT_ACK_WAIT_S, Message, subject
from mysimbdp.adapters.broker.nats.names import durable_name, stream_name
from mysimbdp.adapters.broker.nats.pull import Puller
from mysimbdp.errors import BrokerError, BrokerUnavailable
from mysimbdp.settings import mask_url

CONNECT_TIMEOUT_S = 2.0
CONNECT_ATTEMPTS = 2
PUBLISH_TIMEOUT_S = 10.0
# Messages a consumer group may hold delivered and not yet acked, across its instances.
# JetStream's default, 1,000, is two pulls of one instance (one in hand, one pulled ahead):
# with it, a second instance's pulls came back empty while the first held its share.
MAX_ACK_PENDING = 20_000
# JetStream drops a message whose id it saw in the last 2 minutes, across the whole (tenant)
# stream: the id is prefixed with the tenant's stream name so that equal ids on two streams differ.
MSG_ID = "Nats-Msg-Id"
_TRANSIENT = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
)


class NatsBroker:
    """``Broker`` on NATS JetStream."""

    def __init__(self, url: str, *, ack_wait_s: float = DEFAULT_ACK_WAIT_S) -> None:
        self.url = url
        # ``?inbox=PREFIX``: the reply subjects this user may receive on (nats.users)
        parts = urlsplit(url)
        self._server = urlunsplit(parts._replace(query=""))
        self._inbox = dict(parse_qsl(parts.query)).get("inbox", "_INBOX")
        self.ack_wait_s = ack_wait_s
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._streams: set[str] = set()
        self._subs: dict[tuple[str, str, str], Puller] = {}

    async def connect(self) -> None:
        try:
            self._nc = await nats.connect(
                self._server,
                inbox_prefix=self._inbox,
                connect_timeout=CONNECT_TIMEOUT_S,
                allow_reconnect=True,
                max_reconnect_attempts=CONNECT_ATTEMPTS,  # a first connection gives up...
                reconnect_time_wait=0.5,
            )
        except _TRANSIENT as exc:
            raise BrokerUnavailable(f"broker {mask_url(self.url)}: cannot connect: {exc!r}; retry later") from exc
        # ...a connection that was up waits out a broker restart, however long
        self._nc.options["max_reconnect_attempts"] = -1
        self._js = self._nc.jetstream()

    async def close(self) -> None:
        pullers = list(self._subs.values())
        self._subs.clear()
        if self._nc is not None and not self._nc.is_closed:
            for puller in pullers:  # messages delivered and not handed out go back at once
                with contextlib.suppress(*_TRANSIENT, nats.errors.Error):
                    for msg in await puller.stop():
                        await msg.nak()
                    await self._nc.flush(timeout=1)
        nc, self._nc, self._js = self._nc, None, None
        self._streams.clear()
        if nc is not None and not nc.is_closed:
            await nc.close()

    def _client(self) -> NatsClient:
        if self._nc is None:
            raise BrokerUnavailable(f"broker {mask_url(self.url)}: not connected")
        return self._nc

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise BrokerUnavailable(f"broker {mask_url(self.url)}: not connected")
        return self._js

    async def declare(self, tenant: str, stream: str) -> None:
        subject(tenant, stream)  # checks both names
        name = stream_name(tenant)
        if name in self._streams:
            return
        js = self._jetstream()
        with _errors(tenant, stream, "declare"):
            try:
                await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                config = StreamConfig(
                    name=name,
                    subjects=[f"mysimbdp.{tenant}.>"],
                    retention=RetentionPolicy.WORK_QUEUE,
                    storage=StorageType.FILE,
                )
                await js.add_stream(config)
        self._streams.add(name)

    async def publish(self, tenant: str, stream: str, bodies: Sequence[bytes], ids: Sequence[str]) -> None:
        if len(bodies) != len(ids):
            raise BrokerError(f"tenant {tenant!r}, stream {stream!r}: {len(bodies)} messages but {len(ids)} ids")
        await self.declare(tenant, stream)
        js, to = self._jetstream(), subject(tenant, stream)
        with _errors(tenant, stream, "publish"):
            acks = [
                await js.publish_async(to, body, stream=stream_name(tenant), headers={MSG_ID: f"{stream}/{msg_id}"})
                for body, msg_id in zip(bodies, ids, strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(*acks), PUBLISH_TIMEOUT_S)

    async def _subscription(self, tenant: str, stream: str, group: str) -> Puller:
        key = (tenant, stream, group)
        if key in self._subs:
            return self._subs[key]
        await self.declare(tenant, stream)
        js, durable = self._jetstream(), durable_name(stream, group)
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=subject(tenant, stream),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_ack_pending=MAX_ACK_PENDING,  # also raised on a consumer made before with less
        )
        with _errors(tenant, stream, "subscribe"):
            await js.add_consumer(stream_name(tenant), config)
            puller = Puller(self._client(), stream_name(tenant), durable)
            await puller.start()
        self._subs[key] = puller
        return puller

    async def pull(self, tenant: str, stream: str, group: str, *, max_messages: int, timeout_s: float) -> list[Message]:
        puller = await self._subscription(tenant, stream, group)
        with _errors(tenant, stream, "pull"):
            msgs = await puller.pull(max_messages, timeout_s)
        prefix = f"{stream}/"
        return [
            Message(
                msg.data,
                msg.metadata.num_delivered or 1,
                (msg.headers or {}).get(MSG_ID, "").removeprefix(prefix) or None,
                msg,
                msg.metadata.timestamp.timestamp() if msg.metadata.timestamp else None,
            )
            for msg in msgs
        ]

    async def ack(self, messages: Sequence[Message]) -> None:
        await self._settle(messages, "ack")

    async def nak(self, messages: Sequence[Message]) -> None:
        await self._settle(messages, "nak")

    async def _settle(self, messages: Sequence[Message], how: str) -> None:
        if not messages or self._nc is None:
            return
        with _errors("-", "-", how):
            for message in messages:
                await getattr(message.handle, how)()
            await self._nc.flush()  # the acks are on their way before we report them done

    async def backlog(self, tenant: str, stream: str, group: str) -> int:
        await self._subscription(tenant, stream, group)
        with _errors(tenant, stream, "backlog"):
            info = await self._jetstream().consumer_info(stream_name(tenant), durable_name(stream, group))
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def delete(self, tenant: str, stream: str) -> None:
        js, name = self._jetstream(), stream_name(tenant)
        for key in [k for k in self._subs if k[:2] == (tenant, stream)]:
            await self._subs.pop(key).stop()
        with _errors(tenant, stream, "delete"):
            try:
                for info in await js.consumers_info(name):
                    if info.config.filter_subject == subject(tenant, stream):
                        await js.delete_consumer(name, info.name)
                await js.purge_stream(name, subject=subject(tenant, stream))
                remaining = await js.stream_info(name)
                if not remaining.state.messages and not remaining.state.consumer_count:
                    await js.delete_stream(name)
                    self._streams.discard(name)
            except nats.js.errors.NotFoundError:
                self._streams.discard(name)


@contextmanager
def _errors(tenant: str, stream: str, what: str) -> Iterator[None]:
    """Map nats-py errors: transient ones to ``BrokerUnavailable``, the rest to ``BrokerError``."""
    where = f"tenant {tenant!r}, stream {stream!r}: {what}"
    try:
        yield
    except (BrokerError, nats.js.errors.NotFoundError):
        raise
    except nats.errors.TimeoutError:
        raise BrokerUnavailable(f"{where}: the broker did not answer in time; retry later") from None
    except _TRANSIENT as exc:
        raise BrokerUnavailable(f"{where}: broker unavailable: {exc!r}; retry later") from exc
    except nats.errors.Error as exc:
        raise BrokerError(f"{where}: {exc!r}") from exc
