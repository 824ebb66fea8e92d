"""mysimbdp-notifier: delivers the notification outbox to the tenants' webhooks.

A loop with ``run(stop)``: every tick it takes the due deliveries (fairly: a few per
receiver), claims each for one attempt and POSTs it, signed (``services/notify.py``), as
its own task, so a slow or dead receiver holds at most ``PER_RECEIVER`` of the
``MAX_IN_FLIGHT`` slots and never the loop, another receiver or ingestion. A 2xx answer
delivers; anything else (an HTTP error status, a refused connection, a timeout) is
recorded and retried after ``notify_retry_base_s`` doubling up to ``MAX_BACKOFF_S``,
until ``notify_max_attempts`` attempts make the delivery ``dead``. Delivery is at least
once: a notifier stopped mid-send leaves the row to be sent again after its lease. A URL
resolving to an address the platform must not post to (``domain/egress.py``) is never
connected to: the delivery is ``refused`` with the reason, not retried.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mysimbdp.adapters.metastore.notifications import Delivery
from mysimbdp.domain.backoff import backoff_s
from mysimbdp.domain.components import NOTIFIER
from mysimbdp.domain.egress import parse_allow_list, refusal
from mysimbdp.domain.profile import Profile
from mysimbdp.errors import MysimbdpError
from mysimbdp.logs import get_logger
from mysimbdp.optional import without
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.notify import signed_headers
from mysimbdp.settings import mask_url

with without("rich"):  # httpx would load rich and pygments for its own command line
    import httpx

log = get_logger("notifier")

COMPONENT = NOTIFIER  # its heartbeat's name (domain/components.py)
MAX_IN_FLIGHT = 16
PER_RECEIVER = 2  # attempts at once to one (tenant, url)
MAX_BACKOFF_S = 300.0
CONNECT_TIMEOUT_S = 3.0


def retry_delay_s(attempt: int, base_s: float) -> float:
    """The wait after failed attempt ``attempt`` (1, 2 …): base, 2·base, 4·base … at most
    ``MAX_BACKOFF_S``, ±10 % so many deliveries to one receiver do not retry in step."""
    return backoff_s(attempt, base_s, cap_s=MAX_BACKOFF_S, jitter=0.1)


class Notifier:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.owner = str(os.getpid())
        self._tasks: dict[asyncio.Task[None], Delivery] = {}
        self._wake = asyncio.Event()
        self._capped = False
        self._allow = parse_allow_list(platform.settings.webhook_allow)

    def wake(self) -> None:
        """Look at the outbox now."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.platform.settings
        timeout = httpx.Timeout(settings.notify_timeout_s, connect=min(CONNECT_TIMEOUT_S, settings.notify_timeout_s))
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
        # trust_env=False: no proxy or certificate settings picked up from the environment.
        async with httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False, trust_env=False) as client:
            log.info("notifier_started", max_in_flight=MAX_IN_FLIGHT, max_attempts=settings.notify_max_attempts)
            while not stop.is_set():
                next_due: float | None = None
                try:
                    self.platform.meta.beat(COMPONENT, self.owner)
                    self.start_due(client, time.time())
                    next_due = self.platform.meta.notifications.next_due_at()
                except MysimbdpError as exc:  # a store hiccup: try again next tick
                    log.warning("notifier_tick_failed", error=str(exc))
                await self._sleep(stop, next_due)
            await self._drain(settings.notify_timeout_s)
        self.platform.meta.clear_beat(COMPONENT, self.owner)
        log.info("notifier_stopped")

    def start_due(self, client: httpx.AsyncClient, now: float) -> int:
        """Claim due deliveries within the limits and send each as a task; returns how many."""
        outbox = self.platform.meta.notifications
        busy: dict[tuple[str, str], int] = {}
        for delivery in self._tasks.values():
            key = (delivery.tenant, delivery.url)
            busy[key] = busy.get(key, 0) + 1
        profiles: dict[str, Profile | None] = {}
        started = 0
        self._capped = False
        for delivery in outbox.due(now, per_receiver=PER_RECEIVER, limit=MAX_IN_FLIGHT * 4):
            key = (delivery.tenant, delivery.url)
            if len(self._tasks) >= MAX_IN_FLIGHT or busy.get(key, 0) >= PER_RECEIVER:
                self._capped = True
                continue
            secret = self._secret(delivery, profiles)
            if secret is None:
                outbox.failed(delivery.id, None, "the webhook is no longer in the tenant's profile", None)
                log.warning(
                    "notification_dropped", tenant=delivery.tenant, delivery=delivery.id, url=mask_url(delivery.url)
                )
                continue
            if delivery.attempts >= self.platform.settings.notify_max_attempts:  # its last attempt was cut short
                outbox.failed(delivery.id, delivery.last_status_code, delivery.last_error or "interrupted", None)
                continue
            if not outbox.claim(delivery, now, lease_s=self.platform.settings.notify_timeout_s + 30.0):
                continue  # another notifier took it
            task = asyncio.create_task(self._send(client, delivery, secret))
            self._tasks[task] = delivery
            busy[key] = busy.get(key, 0) + 1
            started += 1
        return started

    def _secret(self, delivery: Delivery, profiles: dict[str, Profile | None]) -> str | None:
        """The current secret of the webhook at ``delivery.url`` (None: no longer configured)."""
        if delivery.tenant not in profiles:
            try:
                profiles[delivery.tenant] = self.platform.tenant(delivery.tenant)[1]
            except MysimbdpError:
                profiles[delivery.tenant] = None
        profile = profiles[delivery.tenant]
        hooks = profile.notifications.webhooks if profile is not None else []
        return next((hook.secret for hook in hooks if hook.url == delivery.url), None)

    async def _send(self, client: httpx.AsyncClient, delivery: Delivery, secret: str) -> None:
        settings = self.platform.settings
        attempt = delivery.attempts + 1
        headers = signed_headers(delivery, secret, time.time())
        code: int | None = None
        try:
            async with asyncio.timeout(settings.notify_timeout_s):
                target = await self._checked_target(delivery)
                if target is None:
                    return
                url, extensions = target
                headers["Host"] = urlsplit(delivery.url).netloc.rpartition("@")[2]
                # Streamed and never read: a receiver's answer body is not our business.
                request = client.build_request(
                    "POST", url, content=delivery.payload.encode(), headers=headers, extensions=extensions
                )
                r = await client.send(request, stream=True)
                try:
                    code = r.status_code
                    error = "" if 200 <= code < 300 else f"HTTP {code} {r.reason_phrase}".strip()
                finally:
                    await r.aclose()
        except TimeoutError:
            error = f"no answer within {settings.notify_timeout_s} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        outbox = self.platform.meta.notifications
        fields: dict[str, Any] = {
            "tenant": delivery.tenant,
            "delivery": delivery.id,
            "notify_event": delivery.event,
            "attempt": attempt,
            "status_code": code,
        }
        if not error and code is not None:
            outbox.delivered(delivery.id, code)
            log.info("notification_delivered", **fields)
            return
        if attempt >= settings.notify_max_attempts:
            outbox.failed(delivery.id, code, error, None)
            log.error("notification_dead", error=error, **fields)
            return
        delay = retry_delay_s(attempt, settings.notify_retry_base_s)
        outbox.failed(delivery.id, code, error, time.time() + delay)
        log.warning("notification_failed", error=error, retry_in_s=round(delay, 3), **fields)

    async def _checked_target(self, delivery: Delivery) -> tuple[str, dict[str, Any]] | None:
        """The URL to post to, with the host replaced by the address that was checked (no
        second lookup a rebinding DNS could answer differently; TLS still verifies the name
        through SNI), or None when the address is refused, the refusal recorded."""
        parts = urlsplit(delivery.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        addresses = [str(info[4][0]) for info in infos]
        reason = refusal(addresses, self._allow)
        if reason is not None:
            error = f"refused: tenant {delivery.tenant!r}: webhook {mask_url(delivery.url)}: {reason}"
            self.platform.meta.notifications.refused(delivery.id, error)
            log.warning("notification_refused", tenant=delivery.tenant, delivery=delivery.id, error=error)
            return None
        address = addresses[0]
        shown = f"[{address}]" if ":" in address else address
        userinfo, at, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}{at}{shown}" + (f":{parts.port}" if parts.port else "")
        extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
        return urlunsplit(parts._replace(netloc=netloc)), extensions

    async def _sleep(self, stop: asyncio.Event, next_due: float | None) -> None:
        timeout = self.platform.settings.poll_interval_s
        if next_due is not None and not self._capped:  # when capped, a finishing send wakes the loop
            timeout = max(0.005, min(timeout, next_due - time.time()))
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
        ]
        waiters.extend(self._tasks)
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters[:2]:
            waiter.cancel()
        self._wake.clear()
        self._reap()

    def _reap(self) -> None:
        for task in [t for t in self._tasks if t.done()]:
            delivery = self._tasks.pop(task)
            if not task.cancelled() and (exc := task.exception()) is not None:
                # The attempt's outcome could not be recorded: the row is sent again after its lease.
                log.error("notification_send_crashed", tenant=delivery.tenant, delivery=delivery.id, exc_info=exc)

    async def _drain(self, timeout_s: float) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(list(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._reap()
