"""The pull puller asks again when JetStream answers 503 (no responders: the consumer is not
reachable yet, as right after it was made on a cluster) until its timeout is over, and only
then raises; here on the embedded server, with the consumer made after the pull began."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from mysimbdp.adapters.broker.nats import EmbeddedNats
from mysimbdp.adapters.broker.nats.pull import Puller
from mysimbdp.errors import BrokerUnavailable


async def test_a_pull_before_its_consumer_exists_waits_for_it_within_its_timeout(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    nc = await nats.connect(server.start())
    try:
        js = nc.jetstream()
        await js.add_stream(name="S", subjects=["s.>"])
        await js.publish("s.one", b"m1")
        early = Puller(nc, "S", "late")
        await early.start()
        with pytest.raises(BrokerUnavailable, match="503"):  # no consumer, and no time left to wait
            await early.pull(1, 0.2)

        pulled = asyncio.create_task(early.pull(1, 10.0))
        await asyncio.sleep(0.5)
        assert not pulled.done()  # 503 again and again: asked again, not raised
        await js.add_consumer("S", ConsumerConfig(durable_name="late", ack_policy=AckPolicy.EXPLICIT))
        msgs = await pulled
        assert [m.data for m in msgs] == [b"m1"]
        await early.stop()
    finally:
        await nc.close()
        server.stop()
