"""POST /v1/files on SQLite and PostgreSQL: a file sent over HTTP is fetched as an inbox file
is (staged, rejected, duplicate), an Idempotency-Key makes a retry store nothing twice, and
every bad upload (name, size, quota, a lying Content-Length, a stalled body) is refused with
its rule and limit while leaving nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mysimbdp.adapters.broker import Broker
from mysimbdp.api import create_app
from mysimbdp.runtime.platform import Platform
from mysimbdp.services import fetch
from mysimbdp.services.tenants import NewTenant, add_tenant
from mysimbdp.settings import Settings

PROFILE = """
formats: [csv]
limits: {max_file_size_bytes: 4096, max_bytes_per_day: 6000}
"""
IDLE_TIMEOUT_S = 0.5


@pytest.fixture
def broker_url(embedded_nats: str) -> str:
    return embedded_nats


@pytest.fixture
def platform(home: Path, meta_url: str, coredms_url: str, pg_prefix: str) -> Iterator[Platform]:
    settings = Settings(
        home=home,
        meta_url=meta_url,
        coredms_url=coredms_url,
        pg_prefix=pg_prefix,
        upload_idle_timeout_s=IDLE_TIMEOUT_S,
    )
    with Platform(settings, {}) as started:
        yield started


@pytest.fixture
def shop(platform: Platform, tmp_path: Path) -> NewTenant:
    profile = tmp_path / "bundle" / "profile.yaml"
    profile.parent.mkdir()
    profile.write_text(PROFILE, encoding="utf-8")
    return add_tenant(platform, "shop", profile)


@pytest.fixture
async def client(platform: Platform, broker: Broker) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(platform, broker), client=("127.0.0.1", 123))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sha256 each fetch gave its scan ('' when the scan had to hash the file itself)."""
    given: list[str] = []
    real = fetch.scan_contained

    def spy(*args: Any, **kwargs: Any) -> Any:
        given.append(kwargs.get("sha256", ""))
        return real(*args, **kwargs)

    monkeypatch.setattr(fetch, "scan_contained", spy)
    return given


def _auth(tenant: NewTenant, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}", **more}


def csv_bytes(rows: int, tag: str = "a") -> bytes:
    return b"sku,qty\n" + b"".join(f"{tag}{i:06d},{i}\n".encode() for i in range(rows))


def left_behind(platform: Platform, tenant: str) -> list[str]:
    """Every name in the tenant's inbox and staging (a refused upload leaves none)."""
    return sorted(p.name for area in ("inbox", "staging") for p in platform.home.area(area, tenant).iterdir())


class Body:
    """A request body sent in ``chunks``, counting how many the server pulled; after them it
    stalls forever when ``stall`` (a client that stops sending)."""

    def __init__(self, chunks: list[bytes], *, stall: bool = False) -> None:
        self.chunks, self.stall, self.pulled = chunks, stall, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk
        if self.stall:
            await asyncio.Event().wait()


async def test_a_raw_upload_is_staged_with_its_id_and_location(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """A raw body is fetched as an inbox file: 201, staged, its sha256, and Location serves it."""
    data = csv_bytes(20)
    response = await client.post("/v1/files", params={"name": "orders.csv"}, content=data, headers=_auth(shop))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "staged" and body["reasons"] == []
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["size_bytes"] == len(data)
    assert response.headers["location"] == f"/v1/files/{body['file_id']}"
    detail = (await client.get(response.headers["location"], headers=_auth(shop))).json()
    assert detail["file"]["name"] == "orders.csv" and detail["file"]["status"] == "staged"
    staged = platform.home.area("staging", "shop") / f"{body['file_id']}.csv"
    assert staged.read_bytes() == data
    assert [p.name for p in platform.home.area("inbox", "shop").iterdir()] == []


async def test_an_upload_is_hashed_once_by_its_receiver_an_inbox_file_by_its_scan(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant, scans: list[str]
) -> None:
    """The receiver's sha256 goes to the scan, which does not hash again; the record's sha256 is
    the file's real one. A file dropped into the inbox (an unknown writer) is hashed by its scan."""
    data = csv_bytes(40, "h")
    real = hashlib.sha256(data).hexdigest()
    response = await client.post("/v1/files", params={"name": "h.csv"}, content=data, headers=_auth(shop))
    assert response.status_code == 201, response.text
    record = platform.meta.get_file(response.json()["file_id"])
    assert record is not None and record.sha256 == real == response.json()["sha256"]
    assert scans == [real]
    dropped = platform.home.area("inbox", "shop") / "dropped.csv"
    dropped.write_bytes(csv_bytes(40, "j"))
    decision = fetch.fetch_file(platform, "shop", dropped)
    assert scans[1:] == [""]  # hashed by the scan
    inbox_record = platform.meta.get_file(decision.file_id)
    assert inbox_record is not None and inbox_record.sha256 == hashlib.sha256(csv_bytes(40, "j")).hexdigest()


async def test_a_multipart_upload_takes_the_file_part(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """The part with a filename is the file, whatever other fields come with it."""
    data = csv_bytes(30, "m")
    response = await client.post(
        "/v1/files",
        params={"name": "form.csv"},
        data={"note": "a field before the file"},
        files={"file": ("local-name.csv", data, "text/csv")},
        headers=_auth(shop),
    )
    assert response.status_code == 201, response.text
    file_id = response.json()["file_id"]
    assert (platform.home.area("staging", "shop") / f"{file_id}.csv").read_bytes() == data


async def test_a_rejected_file_answers_422_with_its_id_and_reasons(client: httpx.AsyncClient, shop: NewTenant) -> None:
    """A file its profile refuses is recorded: 422 with the file id, status rejected and why."""
    response = await client.post("/v1/files", params={"name": "notes.txt"}, content=b"hello\n", headers=_auth(shop))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["status"] == "rejected" and body["file_id"] and response.headers["location"].endswith(body["file_id"])
    assert any("rule format" in reason for reason in body["reasons"])


async def test_the_same_content_again_answers_the_earlier_file(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """Content accepted before: 200 with the earlier file's id and Location, the duplicate's record beside."""
    data = csv_bytes(10, "d")
    first = await client.post("/v1/files", params={"name": "a.csv"}, content=data, headers=_auth(shop))
    again = await client.post("/v1/files", params={"name": "b.csv"}, content=data, headers=_auth(shop))
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["file_id"] == first.json()["file_id"] == again.headers["location"].rsplit("/", 1)[1]
    duplicate = platform.meta.get_file(again.json()["duplicate_file_id"])
    assert duplicate is not None and duplicate.status == "duplicate"


async def test_a_retry_with_the_same_idempotency_key_stores_nothing_twice(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """The second POST with a key answers the first one's status and file; one record only."""
    headers = _auth(shop, **{"Idempotency-Key": "k-1"})
    data = csv_bytes(12, "i")
    first = await client.post("/v1/files", params={"name": "i.csv"}, content=data, headers=headers)
    retry = await client.post("/v1/files", params={"name": "i.csv"}, content=data, headers=headers)
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json()["file_id"] == first.json()["file_id"] and retry.json()["replayed"] is True
    assert [f.id for f in platform.meta.list_files("shop")] == [first.json()["file_id"]]
    other_key = await client.post(
        "/v1/files", params={"name": "i.csv"}, content=data, headers=_auth(shop, **{"Idempotency-Key": "k-2"})
    )
    assert other_key.status_code == 200  # a new key: a new request, answered as the same content


async def test_a_refused_upload_frees_its_idempotency_key(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """A key whose request was refused before storing anything works again for the retry."""
    headers = _auth(shop, **{"Idempotency-Key": "k-big"})
    big = await client.post("/v1/files", params={"name": "k.csv"}, content=csv_bytes(400), headers=headers)
    assert big.status_code == 413
    fixed = await client.post("/v1/files", params={"name": "k.csv"}, content=csv_bytes(10, "k"), headers=headers)
    assert fixed.status_code == 201, fixed.text


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../etc/passwd.csv", "path separator"),
        ("a/b.csv", "path separator"),
        ("..", "directory reference"),
        ("..hidden.csv", "'..'"),
        ("nul\x00.csv", "control characters"),
        ("x" * 296 + ".csv", "longer than"),
    ],
)
async def test_an_unsafe_name_is_refused_before_any_byte_is_read(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant, name: str, problem: str
) -> None:
    """A name with a separator, '..', NUL or 300 characters: 422 naming the tenant, the rule
    and the problem; the body is never pulled."""
    body = Body([csv_bytes(5)])
    response = await client.post("/v1/files", params={"name": name}, content=body, headers=_auth(shop))
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["rule"] == "file_name" and "tenant 'shop'" in answer["error"] and problem in answer["error"]
    assert body.pulled == 0 and left_behind(platform, "shop") == []


async def test_a_content_length_over_the_limit_is_413_at_once(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """Content-Length above max_file_size_bytes: 413 with the limit before the body is read."""
    body = Body([b"x" * 5000])
    headers = _auth(shop, **{"Content-Length": "5000"})
    response = await client.post("/v1/files", params={"name": "big.csv"}, content=body, headers=headers)
    assert response.status_code == 413 and response.json()["limit_bytes"] == 4096
    assert "rule size" in response.json()["error"] and body.pulled == 0
    assert left_behind(platform, "shop") == [] and platform.meta.list_files("shop") == []


async def test_a_body_growing_over_the_limit_stops_midway(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """No Content-Length, the body grows over the size limit: 413 as soon as it does, the
    rest never taken, the partial file gone, nothing recorded."""
    body = Body([b"sku,qty\n" + b"a,1\n" * 256] * 10)  # 10 chunks of 1032 bytes
    response = await client.post("/v1/files", params={"name": "grow.csv"}, content=body, headers=_auth(shop))
    assert response.status_code == 413, response.text
    assert response.json()["rule"] == "size" and response.json()["limit_bytes"] == 4096
    assert body.pulled == 4  # the 4th chunk crosses 4096 bytes
    assert left_behind(platform, "shop") == [] and platform.meta.list_files("shop") == []


async def test_an_upload_over_the_daily_quota_midway_is_429(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """3500 bytes accepted today, a second body streams past the 6000-byte day: 429 with the
    limit, before its end; only the first file is recorded."""
    first = await client.post(
        "/v1/files", params={"name": "q1.csv"}, content=csv_bytes(300)[:3500], headers=_auth(shop)
    )
    assert first.status_code == 201, first.text
    body = Body([csv_bytes(300, "q")[i : i + 1000] for i in range(0, 4000, 1000)])
    response = await client.post("/v1/files", params={"name": "q2.csv"}, content=body, headers=_auth(shop))
    assert response.status_code == 429, response.text
    assert response.json()["rule"] == "daily_bytes" and response.json()["limit_bytes"] == 6000
    assert body.pulled == 3
    assert [f.name for f in platform.meta.list_files("shop")] == ["q1.csv"]
    assert left_behind(platform, "shop") == [f"{first.json()['file_id']}.csv"]


async def test_a_content_length_that_lies_is_400_and_nothing_is_staged(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """A body shorter than its Content-Length: 400 naming both sizes, nothing recorded."""
    data = csv_bytes(20)
    headers = _auth(shop, **{"Content-Length": str(len(data) + 100)})
    response = await client.post("/v1/files", params={"name": "lie.csv"}, content=Body([data]), headers=headers)
    assert response.status_code == 400, response.text
    answer: dict[str, Any] = response.json()
    assert answer["rule"] == "content_length" and answer["declared_bytes"] == len(data) + 100
    assert left_behind(platform, "shop") == [] and platform.meta.list_files("shop") == []


async def test_a_stalled_body_times_out_with_408_and_nothing_staged(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """A client that stops sending midway: 408 after the idle timeout, nothing kept."""
    body = Body([csv_bytes(20)], stall=True)
    response = await client.post("/v1/files", params={"name": "slow.csv"}, content=body, headers=_auth(shop))
    assert response.status_code == 408, response.text
    assert response.json()["rule"] == "idle_timeout" and response.json()["timeout_s"] == IDLE_TIMEOUT_S
    assert left_behind(platform, "shop") == [] and platform.meta.list_files("shop") == []


async def test_an_upload_needs_a_tenant_key(client: httpx.AsyncClient, platform: Platform, shop: NewTenant) -> None:
    """No key: 401, nothing read."""
    response = await client.post("/v1/files", params={"name": "a.csv"}, content=b"a\n1\n")
    assert response.status_code == 401 and left_behind(platform, "shop") == []
