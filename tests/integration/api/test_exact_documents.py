"""GET /v1/datasets/{dataset}/documents gives big integers and long decimals back digit for
digit, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from contextlib import closing

import httpx

from mysimbdp.api import create_app
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.tenants import add_tenant

BIG = "123456789012345678901234567890"
DECIMAL = "3.14159265358979323846264338327950288"


async def test_documents_keep_every_digit(operator_platform: Platform) -> None:
    """A stored 30-digit integer and a 36-digit decimal come out of the API as they went in."""
    tenant = add_tenant(operator_platform, "acme", None)
    with closing(operator_platform.tenant_store(tenant.record)) as store:
        doc = f'{{"big":{BIG},"dec":{DECIMAL},"neg":-{BIG}}}'.encode()
        await asyncio.to_thread(store.write, "nums", [("k1", doc)], "test")
    app = create_app(operator_platform, None)  # type: ignore[arg-type]  # reading needs no broker
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        auth = {"Authorization": f"Bearer {tenant.api_key}"}
        response = await client.get("/v1/datasets/nums/documents", headers=auth)
    assert response.status_code == 200, response.text
    body = response.content
    assert f'"big":{BIG}'.encode() in body and f'"dec":{DECIMAL}'.encode() in body and f'"neg":-{BIG}'.encode() in body
