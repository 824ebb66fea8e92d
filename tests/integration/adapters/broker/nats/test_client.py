"""A NATS consumer group shared by several instances, on the embedded and the machine's
NATS: what one instance holds does not starve the others."""

from __future__ import annotations

import uuid

import pytest

from mysimbdp.adapters.broker import open_broker
from tests.conftest import broker_url_for


@pytest.mark.parametrize("kind", ["nats-embedded", "nats"])
async def test_an_instance_holding_two_pulls_leaves_messages_for_the_next(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Each instance may hold a pull in hand and one pulled ahead, unacked: a second
    instance of the group still gets its share (JetStream's default limit of 1,000 unacked
    messages per consumer gave it nothing)."""
    tenant = f"t{uuid.uuid4().hex[:10]}"
    url = broker_url_for(kind, request)
    first, second = open_broker(url, ack_wait_s=60.0), open_broker(url, ack_wait_s=60.0)
    await first.connect()
    await second.connect()
    try:
        await first.declare(tenant, "s")
        await first.publish(tenant, "s", [b"{}"] * 2500, [str(n) for n in range(2500)])
        held = [await first.pull(tenant, "s", "app", max_messages=500, timeout_s=2.0) for _ in range(2)]
        assert [len(pull) for pull in held] == [500, 500]
        got = await second.pull(tenant, "s", "app", max_messages=500, timeout_s=2.0)
        assert len(got) == 500
        assert not {m.msg_id for m in got} & {m.msg_id for pull in held for m in pull}
    finally:
        await second.close()
        await first.delete(tenant, "s")
        await first.close()
