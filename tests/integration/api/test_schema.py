"""The whole API against its own OpenAPI spec (schemathesis): generated requests, valid and
invalid, with a tenant's key, on SQLite and PostgreSQL; no answer is a 5xx, and every status code, content type,
header and body is the one the spec documents. Bounded: a few examples per operation.

The requests go through httpx on this test's own event loop, the one the broker connected
on (schemathesis' ASGI client would run the app on another loop, where the broker's
connection cannot be used)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mysimbdp.adapters.broker import Broker, open_broker
from mysimbdp.api import create_app
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.tenants import add_tenant

# tus PATCH bodies (/v1/uploads/{id}): raw bytes of a media type schemathesis does not know
schemathesis.openapi.media_type("application/offset+octet-stream", st.binary(max_size=256))

EXAMPLES = 10  # per operation and mode: 12 operations x 2 modes x 10 per backend, about 10-15 s each
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def nats_broker(loop: asyncio.AbstractEventLoop, embedded_nats: str) -> Iterator[Broker]:
    connected = open_broker(embedded_nats, ack_wait_s=2.0)
    loop.run_until_complete(connected.connect())
    try:
        yield connected
    finally:
        loop.run_until_complete(connected.close())


@pytest.fixture
def platform(operator_platform: Platform) -> Platform:
    return operator_platform


@pytest.fixture
def api(platform: Platform, nats_broker: Broker, loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    """The app, an httpx client on ``loop``, and a tenant's key (with a file in its history)."""
    key = add_tenant(platform, "acme", None).api_key
    app = create_app(platform, nats_broker)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    try:
        yield app, client, key
    finally:
        loop.run_until_complete(client.aclose())


def _request(case: schemathesis.Case[Any], key: str) -> dict[str, Any]:
    """httpx arguments for ``case`` (schemathesis serializes for requests), with the key."""
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url="http://test")
    headers = {**kwargs.get("headers", {}), "Authorization": f"Bearer {key}"}
    if cookies := kwargs.pop("cookies", None):  # httpx takes cookies on the client only
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    kwargs["headers"] = headers
    data = kwargs.pop("data", None)
    if isinstance(data, (bytes, str)):
        kwargs["content"] = data
    elif data is not None:
        kwargs["data"] = data
    kwargs.pop("auth", None)
    return kwargs


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_is_documented_and_none_is_a_server_error(
    api: Any, loop: asyncio.AbstractEventLoop, mode: GenerationMode
) -> None:
    """Each operation, fed generated requests with a tenant's key, answers as its spec says."""
    app, client, key = api
    spec = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    results = list(spec.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results  # the spec itself is valid
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) >= 12, [op.label for op in operations]
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers_as_documented(case: schemathesis.Case[Any]) -> None:
            response = loop.run_until_complete(client.request(**_request(case, key)))
            case.validate_response(response, checks=CHECKS)

        try:
            answers_as_documented()
        except Unsatisfiable:  # nothing to make invalid (no parameters, no body): nothing to test
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as exc:  # every operation's failure, not just the first
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
