"""``mysimbdp up`` with ``MYSIMBDP_BROKER_URL=amqp://...``: the same platform on the
machine's RabbitMQ (this run's vhost). ``tenant add --json`` hands the tenant its own
RabbitMQ user; a producer publishing with it, and HTTP posts, land once in coredms; the
stream app instances log in as the tenant, never as the platform."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, urlsplit

import aio_pika
import httpx
import orjson

from mysimbdp.adapters.broker.rabbitmq import ManagementApi, rabbit_user
from mysimbdp.domain.envelope import Envelope, batch_id, encode_batch
from tests.conftest import RABBITMQ_ADMIN_URL
from tests.e2e.conftest import Cli, healthy
from tests.e2e.test_stream_manager import NDJSON, _count_of
from tests.helpers import until


async def _publish_as_tenant(access: dict[str, str], start: int, count: int) -> None:
    """What a tenant's own producer does with ``tenant add --json``'s ``broker``: a plain aio-pika client."""
    connection = await aio_pika.connect(access["url"])
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)  # a return raises
        exchange = await channel.get_exchange(access["exchange"], ensure=False)
        routing_key = access["routing_key"].replace("<stream>", "orders")
        for first in range(start, start + count, 100):
            envelopes = [Envelope(f"p{n}", {"n": n}) for n in range(first, first + 100)]
            body = encode_batch("acme", "orders", envelopes)
            persistent = aio_pika.DeliveryMode.PERSISTENT
            message = aio_pika.Message(body, message_id=batch_id(envelopes), delivery_mode=persistent)
            await exchange.publish(message, routing_key=routing_key, mandatory=True)
    finally:
        await connection.close()


def _connection_users(vhost: str) -> set[str]:
    api = ManagementApi(RABBITMQ_ADMIN_URL)
    connections = api.call("GET", f"/api/vhosts/{quote(vhost, safe='')}/connections", who="test")
    assert isinstance(connections, list)
    return {str(c["user"]) for c in connections}


def test_the_platform_runs_on_rabbitmq_with_a_user_per_tenant(cli: Cli, rabbitmq_url: str) -> None:
    cli.env["MYSIMBDP_BROKER_URL"] = rabbitmq_url
    cli.env["MYSIMBDP_BROKER_ADMIN_URL"] = RABBITMQ_ADMIN_URL
    added: dict[str, Any] = cli.json("tenant", "add", "acme", "--json")
    access = added["broker"]
    assert access["exchange"] == "mysimbdp.acme" and access["routing_key"] == "mysimbdp.acme.<stream>"
    assert urlsplit(access["url"]).username == quote(rabbit_user("acme"), safe="")
    api = f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
    up = cli.popen("up")
    try:
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {added['api_key']}"}, timeout=10) as http:
            until(lambda: healthy(http), what="the API")
            body = "\n".join(orjson.dumps({"id": f"h{n}", "data": {"n": n}}).decode() for n in range(300))
            posted = http.post("/v1/streams/orders/messages", content=body, headers=NDJSON)
            assert posted.status_code == 202, posted.text  # declares the stream, starts the app
            asyncio.run(_publish_as_tenant(access, 1000, 500))
            assert http.post("/v1/streams/orders/messages", content=body, headers=NDJSON).status_code == 202
            until(lambda: _count_of(cli, "orders") == 800, what="800 records (300 posted twice, 500 published)")
        vhost = urlsplit(rabbitmq_url).path[1:].replace("%2F", "/")
        users = until(lambda: (u := _connection_users(vhost)) and rabbit_user("acme") in u and u, what="connections")
        assert users <= {"guest", rabbit_user("acme")}  # the platform (API, monitor) and the tenant's app
    finally:
        up.terminate()
        assert up.wait(timeout=60) == 0
    assert _count_of(cli, "orders") == 800
