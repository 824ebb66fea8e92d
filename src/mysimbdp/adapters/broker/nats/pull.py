"""Pulling from a JetStream durable consumer with few Python steps per message.

nats-py's ``fetch`` waits for every message of a batch with its own timer and task (about
50 µs of CPU per message here, as much as decoding a 100-record message). A :class:`Puller`
sends the same pull requests (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``, the
JetStream API that ``fetch`` uses) and takes the answers through one subscription callback
that only files each message.

A pull for up to ``batch`` messages:

1. asks for what is there now (``no_wait``): the server sends what it has, then, when that
   is less than asked, a ``404 No Messages`` status;
2. if that brought nothing, asks for ONE message, waiting up to the timeout (``expires``);
   the server answers when one arrives, or with ``408 Request Timeout``;
3. if that brought one, asks for the rest of the batch without waiting, as in 1.

So no request is left waiting at the server once a pull returns (a message never waits in
one instance while another is idle), and a lone message is handed over as soon as it
arrives. Each request has its own reply subject, so a late status of an old request is
never taken for the end of the current one; a message that arrives late (its request's
pull had given up) is kept for the next pull, as it is delivered to this consumer already.
"""

from __future__ import annotations

import asyncio

import orjson

from mysimbdp.adapters.broker.nats import natspy  # noqa: F401  # first: nats-py without aiohttp

# isort: split
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from mysimbdp.errors import BrokerUnavailable

STATUS = "Status"  # the header in which nats-py puts a status line's code
DESCRIPTION = "Description"
HEARTBEAT, NO_MESSAGES, REQUEST_TIMEOUT, NO_RESPONDERS = "100", "404", "408", "503"
NOT_YET_RETRY_S = 0.05  # between pulls answered 503 (no responders), within the pull's timeout
ANSWER_GRACE_S = 0.5  # how much longer than a request's expiry its answer is waited for


class Puller:
    """The pull requests of one durable consumer, on one connection."""

    def __init__(self, nc: NatsClient, stream: str, durable: str) -> None:
        self._nc = nc
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()  # under the connection's inbox prefix (nats.users)
        self._sub: Subscription | None = None
        self._received: list[Msg] = []  # delivered to us, not handed out yet
        self._request = 0  # the number of the request in flight
        self._want = 0  # it is answered once this many messages are in hand...
        self._answered: asyncio.Future[str | None] | None = None  # ...or at its status
        self._failure: str | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_message)

    async def stop(self) -> list[Msg]:
        """Stop receiving; returns the messages delivered and not handed out (to give back)."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()
        left, self._received = self._received, []
        return left

    async def pull(self, batch: int, timeout_s: float) -> list[Msg]:
        """Up to ``batch`` messages, waiting up to ``timeout_s`` for the first one. A 503 (no
        responders: the consumer's leader not reachable yet, e.g. just elected) is asked again
        until ``timeout_s`` is over, then raised as ``BrokerUnavailable``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            await self._pull_once(batch, timeout_s)
            if self._failure is None:
                break
            failure, self._failure = self._failure, None
            timeout_s = deadline - loop.time() - NOT_YET_RETRY_S
            if self._received or not failure.startswith(NO_RESPONDERS) or timeout_s <= 0:
                raise BrokerUnavailable(f"pull from {self._api}: the server answered {failure}; retry later")
            await asyncio.sleep(NOT_YET_RETRY_S)
        out, self._received = self._received[:batch], self._received[batch:]
        return out

    async def _pull_once(self, batch: int, timeout_s: float) -> None:
        if len(self._received) < batch:
            await self._ask({"batch": batch - len(self._received), "no_wait": True}, batch, timeout_s)
        if not self._received:
            expires_ns = int(timeout_s * 1e9)
            await self._ask({"batch": 1, "expires": expires_ns}, 1, timeout_s + ANSWER_GRACE_S)
            if self._received and batch > 1:
                await self._ask({"batch": batch - 1, "no_wait": True}, batch, timeout_s)

    async def _ask(self, request: dict[str, object], want: int, wait_s: float) -> None:
        """Send one pull request; return once it is answered (``want`` messages in hand, or
        its closing status) or after ``wait_s``."""
        self._request += 1
        self._want = want
        self._answered = asyncio.get_running_loop().create_future()
        reply = f"{self._inbox}.{self._request}"
        await self._nc.publish(self._api, orjson.dumps(request), reply=reply)
        try:
            await asyncio.wait_for(self._answered, wait_s)
        except TimeoutError:
            pass  # no answer in time (e.g. a reconnect lost the request): what came is kept
        finally:
            self._answered = None

    async def _on_message(self, msg: Msg) -> None:
        headers = msg.headers
        # A JetStream message carries its ack subject as reply; a status line has none.
        status = headers.get(STATUS) if headers and not msg.reply else None
        if status is None:
            self._received.append(msg)
            if len(self._received) >= self._want:
                self._answer()
            return
        if status == HEARTBEAT or msg.subject != f"{self._inbox}.{self._request}":
            return  # a heartbeat, or the late end of a request given up
        if status not in (NO_MESSAGES, REQUEST_TIMEOUT):
            self._failure = f"{status} {headers.get(DESCRIPTION, '') if headers else ''}".strip()
        self._answer()

    def _answer(self) -> None:
        if self._answered is not None and not self._answered.done():
            self._answered.set_result(None)
