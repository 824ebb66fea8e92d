"""The broker goes away and comes back while the REST API takes posts and a stream app
consumes: the embedded NATS server, the machine's NATS (127.0.0.1:4222, stopped and started
again with its own command line) and the machine's RabbitMQ (``rabbitmqctl stop_app`` /
``start_app``). The API answers 202 or 503 (never anything else), the producer retries the
503s with the same ids, the API's and the app's connections come back by themselves, and
every record the API confirmed is stored exactly once."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from mysimbdp.adapters.broker import open_broker, tenant_users
from mysimbdp.adapters.broker.nats import EmbeddedNats
from mysimbdp.adapters.coredms import open_store
from mysimbdp.api.app import create_app
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.tenants import add_tenant
from mysimbdp.settings import Settings
from tests.conftest import IN_CI, RABBITMQ_ADMIN_URL, _reachable, broker_url_for
from tests.integration.sdk.test_stream import _start, _stop, _wait_count

pytestmark = pytest.mark.stops_brokers  # stops and starts the machine's NATS and RabbitMQ


class Restartable(Protocol):
    url: str

    def stop(self) -> None: ...

    def start(self) -> None: ...


class Embedded:
    def __init__(self, store: Path) -> None:
        self.server = EmbeddedNats(store)
        self.url = self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()


def _wait_port(port: int, up: bool, what: str) -> None:
    deadline = time.monotonic() + 60
    while _reachable("127.0.0.1", port) != up:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not {'come up' if up else 'go down'} on port {port}")
        time.sleep(0.1)


class MachineNats:
    """The machine's ``nats-server`` on 4222, started again with the command line it ran with."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pid = _nats_pid()
        self.argv = Path(f"/proc/{self.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGTERM)
        _wait_port(4222, up=False, what="the machine's NATS")

    def start(self) -> None:
        if not _reachable("127.0.0.1", 4222):  # setsid -f: a daemon again, outliving the test run
            argv = ["setsid", "-f", *(a.decode() for a in self.argv)]
            subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        _wait_port(4222, up=True, what="the machine's NATS")
        self.pid = _nats_pid()


def _nats_pid() -> int:
    found = subprocess.run(["pgrep", "-f", "nats-server.* -p 4222"], capture_output=True, text=True, check=False)
    pids = [int(p) for p in found.stdout.split()]
    if len(pids) != 1:
        _unavailable(f"the machine's nats-server process (port 4222) is not found by pgrep: {pids}")
    return pids[0]


class MachineRabbit:
    """The machine's RabbitMQ: its application stopped and started (the node stays up)."""

    def __init__(self, url: str) -> None:
        self.url = url
        if shutil.which("rabbitmqctl") is None:
            _unavailable("rabbitmqctl is not on PATH")

    def _ctl(self, command: str) -> None:
        subprocess.run(["rabbitmqctl", command], check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        self._ctl("stop_app")
        _wait_port(5672, up=False, what="RabbitMQ")

    def start(self) -> None:
        self._ctl("start_app")
        _wait_port(5672, up=True, what="RabbitMQ")
        # the next tests (and the run's vhost cleanup) make and delete users through it
        _wait_port(15672, up=True, what="RabbitMQ's management API")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; under CI=true the broker restart tests must run")
    pytest.skip(reason)


@pytest.fixture(params=["nats-embedded", "nats", "rabbitmq"])
def restartable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Restartable]:
    broker: Restartable
    if request.param == "nats-embedded":
        broker = Embedded(tmp_path / "broker")
    else:
        url = broker_url_for(request.param, request)
        broker = MachineNats(url) if request.param == "nats" else MachineRabbit(url)
    try:
        yield broker
    finally:
        broker.start()  # whatever happened, the broker is left running
        if isinstance(broker, Embedded):
            broker.stop()


@pytest.fixture
async def platform(home: Path, restartable: Restartable) -> AsyncIterator[Platform]:
    settings = Settings(home=home, broker_url=restartable.url, broker_admin_url=RABBITMQ_ADMIN_URL)
    with Platform(settings, {}) as started:
        yield started


async def _post_until_accepted(http: httpx.AsyncClient, stream: str, batch: int, codes: list[int]) -> None:
    """Post records ``batch*100 .. +99`` until the API says 202; a 503 is retried with the same ids."""
    ids = range(batch * 100, batch * 100 + 100)
    body = "\n".join(f'{{"id": "r{n}", "data": {{"n": {n}, "slow": true}}}}' for n in ids)
    for _ in range(300):
        answer = await http.post(
            f"/v1/streams/{stream}/messages", content=body, headers={"Content-Type": "application/x-ndjson"}
        )
        codes.append(answer.status_code)
        if answer.status_code == 202:
            return
        assert answer.status_code == 503, answer.text
        assert "Retry-After" in answer.headers
        await asyncio.sleep(0.2)
    raise AssertionError(f"batch {batch} was never accepted: {codes[-5:]}")


async def test_api_and_app_ride_out_a_broker_restart(
    platform: Platform, restartable: Restartable, tmp_path: Path
) -> None:
    tenant = add_tenant(platform, f"r{uuid.uuid4().hex[:8]}", None)
    users = tenant_users(platform.settings, platform.secrets)
    app_url = (users.tenant_url(tenant.record.id) if users else None) or restartable.url
    stream = f"s{uuid.uuid4().hex[:8]}"
    broker = open_broker(restartable.url)
    await broker.connect()
    app = None
    codes: list[int] = []
    transport = httpx.ASGITransport(app=create_app(platform, broker))
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers, timeout=60) as http:
            await _post_until_accepted(http, stream, 0, codes)  # declares the stream
            app = _start(tmp_path, app_url, tenant.record.coredms_url, stream, batch=1, tenant=tenant.record.id)
            for batch in range(1, 5):
                await _post_until_accepted(http, stream, batch, codes)
            assert await _wait_count(tenant.record.coredms_url, stream, 100) >= 100
            posting = asyncio.create_task(_post_many(http, stream, range(5, 10), codes))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(restartable.stop)  # mid-stream: the app holds un-acked messages
            await asyncio.sleep(1.0)
            await asyncio.to_thread(restartable.start)
            await posting
            await _post_until_accepted(http, stream, 10, codes)  # after the restart
        assert set(codes) <= {202, 503} and codes.count(202) == 11
        assert await _wait_count(tenant.record.coredms_url, stream, 1100, timeout_s=90) == 1100
    finally:
        if app is not None:
            _stop(app)
        try:
            await broker.delete(tenant.record.id, stream)
        finally:
            await broker.close()
    store = open_store(tenant.record.coredms_url)
    try:
        stored = [d["n"] for d in store.documents(stream, limit=5000)]
    finally:
        store.close()
    assert sorted(stored) == list(range(1100))  # each confirmed record once


async def _post_many(http: httpx.AsyncClient, stream: str, batches: range, codes: list[int]) -> None:
    for batch in batches:
        await _post_until_accepted(http, stream, batch, codes)
        await asyncio.sleep(0.2)
