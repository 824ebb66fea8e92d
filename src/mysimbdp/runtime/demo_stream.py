"""The demo's near-realtime half, run inside the services the demo started.

For every example tenant with stream samples (``data/stream/<stream>.ndjson``, one envelope
per line):

1. **post**: the sample goes to ``POST /v1/streams/<stream>/messages`` over HTTP with the
   tenant's API key, ``BODY_LINES`` lines a request; the stream's first message starts its
   app's ``min_instances``; the demo waits until the stream's backlog is drained.
2. **resend storm**: the operator pauses the app (target 0, as ``stream stop`` does) for one
   scaling window while the tenant's devices re-send every line the app stored ``copies``
   times over, each line a broker message of its own, straight to the broker with the
   tenant's own broker user. Then the app is started again (``min_instances``): the monitor sees the backlog in the
   instances' reports and adds instances, they drain it, and once idle the monitor removes
   them. Every re-sent record has the key it had, so the documents do not change: stored once.

The summary per tenant stream: what was posted and re-sent, the documents stored, the records
quarantined, the instances' peak and the scaling decisions with their reasons.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from mysimbdp.adapters.broker import Broker
from mysimbdp.domain.profile import StreamApp
from mysimbdp.domain.records import ScalingRecord
from mysimbdp.domain.sources import stream_source
from mysimbdp.errors import MysimbdpError
from mysimbdp.runtime.platform import Platform
from mysimbdp.runtime.up import BrokerAccess

BODY_LINES = 50
PUBLISH_CHUNK = 1_000  # messages a publish call (confirms pipelined)


@dataclass
class StreamSummary:
    tenant: str
    stream: str
    dataset: str
    posted: int = 0  # records accepted by the REST API (202)
    requests: int = 0
    resent: int = 0  # messages the tenant's producer published straight to the broker
    stored: int = 0  # documents in the dataset at the end
    quarantined: int = 0  # records the stream app quarantined
    peak_instances: int = 0
    final_instances: int = 0
    decisions: list[ScalingRecord] = field(default_factory=list)
    seconds: float = 0.0


def stream_samples(tenant_dir: Path) -> list[Path]:
    return sorted((tenant_dir / "data" / "stream").glob("*.ndjson"))


class StreamDemo:
    def __init__(self, platform: Platform, api_url: str, access: BrokerAccess, *, timeout_s: float = 300.0) -> None:
        self.platform = platform
        self.api_url = api_url
        self.access = access
        self.timeout_s = timeout_s

    async def run(self, tenant: str, api_key: str | None, sample: Path, copies: int) -> StreamSummary:
        stream = sample.stem
        _, profile = self.platform.tenant(tenant)
        app = profile.stream_app_for(stream)
        if app is None:
            raise MysimbdpError(
                f"demo: tenant {tenant!r}: no stream app serves sample {sample.name} (stream {stream!r})"
            )
        summary = StreamSummary(tenant, stream, app.dataset or stream)
        started = time.time()
        broker = self.platform.broker(self.access.url)
        await broker.connect()
        try:
            lines = sample.read_bytes().splitlines()
            if api_key is not None:
                await self._post(summary, api_key, lines)
            else:  # a kept home: this run does not know the key; the same lines go to the broker
                await self._publish(summary, lines, range(1))
                self.platform.meta.streams.ensure_target(tenant, stream, app.name, app.min_instances)
            await self._until_drained(broker, summary, app)
            if copies > 0:
                await self._resend_storm(broker, summary, app, self._stored_lines(tenant, stream, lines), copies)
        finally:
            await broker.close()
        summary.stored = self._count(tenant, summary.dataset)
        summary.quarantined = self.platform.meta.count_quarantine(tenant, file_id_prefix=stream_source(stream, ""))
        summary.decisions = [
            d for d in self.platform.meta.streams.decisions(tenant, since=started) if d.stream == stream
        ]
        summary.seconds = time.time() - started
        return summary

    async def _post(self, summary: StreamSummary, api_key: str, lines: list[bytes]) -> None:
        url = f"{self.api_url}/v1/streams/{summary.stream}/messages"
        for first in range(0, len(lines), BODY_LINES):
            chunk = lines[first : first + BODY_LINES]
            await asyncio.to_thread(_post_ndjson, url, api_key, b"\n".join(chunk), summary.tenant)
            summary.requests += 1
            summary.posted += len(chunk)

    async def _publish(self, summary: StreamSummary, lines: list[bytes], copies: range) -> None:
        """Each line a message of its own, with the tenant's broker user (``-c<n>`` ids per copy)."""
        producer = self.platform.broker(self.access.tenant_url(summary.tenant))
        await producer.connect()
        try:
            bodies = [(line, orjson.loads(line).get("id")) for line in lines]
            for copy in copies:
                messages = [(body, f"{msg_id}-c{copy}") for body, msg_id in bodies]
                for first in range(0, len(messages), PUBLISH_CHUNK):
                    chunk = messages[first : first + PUBLISH_CHUNK]
                    await producer.publish(summary.tenant, summary.stream, [b for b, _ in chunk], [i for _, i in chunk])
                    summary.resent += len(chunk)
        finally:
            await producer.close()

    async def _resend_storm(
        self, broker: Broker, summary: StreamSummary, app: StreamApp, lines: list[bytes], copies: int
    ) -> None:
        registry = self.platform.meta.streams
        registry.set_target(summary.tenant, summary.stream, app.name, 0)  # paused
        await self._until(lambda: self._running(summary) == 0, "the paused app's instances to stop")
        paused_at = time.monotonic()
        await self._publish(summary, lines, range(copies))
        # Paused for one scaling window at least: the monitor then judges the restarted app
        # by its own reports (the first one, right after its first pull, shows the backlog),
        # not by the idle ones its instances sent before the pause.
        await asyncio.sleep(max(0.0, app.scaling.window_s - (time.monotonic() - paused_at)))
        registry.set_target(summary.tenant, summary.stream, app.name, max(1, app.min_instances))
        await self._until_drained(broker, summary, app)
        floor = max(1, app.min_instances)

        def scaled_back() -> bool:
            targets = [t for t in registry.targets(summary.tenant) if t.stream == summary.stream]
            return all(t.instances <= floor for t in targets) and self._running(summary) <= floor

        await self._until(scaled_back, "the monitor to scale back down", summary=summary)
        summary.final_instances = self._running(summary)

    def _stored_lines(self, tenant: str, stream: str, lines: list[bytes]) -> list[bytes]:
        """The sample's lines less those quarantined (by message id) from this stream."""
        bad = {
            q.reason.split(":", 1)[0].removeprefix("message ")
            for q in self.platform.meta.list_quarantine(tenant, limit=100_000)
            if q.file_id.startswith(stream_source(stream, ""))
        }
        return [line for line in lines if str(orjson.loads(line).get("id")) not in bad]

    async def _until_drained(self, broker: Broker, summary: StreamSummary, app: StreamApp) -> None:
        async def drained() -> bool:
            return await broker.backlog(summary.tenant, summary.stream, app.name) == 0

        deadline = time.monotonic() + self.timeout_s
        while not await drained():
            summary.peak_instances = max(summary.peak_instances, self._running(summary))
            if time.monotonic() > deadline:
                raise MysimbdpError(f"demo: tenant {summary.tenant!r}, stream {summary.stream!r}: not drained")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2 * self.platform.settings.poll_interval_s)  # the manager copies the rejects

    async def _until(self, check: Callable[[], bool], what: str, *, summary: StreamSummary | None = None) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not check():
            if summary is not None:
                summary.peak_instances = max(summary.peak_instances, self._running(summary))
            if time.monotonic() > deadline:
                raise MysimbdpError(f"demo: timed out waiting for {what}")
            await asyncio.sleep(0.2)

    def _running(self, summary: StreamSummary) -> int:
        instances = self.platform.meta.streams.instances(summary.tenant)
        return sum(1 for i in instances if i.stream == summary.stream and i.state == "running")

    def _count(self, tenant: str, dataset: str) -> int:
        record, _ = self.platform.tenant(tenant)
        store = self.platform.tenant_store(record)
        try:
            return store.count(dataset)
        finally:
            store.close()


def _post_ndjson(url: str, api_key: str, body: bytes, tenant: str) -> None:
    request = urllib.request.Request(  # noqa: S310 (the demo's own http://127.0.0.1 API)
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/x-ndjson"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (as above)
            if answer.status == 202:
                return
            raise MysimbdpError(f"demo: tenant {tenant!r}: POST {url}: HTTP {answer.status}")
    except urllib.error.HTTPError as exc:
        raise MysimbdpError(f"demo: tenant {tenant!r}: POST {url}: HTTP {exc.code} {exc.read()[:300]!r}") from exc
