"""mysimbdp-api over real pieces: a Platform on SQLite, tenants made by ``add_tenant``, an
embedded NATS JetStream, the app driven in-process through httpx. What the API accepts is
checked in the broker itself. The token bucket is unit-tested with a fake clock at the end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI

from mysimbdp.adapters.broker import Broker, open_broker
from mysimbdp.adapters.broker.nats import EmbeddedNats
from mysimbdp.adapters.coredms import open_store
from mysimbdp.api import create_app
from mysimbdp.api.ratelimit import RateLimiter, TokenBucket, retry_after_s
from mysimbdp.domain.envelope import Envelope, decode_batch
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.tenants import NewTenant, add_tenant
from mysimbdp.settings import Settings
from tests.conftest import broker_url_for

SMALL_PROFILE = """
stream_limits:
  {max_batch_bytes: 1000, max_message_bytes: 200, max_batch_messages: 10, messages_per_s: 5, burst_messages: 10}
stream_apps:
  - {name: clicks, streams: [clicks], dataset: click_events}
"""


@pytest.fixture(params=["nats-embedded", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    return broker_url_for(request.param, request)


@pytest.fixture
def platform(home: Path) -> Iterator[Platform]:
    with Platform(Settings(home=home), {}) as started:
        yield started


def _new_tenant(platform: Platform, profile: Path | None = None) -> NewTenant:
    return add_tenant(platform, f"t{uuid.uuid4().hex[:10]}", profile)


@pytest.fixture
def tenant(platform: Platform) -> NewTenant:
    return _new_tenant(platform)


@pytest.fixture
def small(platform: Platform, tmp_path: Path) -> NewTenant:
    """A tenant with small stream limits (1000-byte bodies, 200-byte items, 5/s, burst 10)."""
    path = tmp_path / "small" / "profile.yaml"
    path.parent.mkdir()
    path.write_text(SMALL_PROFILE, encoding="utf-8")
    return _new_tenant(platform, path)


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def client(platform: Platform, broker: Broker) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(create_app(platform, broker)) as c:
        yield c


def _auth(t: NewTenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {t.api_key}"}


async def _post(client: httpx.AsyncClient, t: NewTenant, stream: str, body: object) -> httpx.Response:
    return await client.post(f"/v1/streams/{stream}/messages", json=body, headers=_auth(t))


async def _ndjson(client: httpx.AsyncClient, t: NewTenant, stream: str, body: bytes) -> httpx.Response:
    headers = {**_auth(t), "Content-Type": "application/x-ndjson"}
    return await client.post(f"/v1/streams/{stream}/messages", content=body, headers=headers)


async def _published(broker: Broker, tenant: str, stream: str, want: int) -> list[tuple[str, list[Envelope]]]:
    """(tenant field, envelopes) of every batch on the stream, pulled until ``want`` envelopes came."""
    batches: list[tuple[str, list[Envelope]]] = []
    for _ in range(10):
        if sum(len(envelopes) for _, envelopes in batches) >= want:
            break
        for message in await broker.pull(tenant, stream, "check", max_messages=10, timeout_s=0.5):
            batches.append((orjson.loads(message.body)["tenant"], decode_batch(message.body, "-").envelopes))
            await broker.ack([message])
    return batches


async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_openapi_describes_the_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    post = paths["/v1/streams/{stream}/messages"]["post"]
    assert {"202", "401", "413", "415", "422", "429", "503"} <= set(post["responses"])
    assert set(post["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}
    assert "/v1/datasets/{dataset}/documents" in paths
    assert "/healthz" in paths


async def test_one_object_is_accepted_only_once_in_the_broker(
    client: httpx.AsyncClient, broker: Broker, tenant: NewTenant
) -> None:
    response = await _post(client, tenant, "events", {"a": 1})
    assert response.status_code == 202, response.text
    body = response.json()
    tid = tenant.record.id
    assert (body["tenant"], body["stream"], body["dataset"], len(body["ids"])) == (tid, "events", "events", 1)
    [(sent_by, envelopes)] = await _published(broker, tid, "events", 1)
    assert sent_by == tid
    assert [(e.id, e.data) for e in envelopes] == [(body["ids"][0], {"a": 1})]


async def test_an_array_and_ndjson_become_one_batch_each(
    client: httpx.AsyncClient, broker: Broker, tenant: NewTenant
) -> None:
    tid = tenant.record.id
    array = await _post(client, tenant, "events", [{"n": 1}, {"n": 2}, {"n": 3}])
    ndjson = await _ndjson(client, tenant, "events", b'{"n": 4}\n\n{"n": 5}\n')
    assert (array.status_code, ndjson.status_code) == (202, 202)
    batches = await _published(broker, tid, "events", 5)
    assert [[e.data["n"] for e in envelopes] for _, envelopes in batches] == [[1, 2, 3], [4, 5]]
    assert [e.id for _, envelopes in batches for e in envelopes] == array.json()["ids"] + ndjson.json()["ids"]


async def test_the_stream_apps_dataset_is_named(client: httpx.AsyncClient, small: NewTenant) -> None:
    assert (await _post(client, small, "clicks", {"x": 1})).json()["dataset"] == "click_events"
    assert (await _post(client, small, "other", {"x": 1})).json()["dataset"] == "other"


async def test_envelopes_keep_their_ids_and_a_repost_is_dropped_by_the_broker(
    client: httpx.AsyncClient, broker: Broker, tenant: NewTenant
) -> None:
    tid = tenant.record.id
    items = [{"id": "a1", "data": {"v": 1}, "ts": "2025-01-01T00:00:00Z"}, {"id": 7, "data": {"v": 2}}]
    first = await _post(client, tenant, "orders", items)
    again = await _post(client, tenant, "orders", items)
    assert first.status_code == again.status_code == 202
    assert first.json()["ids"] == again.json()["ids"] == ["a1", "7"]
    if broker.url.startswith("amqp"):  # RabbitMQ keeps both; the stream app's keyed write stores one
        assert await broker.backlog(tid, "orders", "check") == 2
        [(_, envelopes), _] = await _published(broker, tid, "orders", 4)
    else:  # JetStream drops the repost by its message id
        assert await broker.backlog(tid, "orders", "check") == 1
        [(_, envelopes)] = await _published(broker, tid, "orders", 2)
    assert [(e.id, e.data, e.ts) for e in envelopes] == [
        ("a1", {"v": 1}, "2025-01-01T00:00:00Z"),
        ("7", {"v": 2}, None),
    ]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"}, {"Authorization": "Bearer msb_wrong"}],
    ids=["missing", "not-bearer", "no-key", "wrong-key"],
)
async def test_no_or_unknown_key_is_401(client: httpx.AsyncClient, tenant: NewTenant, headers: dict[str, str]) -> None:
    for response in (
        await client.post("/v1/streams/events/messages", json={"a": 1}, headers=headers),
        await client.get("/v1/datasets/x/documents", headers=headers),
    ):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "API key" in response.json()["error"] or "Authorization" in response.json()["error"]


async def test_each_key_reaches_only_its_own_tenants_stream(
    client: httpx.AsyncClient, broker: Broker, platform: Platform
) -> None:
    one, two = _new_tenant(platform), _new_tenant(platform)
    assert (await _post(client, one, "events", {"from": "one"})).json()["tenant"] == one.record.id
    assert (await _post(client, two, "events", {"from": "two"})).json()["tenant"] == two.record.id
    for t, name in ((one, "one"), (two, "two")):
        [(sent_by, envelopes)] = await _published(broker, t.record.id, "events", 1)
        assert (sent_by, [e.data for e in envelopes]) == (t.record.id, [{"from": name}])


async def test_a_body_over_max_batch_bytes_is_413_with_or_without_content_length(
    client: httpx.AsyncClient, broker: Broker, small: NewTenant
) -> None:
    big = orjson.dumps([{"pad": "x" * 90} for _ in range(10)])  # > 1000 bytes, items small
    declared = await _ndjson(client, small, "events", big)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 100):
            yield big[start : start + 100]

    streamed = await client.post(
        "/v1/streams/events/messages", content=chunks(), headers={**_auth(small), "Content-Type": "application/json"}
    )
    for response in (declared, streamed):
        assert response.status_code == 413
        body = response.json()
        assert (body["tenant"], body["stream"], body["rule"], body["limit_bytes"]) == (
            small.record.id,
            "events",
            "max_batch_bytes",
            1000,
        )
        assert "max_batch_bytes 1000" in body["error"]
    assert streamed.json()["value"] <= 1100  # stopped reading soon after the limit
    assert await broker.backlog(small.record.id, "events", "check") == 0


async def test_one_oversize_item_or_too_many_items_is_413(client: httpx.AsyncClient, small: NewTenant) -> None:
    oversize = await _post(client, small, "events", [{"ok": 1}, {"pad": "x" * 300}])
    assert oversize.status_code == 413
    assert (oversize.json()["rule"], oversize.json()["item"], oversize.json()["limit_bytes"]) == (
        "max_message_bytes",
        2,
        200,
    )
    many = await _post(client, small, "events", [{}] * 11)
    assert many.status_code == 413
    assert (many.json()["rule"], many.json()["value"], many.json()["limit_messages"]) == ("max_batch_messages", 11, 10)


async def test_malformed_ndjson_names_its_line(client: httpx.AsyncClient, tenant: NewTenant) -> None:
    response = await _ndjson(client, tenant, "events", b'{"a": 1}\n{"a": 2}\n{"a": \n{"a": 4}\n')
    assert response.status_code == 422
    assert response.json()["line"] == 3
    assert "line 3" in response.json()["error"]
    assert tenant.record.id in response.json()["error"]


async def test_malformed_json_and_non_objects_are_422(client: httpx.AsyncClient, tenant: NewTenant) -> None:
    headers = {**_auth(tenant), "Content-Type": "application/json"}
    bad = await client.post("/v1/streams/events/messages", content=b'[{"a": 1},\n{"a": }]', headers=headers)
    assert (bad.status_code, bad.json()["line"]) == (422, 2)
    scalar = await _post(client, tenant, "events", [{"a": 1}, 5])
    assert (scalar.status_code, scalar.json()["line"]) == (422, 2)


@pytest.mark.parametrize("body", [b"", b"[]", b"\n\n"], ids=["nothing", "empty-array", "blank-lines"])
async def test_an_empty_batch_is_422(client: httpx.AsyncClient, tenant: NewTenant, body: bytes) -> None:
    response = await _ndjson(client, tenant, "events", body) if body != b"[]" else await _post(client, tenant, "e", [])
    assert response.status_code == 422
    assert "error" in response.json()


async def test_an_invalid_stream_name_is_422(client: httpx.AsyncClient, tenant: NewTenant) -> None:
    response = await _post(client, tenant, "Bad-Name", {"a": 1})
    assert response.status_code == 422
    assert "stream name 'Bad-Name' is not valid" in response.json()["error"]


async def test_another_content_type_is_415(client: httpx.AsyncClient, tenant: NewTenant) -> None:
    headers = {**_auth(tenant), "Content-Type": "text/csv"}
    response = await client.post("/v1/streams/events/messages", content=b"a,b\n1,2\n", headers=headers)
    assert response.status_code == 415
    assert "text/csv" in response.json()["error"]


async def test_over_the_burst_is_429_with_retry_after(platform: Platform, broker: Broker, small: NewTenant) -> None:
    """The API's clock stands still (a loaded machine's slow first POST would refill a token)."""
    async with _client(create_app(platform, broker, clock=lambda: 1000.0)) as client:
        assert (await _post(client, small, "events", [{"n": n} for n in range(10)])).status_code == 202
        response = await _post(client, small, "events", {"n": 10})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert (response.json()["rule"], response.json()["limit_per_s"]) == ("messages_per_s", 5)
    assert await broker.backlog(small.record.id, "events", "check") == 1


@pytest.mark.slow  # the broker adapter retries for PUBLISH_DEADLINE_S (10 s on one node) before giving up
async def test_a_stopped_broker_is_503_with_retry_after(platform: Platform, tenant: NewTenant, tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "doomed")
    broker = open_broker(server.start())
    await broker.connect()
    try:
        async with _client(create_app(platform, broker)) as client:
            assert (await _post(client, tenant, "events", {"a": 1})).status_code == 202
            server.stop()
            response = await _post(client, tenant, "events", {"a": 2})
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert "nothing was accepted" in response.json()["error"]
    finally:
        server.stop()
        await broker.close()


async def test_documents_are_the_tenants_own(client: httpx.AsyncClient, platform: Platform, tenant: NewTenant) -> None:
    """A tenant reads its own documents (limit and offset page by key); another tenant's dataset
    is 404 for it, as a dataset nobody has (more in test_datasets.py)."""
    other = _new_tenant(platform)
    store = await asyncio.to_thread(open_store, other.record.coredms_url)
    try:
        await asyncio.to_thread(store.write, "x", [("k1", b'{"a": 1}'), ("k2", b'{"a": 2}')], "test")
    finally:
        store.close()
    mine = await client.get("/v1/datasets/x/documents", headers=_auth(tenant))
    assert mine.status_code == 404
    page = await client.get("/v1/datasets/x/documents?limit=1&offset=1", headers=_auth(other))
    assert (page.status_code, page.json()) == (200, [{"a": 2}])


async def test_the_count_is_of_the_tenants_own_documents(
    client: httpx.AsyncClient, platform: Platform, tenant: NewTenant
) -> None:
    """GET /v1/datasets/{dataset}/count counts the caller's documents only (404 for a dataset it
    does not have); an invalid dataset name is 422 naming the tenant."""
    other = _new_tenant(platform)
    store = await asyncio.to_thread(open_store, other.record.coredms_url)
    try:
        await asyncio.to_thread(store.write, "x", [("k1", b'{"a": 1}'), ("k2", b'{"a": 2}')], "test")
    finally:
        store.close()
    mine = await client.get("/v1/datasets/x/count", headers=_auth(tenant))
    assert mine.status_code == 404 and repr(tenant.record.id) in mine.json()["error"]
    theirs = await client.get("/v1/datasets/x/count", headers=_auth(other))
    assert (theirs.status_code, theirs.json()) == (200, {"dataset": "x", "count": 2})
    bad = await client.get("/v1/datasets/Bad-Name/count", headers=_auth(tenant))
    assert bad.status_code == 422 and repr(tenant.record.id) in bad.json()["error"]


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "offset=-1"])
async def test_documents_limits_out_of_range_are_422(client: httpx.AsyncClient, tenant: NewTenant, query: str) -> None:
    response = await client.get(f"/v1/datasets/x/documents?{query}", headers=_auth(tenant))
    assert response.status_code == 422
    assert "error" in response.json()


# -- the token bucket, with a fake clock ------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_refills_at_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=5, capacity=10, clock=clock)
    assert bucket.take(10) == 0.0
    assert bucket.take(1) == pytest.approx(0.2)
    clock.now += 0.2
    assert bucket.take(1) == 0.0
    clock.now += 100
    assert bucket.take(10) == 0.0  # refilled to the capacity, no more
    assert bucket.take(1) > 0


def test_a_refused_take_takes_nothing_and_give_back_returns_tokens() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=2, capacity=4, clock=clock)
    assert bucket.take(3) == 0.0
    assert bucket.take(2) == pytest.approx(0.5)
    assert bucket.tokens == pytest.approx(1)
    bucket.give_back(3)
    assert bucket.take(4) == 0.0


def test_a_take_larger_than_the_bucket_passes_when_full_and_leaves_a_debt() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=10, capacity=5, clock=clock)
    assert bucket.take(20) == 0.0
    assert bucket.take(1) == pytest.approx(1.6)  # 15 tokens of debt, then one more
    clock.now += 2.0
    assert bucket.take(20) == pytest.approx(0.0)  # full again


def test_the_limiter_keeps_one_bucket_per_tenant_and_rebuilds_it_on_new_limits() -> None:
    limiter = RateLimiter(FakeClock())
    one = limiter.bucket("one", 5, 10)
    assert limiter.bucket("one", 5, 10) is one
    assert limiter.bucket("two", 5, 10) is not one
    assert limiter.bucket("one", 6, 10) is not one


@pytest.mark.parametrize(("wait_s", "header"), [(0.01, 1), (1.0, 1), (1.2, 2), (30.0, 30)])
def test_retry_after_is_whole_seconds_at_least_one(wait_s: float, header: int) -> None:
    assert retry_after_s(wait_s) == header
