"""Webhook notifications against a real HTTP receiver on loopback, over both meta stores:
the outbox, signed delivery, retries with backoff to a down receiver, dead deliveries,
and the events emitted by fetchdata, the batch run, the stream manager and the monitor."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import itertools
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from click.testing import CliRunner

from mysimbdp.adapters.broker.nats import free_port
from mysimbdp.adapters.metastore.notifications import Delivery, DeliveryStatus
from mysimbdp.adapters.process import runner
from mysimbdp.cli.notify import notifications
from mysimbdp.domain.notifications import NotifyEvent
from mysimbdp.domain.records import StreamInstance, StreamTarget
from mysimbdp.domain.scaling import Report
from mysimbdp.domain.states import FileStatus
from mysimbdp.managers.fetchdata import FetchData
from mysimbdp.managers.notifier import Notifier
from mysimbdp.managers.streamingest import CRASH_LOOP_RESTARTS, StreamIngestManager, _Running
from mysimbdp.managers.streammonitor import StreamMonitor
from mysimbdp.runtime.platform import Platform
from mysimbdp.services import tenants as tenant_service
from mysimbdp.services.ingest import ingest_one
from mysimbdp.services.notify import notify
from mysimbdp.settings import Settings
from tests.helpers import until_async

SECRET = "receiver-shared-secret-1"
OTHER_SECRET = "other-tenant-secret-22"


# -- a real webhook receiver -------------------------------------------------------------------
@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when it arrived
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class Receiver:
    """An ``http.server`` on 127.0.0.1 in a thread, answering every POST with ``status``."""

    def __init__(self, port: int = 0, status: int = 204) -> None:
        self.status = status
        self.requests: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append(Received(time.monotonic(), self.path, headers, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def verify(secret: str, received: Received, max_age_s: float = 300.0) -> bool:
    """What a receiver does (docs/notifications.md): HMAC-SHA256 over '<timestamp>.<raw body>'
    compared in constant time, and a timestamp no older than ``max_age_s``."""
    timestamp = received.headers["x-mysimbdp-timestamp"]
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + received.body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= max_age_s
    return fresh and hmac.compare_digest(f"sha256={mac}", received.headers["x-mysimbdp-signature"])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


# -- a platform with tenants whose profiles have webhooks ---------------------------------------
@pytest.fixture
def platform(home: Path, meta_url: str, tmp_path: Path) -> Iterator[Platform]:
    settings = Settings(
        home=home,
        meta_url=meta_url,
        coredms_url=f"sqlite:///{tmp_path / 'coredms'}",
        poll_interval_s=0.02,
        settle_s=0.0,
        notify_retry_base_s=0.1,
        notify_max_attempts=6,
        notify_timeout_s=2.0,
        webhook_allow="127.0.0.1/32",  # the receivers run on loopback, which is refused by default
    )
    with Platform(settings, os.environ) as started:
        yield started


PROFILE = """
formats: [csv]
required_columns: [sku, qty]
quality:
  max_bad_row_ratio: 0.5
  rules:
    - {{field: qty, type: int, required: true}}
batch_apps:
  - name: failing
    command: ["{{python}}", "-c", "import sys; print('cannot go on', file=sys.stderr); sys.exit(3)"]
    file_pattern: "fail_*.csv"
  - name: generic
notifications:
  webhooks:
    - url: "{url}"
      secret: "{secret}"
      quarantine_ratio_high: 0.1
"""


@pytest.fixture
def add_tenant(platform: Platform, tmp_path: Path) -> Callable[[str, str, str], None]:
    def add(tenant: str, url: str, secret: str = SECRET) -> None:
        bundle = tmp_path / "bundles" / tenant
        bundle.mkdir(parents=True)
        (bundle / "profile.yaml").write_text(PROFILE.format(url=url, secret=secret))
        tenant_service.add_tenant(platform, tenant, bundle / "profile.yaml")

    return add


@pytest.fixture
async def notifier(platform: Platform) -> AsyncIterator[Notifier]:
    """The notifier loop, running in the background for the test."""
    running = Notifier(platform)
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    yield running
    stop.set()
    await asyncio.wait_for(task, 10)


def _final(platform: Platform, tenant: str) -> list[Delivery]:
    rows = platform.meta.notifications.recent(tenant)
    return rows if rows and all(d.status is not DeliveryStatus.PENDING for d in rows) else []


# -- the outbox ---------------------------------------------------------------------------------
def test_outbox_claims_each_attempt_once_and_keeps_the_outcome(
    platform: Platform, add_tenant: Callable[..., None]
) -> None:
    """An enqueued delivery is due, can be claimed by one notifier only, is not due while
    claimed, comes back after a failure's backoff and ends delivered; removing the tenant
    removes its deliveries."""
    add_tenant("acme", "http://127.0.0.1:9/h")
    outbox = platform.meta.notifications
    now = time.time()
    outbox.enqueue([Delivery("n1", "acme", "run_failed", "http://127.0.0.1:9/h", "{}", created_at=now)])
    (due,) = outbox.due(now, per_receiver=2, limit=10)
    assert outbox.claim(due, now, lease_s=30)
    assert not outbox.claim(due, now, lease_s=30), "a second notifier cannot take the same attempt"
    assert outbox.due(now, per_receiver=2, limit=10) == []
    outbox.failed("n1", 503, "HTTP 503 Service Unavailable", now + 5)
    (again,) = outbox.due(now + 6, per_receiver=2, limit=10)
    assert (again.attempts, again.last_status_code, again.status) == (1, 503, DeliveryStatus.PENDING)
    assert outbox.claim(again, now + 6, lease_s=30)
    outbox.delivered("n1", 200)
    done = outbox.get("n1")
    assert done is not None and done.status is DeliveryStatus.DELIVERED and done.attempts == 2
    assert done.delivered_at is not None and done.last_error == ""
    tenant_service.remove_tenant(platform, "acme")
    assert outbox.get("n1") is None


def test_due_deliveries_are_shared_fairly_between_receivers(
    platform: Platform, add_tenant: Callable[..., None]
) -> None:
    """A receiver with a long queue gets only its share of a tick; another tenant's one delivery is in it."""
    add_tenant("big", "http://127.0.0.1:9/big")
    add_tenant("small", "http://127.0.0.1:9/small")
    now = time.time()
    url = "http://127.0.0.1:9/big"
    many = [Delivery(f"n{i:03d}", "big", "run_failed", url, "{}", created_at=now) for i in range(20)]
    platform.meta.notifications.enqueue(
        [*many, Delivery("s1", "small", "run_failed", "http://127.0.0.1:9/small", "{}", created_at=now + 1)]
    )
    due = platform.meta.notifications.due(now + 2, per_receiver=2, limit=10)
    assert sum(d.tenant == "big" for d in due) == 2
    assert [d.id for d in due if d.tenant == "small"] == ["s1"]


def test_notify_never_raises_into_its_caller(platform: Platform) -> None:
    """An unknown tenant (or any failure to enqueue) is logged and notify returns 0."""
    assert notify(platform, "nobody", NotifyEvent.RUN_FAILED, file="x.csv") == 0


# -- delivery -----------------------------------------------------------------------------------
async def test_delivery_is_signed_and_recorded(
    platform: Platform, add_tenant: Callable[..., None], receiver: Receiver, notifier: Notifier
) -> None:
    """The receiver gets the JSON payload with the event, delivery and timestamp headers,
    its own HMAC code verifies the signature, and the delivery is recorded delivered."""
    add_tenant("acme", receiver.url("/hooks/acme"))
    assert notify(platform, "acme", NotifyEvent.RUN_FAILED, file="a.csv", app="generic", attempts=4) == 1
    (delivery,) = await until_async(lambda: _final(platform, "acme"))
    (got,) = receiver.requests
    assert got.path == "/hooks/acme"
    assert verify(SECRET, got)
    assert not verify("a-wrong-secret-value", got)
    assert got.headers["x-mysimbdp-event"] == "run_failed"
    assert got.headers["x-mysimbdp-delivery"] == delivery.id == got.json["id"]
    assert got.headers["content-type"] == "application/json"
    assert {k: got.json[k] for k in ("event", "tenant", "file", "app", "attempts")} == {
        "event": "run_failed",
        "tenant": "acme",
        "file": "a.csv",
        "app": "generic",
        "attempts": 4,
    }
    assert got.json["at"].endswith("Z")
    assert delivery.status is DeliveryStatus.DELIVERED
    assert (delivery.attempts, delivery.last_status_code) == (1, 204)


async def test_a_down_receiver_gets_retries_with_growing_delays_then_the_delivery_is_dead(
    platform: Platform, add_tenant: Callable[..., None], notifier: Notifier
) -> None:
    """Refused connections, then a receiver answering 500: each attempt is recorded, the
    gaps between attempts grow, and after notify_max_attempts (6) the delivery is dead."""
    port = free_port()
    add_tenant("acme", f"http://127.0.0.1:{port}/h")
    notify(platform, "acme", NotifyEvent.RUN_FAILED, file="a.csv")

    def attempted(n: int) -> Delivery | None:
        """The delivery once ``n`` attempts have ended (a claimed one is leased for 30 s and more)."""
        (row,) = platform.meta.notifications.recent("acme")
        return row if row.attempts >= n and row.next_attempt_at < time.time() + 10 else None

    refused = await until_async(lambda: attempted(2))
    assert refused.attempts == 2 and refused.status is DeliveryStatus.PENDING and refused.last_status_code is None
    assert "ConnectError" in refused.last_error
    server = Receiver(port=port, status=500)
    try:
        (dead,) = await until_async(lambda: _final(platform, "acme"))
    finally:
        server.close()
    assert dead.status is DeliveryStatus.DEAD
    assert (dead.attempts, dead.last_status_code) == (6, 500)
    assert "HTTP 500" in dead.last_error
    arrivals = [r.at for r in server.requests]
    assert len(arrivals) == 4  # the attempts after the port opened
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # attempts 3 to 6 arrived: after attempt n the wait is at least 0.1 s · 2^(n-1) less its 10 % jitter
    # (a lower bound, whatever the machine's load: the schedule doubles, so the gaps cannot stay flat)
    floors = [0.9 * 0.1 * 2 ** (n - 1) for n in (3, 4, 5)]
    assert all(gap >= floor for gap, floor in zip(gaps, floors, strict=True)), (gaps, floors)
    assert all(verify(SECRET, r) for r in server.requests), "every attempt is signed afresh"
    assert len({r.headers["x-mysimbdp-delivery"] for r in server.requests}) == 1


async def test_a_dead_webhook_does_not_stop_ingestion(
    platform: Platform, add_tenant: Callable[..., None], notifier: Notifier, tmp_path: Path
) -> None:
    """With the webhook's port closed, a file with a bad row still ingests its good rows; the
    quarantine-ratio notification waits in the outbox with its connection error, then dies."""
    add_tenant("acme", f"http://127.0.0.1:{free_port()}/h")
    data = tmp_path / "orders.csv"
    data.write_text("sku,qty\na1,1\na2,x\na3,3\na4,4\n")
    record = await ingest_one(platform, "acme", data, wait=True)
    assert record is not None and record.status is FileStatus.INGESTED
    assert (record.rows_written, record.rows_rejected) == (3, 1)
    (delivery,) = await until_async(lambda: _final(platform, "acme"))
    assert delivery.status is DeliveryStatus.DEAD and delivery.attempts == 6
    payload = orjson.loads(delivery.payload)
    assert payload["event"] == "quarantine_ratio_exceeded" and payload["scope"] == "file"
    assert (payload["rows_quarantined"], payload["rows_total"], payload["ratio"], payload["threshold"]) == (
        1,
        4,
        0.25,
        0.1,
    )


async def test_a_failed_run_is_notified_once_after_its_last_attempt(
    platform: Platform, add_tenant: Callable[..., None], receiver: Receiver, notifier: Notifier, tmp_path: Path
) -> None:
    """An app exiting 3 fails the file for good: one run_failed with the app, the exit and the stderr tail."""
    add_tenant("acme", receiver.url("/h"))
    data = tmp_path / "fail_orders.csv"
    data.write_text("sku,qty\na1,1\n")
    record = await ingest_one(platform, "acme", data, wait=True)
    assert record is not None and record.status is FileStatus.FAILED
    await until_async(lambda: _final(platform, "acme"))
    (got,) = receiver.requests
    assert verify(SECRET, got)
    body = got.json
    assert (body["event"], body["file"], body["file_id"], body["app"], body["attempts"]) == (
        "run_failed",
        "fail_orders.csv",
        record.id,
        "failing",
        1,
    )
    assert body["exit_detail"] == "exit 3" and "cannot go on" in body["stderr_tail"]


async def test_a_rejected_file_gives_exactly_one_file_rejected_to_its_own_tenant(
    platform: Platform, add_tenant: Callable[..., None], receiver: Receiver, notifier: Notifier
) -> None:
    """fetchdata rejects a file missing a required column: the tenant's webhook gets one
    file_rejected naming the file and the reasons; the other tenant's webhook gets nothing."""
    add_tenant("acme", receiver.url("/acme"))
    add_tenant("other", receiver.url("/other"), OTHER_SECRET)
    inbox = platform.home.area("inbox", "acme")
    (inbox / "orders.csv").write_text("sku,price\na1,3\n")
    decisions = await FetchData(platform).scan_once()
    assert [d.status for d in decisions] == [FileStatus.REJECTED]
    await until_async(lambda: _final(platform, "acme"))
    await asyncio.sleep(0.2)  # nothing else arrives
    (got,) = receiver.requests
    assert got.path == "/acme" and verify(SECRET, got)
    body = got.json
    assert (body["event"], body["tenant"], body["file"], body["file_id"], body["status"]) == (
        "file_rejected",
        "acme",
        "orders.csv",
        decisions[0].file_id,
        "rejected",
    )
    assert body["reasons"] == list(decisions[0].reasons)
    assert any("required_columns" in reason and "qty" in reason for reason in body["reasons"])
    assert platform.meta.notifications.recent("other") == []


# -- stream events ------------------------------------------------------------------------------
def _exited(code: int, stderr: str) -> asyncio.Future[runner.Outcome]:
    future: asyncio.Future[runner.Outcome] = asyncio.get_running_loop().create_future()
    future.set_result(runner.Outcome(code, None, False, 0.1, 0, "", stderr, 0, len(stderr)))
    return future


async def test_a_crash_loop_is_notified_once_not_at_every_restart(
    platform: Platform, add_tenant: Callable[..., None]
) -> None:
    """An instance exiting over and over produces one app_crash_loop, when it enters the
    crash loop, with the instance, stream, exit and stderr excerpt."""
    add_tenant("acme", "http://127.0.0.1:9/h")
    manager = StreamIngestManager(platform, broker=None, tenant_broker_url=str)  # type: ignore[arg-type]
    now = time.time()
    slot = _Running(StreamInstance("i1", "acme", "sensors", "generic", "running", 42, now, now, 0))
    for _ in range(CRASH_LOOP_RESTARTS + 3):
        slot.task = _exited(1, "Traceback …\nKeyError: 'device'\n")  # type: ignore[assignment]
        manager._collect_exits([slot])
    assert slot.record.state == "crash_loop"
    (delivery,) = platform.meta.notifications.recent("acme")
    body = orjson.loads(delivery.payload)
    assert (body["event"], body["instance"], body["stream"], body["app"], body["restarts"]) == (
        "app_crash_loop",
        "i1",
        "sensors",
        "generic",
        CRASH_LOOP_RESTARTS,
    )
    assert body["exit_detail"] == "exit 1" and "KeyError: 'device'" in body["stderr_tail"]


def _report(at: float, backlog: int, *, stream: str = "sensors", records: int = 100, errors: int = 0) -> Report:
    return Report(at, "acme", stream, "generic", "i1", 1.0, 10, records, 1000, errors, 5.0, 9.0, backlog)


def _events(platform: Platform, event: str) -> list[dict[str, Any]]:
    return [orjson.loads(d.payload) for d in platform.meta.notifications.recent("acme", event=event)]


def test_scaling_at_max_is_notified_once_per_episode(platform: Platform, add_tenant: Callable[..., None]) -> None:
    """At max_instances with a growing backlog the monitor notifies once, not at every tick;
    after the overload has passed, a new overload notifies again."""
    add_tenant("acme", "http://127.0.0.1:9/h")
    monitor = StreamMonitor(platform, broker=None)  # type: ignore[arg-type]
    target = StreamTarget("acme", "sensors", "generic", 4)  # the default app's max_instances
    t0 = time.time()
    monitor._decide(target, t0)
    window = monitor._windows[("acme", "sensors", "generic")]

    def tick(at: float, backlog: int) -> None:
        window.reports.append(_report(at, backlog))
        monitor._decide(target, at)

    for i in range(10):  # overloaded, backlog growing
        tick(t0 + i, 2000 + 500 * i)
    (first,) = _events(platform, "scaling_at_max")
    assert (first["stream"], first["app"], first["instances"], first["max_instances"]) == ("sensors", "generic", 4, 4)
    assert (first["backlog_first"], first["backlog_last"]) == (2000, 2500)
    for i in range(40):  # drained: the episode ends
        tick(t0 + 10 + i, 0)
    for i in range(30):  # overloaded again
        tick(t0 + 50 + i, 3000 + 100 * i)
    assert len(_events(platform, "scaling_at_max")) == 2


def test_a_stream_window_quarantining_too_much_is_notified_once_per_episode(
    platform: Platform, add_tenant: Callable[..., None]
) -> None:
    """A window whose quarantined share is above the webhook's threshold (0.1) notifies once;
    after it has fallen back below, a new rise notifies again."""
    add_tenant("acme", "http://127.0.0.1:9/h")
    monitor = StreamMonitor(platform, broker=None)  # type: ignore[arg-type]
    target = StreamTarget("acme", "alerts", "generic", 1)
    t0 = time.time()
    monitor._decide(target, t0)
    window = monitor._windows[("acme", "alerts", "generic")]

    def tick(at: float, errors: int) -> None:
        window.reports.append(_report(at, 0, stream="alerts", records=100 - errors, errors=errors))
        monitor._decide(target, at)

    for i in range(10):
        tick(t0 + i, 20)
    (first,) = _events(platform, "quarantine_ratio_exceeded")
    assert (first["scope"], first["stream"], first["ratio"], first["threshold"]) == ("stream", "alerts", 0.2, 0.1)
    assert (first["records_quarantined"], first["records_total"]) == (20, 100)
    for i in range(40):
        tick(t0 + 10 + i, 0)
    for i in range(10):
        tick(t0 + 50 + i, 50)
    assert len(_events(platform, "quarantine_ratio_exceeded")) == 2


# -- where webhooks may go ----------------------------------------------------------------------
async def _one_delivery(
    platform: Platform, add_tenant: Callable[..., None], url: str, allow: str, done: Callable[[Delivery], bool]
) -> Delivery:
    """Add tenant ``acme`` with a webhook to ``url``, run a notifier whose allow-list is
    ``allow``, raise one notification and wait for its delivery to satisfy ``done``."""
    platform.settings = dataclasses.replace(platform.settings, webhook_allow=allow)
    add_tenant("acme", url)
    running = Notifier(platform)
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    try:
        assert notify(platform, "acme", NotifyEvent.RUN_FAILED, file="a.csv") == 1
        found = await until_async(
            lambda: next((d for d in platform.meta.notifications.recent("acme") if done(d)), None)
        )
        return cast(Delivery, found)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize(
    ("where", "kind"), [("loopback", "loopback"), ("http://10.0.0.1:9/h", "private"), ("http://[::1]:9/h", "loopback")]
)
async def test_a_webhook_to_the_platforms_own_networks_is_refused_and_recorded(
    platform: Platform, add_tenant: Callable[..., None], receiver: Receiver, where: str, kind: str
) -> None:
    """Without the operator's allow-list, a webhook resolving to loopback or a private address
    is never posted to: the delivery is ``refused`` at once with the reason, not retried (the
    receiver on 127.0.0.1 gets nothing; 10.0.0.1 is not even tried: see the next test)."""
    url = receiver.url("/hooks/acme") if where == "loopback" else where
    delivery = await _one_delivery(platform, add_tenant, url, "", lambda d: d.status is not DeliveryStatus.PENDING)
    assert delivery.status is DeliveryStatus.REFUSED and delivery.last_status_code is None
    assert delivery.last_error.startswith(f"refused: tenant 'acme': webhook {url}: address ")
    assert f"is {kind} (MYSIMBDP_WEBHOOK_ALLOW does not list it)" in delivery.last_error
    assert receiver.requests == []
    assert platform.meta.notifications.due(time.time() + 3600, per_receiver=10, limit=10) == []  # never again
    listed = CliRunner().invoke(notifications, ["list", "--tenant", "acme"], obj=platform)
    assert listed.exit_code == 0 and f"-> {url}: refused, never sent (refused: tenant 'acme'" in listed.output


async def test_with_the_operators_allow_list_the_same_webhooks_are_sent(
    platform: Platform, add_tenant: Callable[..., None], receiver: Receiver
) -> None:
    """The counterpart: with MYSIMBDP_WEBHOOK_ALLOW listing loopback, the receiver on
    127.0.0.1 gets the delivery (signed, Host naming the URL's host and port)."""
    url = receiver.url("/hooks/acme")
    delivery = await _one_delivery(
        platform, add_tenant, url, "127.0.0.1/32", lambda d: d.status is not DeliveryStatus.PENDING
    )
    assert delivery.status is DeliveryStatus.DELIVERED, delivery.last_error
    (received,) = receiver.requests
    assert received.path == "/hooks/acme" and received.headers["host"] == f"127.0.0.1:{receiver.port}"


async def test_an_allow_listed_private_address_is_tried_where_it_was_refused(
    platform: Platform, add_tenant: Callable[..., None]
) -> None:
    """10.0.0.1 allow-listed: the notifier does try to connect (nothing answers there, so the
    attempt fails and is retried), which it never did without the allow-list."""
    delivery = await _one_delivery(
        platform, add_tenant, "http://10.0.0.1:9/h", "10.0.0.0/8", lambda d: d.attempts >= 1 and bool(d.last_error)
    )
    assert delivery.status is DeliveryStatus.PENDING
    assert not delivery.last_error.startswith("refused")
