"""The databroker on NATS JetStream (``nats-py``): the embedded default, or any NATS server.

Per tenant one JetStream stream ``MYSIMBDP_<tenant>`` over the subjects
``mysimbdp.<tenant>.>``, on file storage, with work-queue retention: a message is removed
once acked. Per (tenant stream, group) one durable pull consumer with explicit acks, shared
by every instance of the group; a message not acked within ``ack_wait_s`` is delivered
again. Publishing sends every message at once (``publish_async``) and then awaits all the
PubAcks, with the message id in ``Nats-Msg-Id`` so that JetStream drops a re-publication
inside its duplicate window (2 minutes).

On a cluster (the URL lists its nodes with commas, :func:`~mysimbdp.adapters.broker.base.split_urls`)
each stream is created with ``num_replicas = replicas`` (``Settings.broker_replicas``); its durable
consumers inherit the stream's count. A stream found with fewer replicas is scaled up (a warning
names it when the cluster refuses). A connection that was up reconnects to any node, without
end; a publish retries the messages whose PubAck did not come (the node died, the stream had no
leader for a moment) with the same ids until :data:`CLUSTER_PUBLISH_DEADLINE_S`, so a message stored
before its ack was lost is not stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from mysimbdp.adapters.broker.nats import natspy  # noqa: F401  # first: nats-py without aiohttp

# isort: split
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, PubAck, RetentionPolicy, StorageType, StreamConfig

from mysimbdp.adapters.broker.base import DEFAULT_ACK_WAIT_S, Message, split_urls, subject
from mysimbdp.adapters.broker.nats.names import durable_name, stream_name
from mysimbdp.adapters.broker.nats.pull import Puller
from mysimbdp.errors import BrokerError, BrokerUnavailable
from mysimbdp.logs import get_logger
from mysimbdp.settings import mask_url

log = get_logger("broker")

CONNECT_TIMEOUT_S = 2.0
CONNECT_ATTEMPTS = 2
RECONNECT_WAIT_S = 0.5
# A node cut off the network answers nothing: after PINGS_OUTSTANDING pings unanswered, every
# PING_INTERVAL_S, the connection is given up for another node (nats-py's default: 2 x 2 min).
PING_INTERVAL_S, PINGS_OUTSTANDING = 2.0, 3
PUBLISH_TIMEOUT_S = 5.0  # one attempt's wait for its PubAcks...
# ...and the attempts' (with the stream's declaration) on one node, and on a cluster, where the
# nodes elect a new leader for a stream whose leader died (~5 s here, more under load)
PUBLISH_DEADLINE_S, CLUSTER_PUBLISH_DEADLINE_S = 10.0, 20.0
PUBLISH_RETRY_S = 0.25
CONSUMER_LEADER_WAIT_S = 5.0  # a new consumer's leader election on a cluster (~0.1 s here)
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
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)


class NatsBroker:
    """``Broker`` on NATS JetStream."""

    def __init__(self, url: str, *, ack_wait_s: float = DEFAULT_ACK_WAIT_S, replicas: int = 1) -> None:
        self.url = url
        self._servers: list[str] = []
        options: dict[str, str] = {}
        self._user: str | None = None
        self._password: str | None = None
        for node in split_urls(url):
            parts = urlsplit(node)
            options.update(parse_qsl(parts.query))
            self._servers.append(urlunsplit(parts._replace(query="")))
            if self._user is None and parts.username is not None and parts.password is not None:
                # also for the nodes the cluster announces (their URLs carry no user)
                self._user, self._password = unquote(parts.username), unquote(parts.password)
        # ``?inbox=PREFIX``: the reply subjects this user may receive on (nats.users)
        self._inbox = options.get("inbox", "_INBOX")
        self.ack_wait_s = ack_wait_s
        self.replicas = replicas
        self.deadline_s = PUBLISH_DEADLINE_S if len(self._servers) == 1 else CLUSTER_PUBLISH_DEADLINE_S
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._streams: set[str] = set()
        self._subs: dict[tuple[str, str, str], Puller] = {}

    async def connect(self) -> None:
        try:
            self._nc = await nats.connect(
                self._servers,
                user=self._user,
                password=self._password,
                inbox_prefix=self._inbox,
                connect_timeout=CONNECT_TIMEOUT_S,
                allow_reconnect=True,
                max_reconnect_attempts=CONNECT_ATTEMPTS,  # a first connection gives up...
                reconnect_time_wait=RECONNECT_WAIT_S,
                ping_interval=PING_INTERVAL_S,
                max_outstanding_pings=PINGS_OUTSTANDING,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except _TRANSIENT as exc:
            raise BrokerUnavailable(f"broker {mask_url(self.url)}: cannot connect: {exc!r}; retry later") from exc
        # ...a connection that was up waits out a broker restart, however long
        self._nc.options["max_reconnect_attempts"] = -1
        self._js = self._nc.jetstream()

    async def _on_error(self, exc: Exception) -> None:
        log.debug("broker_error", url=mask_url(self.url), error=repr(exc))

    async def _on_disconnected(self) -> None:
        if self._nc is not None and not self._nc.is_closed:  # not our own close()
            log.warning("broker_disconnected", url=mask_url(self.url))

    async def _on_reconnected(self) -> None:
        server = self._nc.connected_url if self._nc is not None else None
        log.info("broker_reconnected", node=mask_url(server.geturl()) if server else "?")

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
            with contextlib.suppress(*_TRANSIENT):  # its node is gone: nothing left to flush to
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
        await self._declare(tenant, stream, asyncio.get_running_loop().time() + self.deadline_s)

    async def _declare(self, tenant: str, stream: str, deadline: float) -> None:
        """:meth:`declare`, retrying a transient failure (no stream leader yet) until ``deadline``."""
        subject(tenant, stream)  # checks both names
        name = stream_name(tenant)
        if name in self._streams:
            return
        self._jetstream()  # connected, or BrokerUnavailable at once
        while True:
            try:
                with _errors(tenant, stream, "declare"):
                    await self._declare_once(tenant, name)
                break
            except BrokerUnavailable:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                await asyncio.sleep(PUBLISH_RETRY_S)
        self._streams.add(name)

    async def _declare_once(self, tenant: str, name: str) -> None:
        js = self._jetstream()
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            config = StreamConfig(
                name=name,
                subjects=[f"mysimbdp.{tenant}.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=self.replicas,
            )
            try:
                await js.add_stream(config)
            except nats.js.errors.APIError as exc:  # e.g. more replicas than nodes
                if not_now(exc):  # retried by _declare until its deadline
                    raise BrokerUnavailable(
                        f"tenant {tenant!r}: cannot create JetStream stream {name} with num_replicas "
                        f"{self.replicas} for now: {exc.description} (code {exc.err_code}); retry later"
                    ) from exc
                raise BrokerError(
                    f"tenant {tenant!r}: cannot create JetStream stream {name} with num_replicas "
                    f"{self.replicas} (MYSIMBDP_BROKER_REPLICAS): {exc.description} (code {exc.err_code})"
                ) from exc
        else:
            await self._scale(info.config, tenant)

    async def _scale(self, config: StreamConfig, tenant: str) -> None:
        """Raise an existing stream's replicas to ``self.replicas``; a warning if refused."""
        current = config.num_replicas or 1
        if current >= self.replicas:
            return
        try:
            await self._jetstream().update_stream(replace(config, num_replicas=self.replicas))
        except nats.js.errors.APIError as exc:
            log.warning(
                "stream_replicas_below_setting",
                tenant=tenant,
                stream=config.name,
                replicas=current,
                wanted=self.replicas,
                error=exc.description,
            )
            return
        log.info("stream_replicas_raised", tenant=tenant, stream=config.name, replicas=current, wanted=self.replicas)

    async def publish(self, tenant: str, stream: str, bodies: Sequence[bytes], ids: Sequence[str]) -> None:
        if len(bodies) != len(ids):
            raise BrokerError(f"tenant {tenant!r}, stream {stream!r}: {len(bodies)} messages but {len(ids)} ids")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        await self._declare(tenant, stream, deadline)
        to, name = subject(tenant, stream), stream_name(tenant)
        todo = list(range(len(bodies)))
        while True:
            with _errors(tenant, stream, "publish"):
                try:
                    todo = await self._publish_once(to, name, stream, bodies, ids, todo)
                except _TRANSIENT:
                    if loop.time() >= deadline:
                        raise
                if not todo:
                    return
                if loop.time() >= deadline:
                    raise nats.errors.TimeoutError
            log.info("publish_retried", tenant=tenant, stream=stream, unacked=len(todo))
            await asyncio.sleep(PUBLISH_RETRY_S)

    async def _publish_once(
        self, to: str, name: str, stream: str, bodies: Sequence[bytes], ids: Sequence[str], todo: list[int]
    ) -> list[int]:
        """Publish messages ``todo`` at once; those of them whose PubAck did not come in
        :data:`PUBLISH_TIMEOUT_S` or came as a transient failure (raises any other failure)."""
        js = self._jetstream()
        acks: dict[int, asyncio.Future[PubAck]] = {}
        try:
            for i in todo:
                acks[i] = await js.publish_async(to, bodies[i], stream=name, headers={MSG_ID: f"{stream}/{ids[i]}"})
            if acks:
                await asyncio.wait(acks.values(), timeout=PUBLISH_TIMEOUT_S)
        finally:
            for ack in acks.values():
                ack.cancel()  # no-op on those answered; frees the others' slots in nats-py
        again = []
        for i, ack in acks.items():
            if ack.cancelled():
                again.append(i)
            elif (exc := ack.exception()) is not None:
                if not isinstance(exc, _TRANSIENT) and not not_now(exc):
                    raise exc
                again.append(i)
        return again

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
            info = await js.add_consumer(stream_name(tenant), config)
            await _until_led(js, info)
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


async def _until_led(js: JetStreamContext, info: ConsumerInfo) -> None:
    """On a cluster, wait (at most :data:`CONSUMER_LEADER_WAIT_S`) until a consumer just made
    has a leader: before, its pull requests are answered 503 (no responders)."""
    deadline = asyncio.get_running_loop().time() + CONSUMER_LEADER_WAIT_S
    while info.cluster is not None and not info.cluster.leader and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(PUBLISH_RETRY_S / 5)
        info = await js.consumer_info(info.stream_name, info.name)


PEER_OFFLINE = 10005  # JetStream's "no suitable peers for placement"; with "peer offline": for now


def not_now(exc: BaseException) -> bool:
    """A JetStream API answer meaning "not now", retried until the deadline: 503 (no leader
    yet), or a placement refused because a peer is offline (a node restarting, or one whose
    link just came back and whose stats the meta leader has not had yet: seen for ~1.3 s
    after a link flap). A placement refused for good (more replicas than nodes) is not."""
    if not isinstance(exc, nats.js.errors.APIError):
        return False
    return exc.code == 503 or (exc.err_code == PEER_OFFLINE and "offline" in (exc.description or ""))


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
