"""tus resumable uploads under /v1/uploads/ on SQLite and PostgreSQL: creation, offsets,
checksums, termination and expiry, each tenant seeing only its own uploads; every bad request
(wrong checksum, wrong offset, a body cut short or stalled, over a limit) is refused with its
rule while the bytes already held stay exact."""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from mysimbdp.adapters.broker import Broker
from mysimbdp.api import create_app
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.tenants import NewTenant, add_tenant
from mysimbdp.settings import Settings
from tests.helpers import until_async
from tests.integration.api.routes.test_files import Body, csv_bytes, scans

PROFILE = """
formats: [csv]
limits: {max_file_size_bytes: 40000, max_bytes_per_day: 60000}
"""
IDLE_TIMEOUT_S = 0.5
_ = scans  # a fixture (the sha256 each fetch gave its scan)
EXPIRE_S = 600.0
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture
def broker_url(embedded_nats: str) -> str:
    return embedded_nats


def _platform(home: Path, meta_url: str, coredms_url: str, pg_prefix: str, expire_s: float) -> Platform:
    settings = Settings(
        home=home,
        meta_url=meta_url,
        coredms_url=coredms_url,
        pg_prefix=pg_prefix,
        upload_idle_timeout_s=IDLE_TIMEOUT_S,
        upload_expire_s=expire_s,
    )
    return Platform(settings, {})


@pytest.fixture
def expire_s() -> float:
    return EXPIRE_S


@pytest.fixture
def platform(home: Path, meta_url: str, coredms_url: str, pg_prefix: str, expire_s: float) -> Iterator[Platform]:
    with _platform(home, meta_url, coredms_url, pg_prefix, expire_s) as started:
        yield started


@pytest.fixture
def shop(platform: Platform, tmp_path: Path) -> NewTenant:
    profile = tmp_path / "bundle" / "profile.yaml"
    profile.parent.mkdir()
    profile.write_text(PROFILE, encoding="utf-8")
    return add_tenant(platform, "shop", profile)


@pytest.fixture
def other(platform: Platform) -> NewTenant:
    return add_tenant(platform, "other", None)


@pytest.fixture
async def client(platform: Platform, broker: Broker) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(platform, broker), client=("127.0.0.1", 123))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def _auth(tenant: NewTenant, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}", **TUS, **more}


def _metadata(name: str) -> str:
    return "filename " + base64.b64encode(name.encode()).decode()


def _sha1(data: bytes) -> str:
    return "sha1 " + base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode()


async def _create(client: httpx.AsyncClient, tenant: NewTenant, name: str, length: int) -> str:
    response = await client.post(
        "/v1/uploads/", headers=_auth(tenant, **{"Upload-Length": str(length), "Upload-Metadata": _metadata(name)})
    )
    assert response.status_code == 201, response.text
    return str(response.headers["location"])


async def _patch(
    client: httpx.AsyncClient, tenant: NewTenant, url: str, offset: int, body: bytes | Body, **headers: str
) -> httpx.Response:
    return await client.patch(
        url, content=body, headers=_auth(tenant, **OFFSET_TYPE, **{"Upload-Offset": str(offset)}, **headers)
    )


async def _offset(client: httpx.AsyncClient, tenant: NewTenant, url: str) -> int:
    response = await client.head(url, headers=_auth(tenant))
    assert response.status_code == 200, response.status_code
    return int(response.headers["upload-offset"])


async def test_options_names_the_version_extensions_and_checksums(client: httpx.AsyncClient) -> None:
    """OPTIONS needs no key and says what this server speaks."""
    response = await client.options("/v1/uploads/")
    assert response.status_code == 204
    assert response.headers["tus-version"] == "1.0.0"
    assert set(response.headers["tus-extension"].split(",")) == {"creation", "termination", "checksum", "expiration"}
    assert "sha1" in response.headers["tus-checksum-algorithm"].split(",")


async def test_an_upload_in_checksummed_chunks_is_fetched_on_its_last_byte(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """Created with its length and name, sent in two checksummed PATCHes; the last one answers
    with the staged file's id, whose bytes are exactly the upload's."""
    data = csv_bytes(500)
    created = await client.post(
        "/v1/uploads/",
        headers=_auth(shop, **{"Upload-Length": str(len(data)), "Upload-Metadata": _metadata("readings.csv")}),
    )
    assert created.status_code == 201 and created.headers["tus-resumable"] == "1.0.0"
    assert "GMT" in created.headers["upload-expires"]
    url = created.headers["location"]
    assert url.startswith("/v1/uploads/") and created.json()["upload_id"] == url.rsplit("/", 1)[1]
    assert await _offset(client, shop, url) == 0
    first = await _patch(client, shop, url, 0, data[:5000], **{"Upload-Checksum": _sha1(data[:5000])})
    assert first.status_code == 204 and first.headers["upload-offset"] == "5000"
    assert "mysimbdp-file-id" not in first.headers
    last = await _patch(client, shop, url, 5000, data[5000:], **{"Upload-Checksum": _sha1(data[5000:])})
    assert last.status_code == 204 and last.headers["upload-offset"] == str(len(data))
    assert last.headers["mysimbdp-file-status"] == "staged"
    file_id = last.headers["mysimbdp-file-id"]
    assert (platform.home.area("staging", "shop") / f"{file_id}.csv").read_bytes() == data
    state = (await client.get(url, headers=_auth(shop))).json()
    assert state["complete"] is True and state["file_id"] == file_id and state["offset_bytes"] == len(data)
    detail = (await client.get(f"/v1/files/{file_id}", headers=_auth(shop))).json()
    assert detail["file"]["name"] == "readings.csv" and detail["file"]["sha256"] == hashlib.sha256(data).hexdigest()


async def test_an_upload_in_one_patch_is_hashed_once_in_several_by_its_scan(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant, scans: list[str]
) -> None:
    """A PATCH from offset 0 that completes the upload hashed every byte: its scan is given the
    sha256 and does not hash again; an upload in several PATCHes (perhaps several processes) is
    hashed by its scan. Either way the record's sha256 is the file's."""
    data = csv_bytes(300, "o")
    url = await _create(client, shop, "one.csv", len(data))
    one = await _patch(client, shop, url, 0, data)
    assert one.headers["mysimbdp-file-status"] == "staged", one.text
    record = platform.meta.get_file(one.headers["mysimbdp-file-id"])
    assert record is not None and record.sha256 == hashlib.sha256(data).hexdigest()
    assert scans == [record.sha256]
    data2 = csv_bytes(300, "t")
    url2 = await _create(client, shop, "two.csv", len(data2))
    assert (await _patch(client, shop, url2, 0, data2[:1000])).status_code == 204
    two = await _patch(client, shop, url2, 1000, data2[1000:])
    record2 = platform.meta.get_file(two.headers["mysimbdp-file-id"])
    assert record2 is not None and record2.sha256 == hashlib.sha256(data2).hexdigest()
    assert scans[1:] == [""]


async def test_a_wrong_checksum_is_460_and_keeps_nothing_of_the_patch(
    client: httpx.AsyncClient, shop: NewTenant
) -> None:
    """A PATCH whose bytes do not match Upload-Checksum: 460, the offset where it was; the same
    bytes with the right checksum are then taken."""
    data = csv_bytes(100)
    url = await _create(client, shop, "c.csv", len(data))
    await _patch(client, shop, url, 0, data[:1000])
    wrong = await _patch(client, shop, url, 1000, data[1000:], **{"Upload-Checksum": _sha1(b"something else")})
    assert wrong.status_code == 460 and wrong.json()["rule"] == "checksum", wrong.text
    assert await _offset(client, shop, url) == 1000
    unknown = await _patch(client, shop, url, 1000, data[1000:], **{"Upload-Checksum": "crc99 AAAA"})
    assert unknown.status_code == 400 and unknown.json()["rule"] == "checksum_algorithm"
    right = await _patch(client, shop, url, 1000, data[1000:], **{"Upload-Checksum": _sha1(data[1000:])})
    assert right.status_code == 204 and right.headers["mysimbdp-file-status"] == "staged"


async def test_an_offset_that_is_not_the_servers_is_409(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """A PATCH at an offset the server does not hold: 409 naming the server's offset; no byte
    written twice, none skipped."""
    data = csv_bytes(100)
    url = await _create(client, shop, "o.csv", len(data))
    await _patch(client, shop, url, 0, data[:800])
    for offset in (0, 500, 900):
        response = await _patch(client, shop, url, offset, data[offset:])
        assert response.status_code == 409 and response.json()["offset_bytes"] == 800, response.text
    assert await _offset(client, shop, url) == 800
    done = await _patch(client, shop, url, 800, data[800:])
    file_id = done.headers["mysimbdp-file-id"]
    assert (platform.home.area("staging", "shop") / f"{file_id}.csv").read_bytes() == data


async def test_another_tenants_upload_is_404_and_stays_intact(
    client: httpx.AsyncClient, shop: NewTenant, other: NewTenant
) -> None:
    """Another tenant's upload id is 404 for HEAD, GET, PATCH and DELETE, like an unknown one;
    the owner's upload is untouched."""
    url = await _create(client, shop, "mine.csv", 2000)
    await _patch(client, shop, url, 0, csv_bytes(10))
    held = await _offset(client, shop, url)
    for response in (
        await client.head(url, headers=_auth(other)),
        await client.get(url, headers=_auth(other)),
        await _patch(client, other, url, held, b"x\n"),
        await client.delete(url, headers=_auth(other)),
        await client.head("/v1/uploads/u-unknown", headers=_auth(shop)),
    ):
        assert response.status_code == 404, (response.request.method, response.status_code)
    assert await _offset(client, shop, url) == held


@pytest.mark.parametrize("expire_s", [1.0])
async def test_an_expired_upload_is_410_and_its_bytes_are_gone(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """After MYSIMBDP_UPLOAD_EXPIRE_S an unfinished upload answers 410, its partial file is
    removed and its length no longer holds the daily quota."""
    url = await _create(client, shop, "late.csv", 30000)
    await _patch(client, shop, url, 0, csv_bytes(10))
    inbox = platform.home.area("inbox", "shop")
    assert [p.name for p in inbox.iterdir()] == [f".tus-{url.rsplit('/', 1)[1]}"]

    expires_at = (await client.get(url, headers=_auth(shop))).json()["expires_at"]
    await until_async(lambda: time.time() > expires_at, 30, "the upload's expiry")
    head = await client.head(url, headers=_auth(shop))
    assert head.status_code == 410 and head.headers["tus-resumable"] == "1.0.0"
    patch = await _patch(client, shop, url, 0, b"sku,qty\n")
    assert patch.status_code == 410 and patch.json()["rule"] == "expired"
    assert list(inbox.iterdir()) == []
    assert (
        await client.post(
            "/v1/uploads/", headers=_auth(shop, **{"Upload-Length": "30000", "Upload-Metadata": _metadata("again.csv")})
        )
    ).status_code == 201  # the expired one's 30000 bytes are free again (60000 a day)


async def test_creation_is_refused_over_the_size_limit_the_day_and_for_unsafe_names(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """Upload-Length over max_file_size_bytes: 413; unfinished uploads hold their length
    against the day's bytes: 429 with the limit; unsafe names: 422; nothing created."""

    async def create(name: str, length: int) -> httpx.Response:
        headers = {"Upload-Length": str(length), "Upload-Metadata": _metadata(name)}
        return await client.post("/v1/uploads/", headers=_auth(shop, **headers))

    too_big = await create("big.csv", 40001)
    assert too_big.status_code == 413 and too_big.json()["limit_bytes"] == 40000
    assert (await create("a.csv", 35000)).status_code == 201
    over_day = await create("b.csv", 30000)  # 35000 held + 30000 > 60000
    assert over_day.status_code == 429, over_day.text
    assert over_day.json()["rule"] == "daily_bytes" and over_day.json()["limit_bytes"] == 60000
    for name in ("a/b.csv", "..", "nul\x00.csv", "x" * 296 + ".csv", ""):
        response = await create(name, 10)
        assert response.status_code == 422 and response.json()["rule"] == "file_name", name
        assert "tenant 'shop'" in response.json()["error"]
    assert len(list(platform.home.area("inbox", "shop").iterdir())) == 1  # a.csv's partial file only


async def test_bytes_past_the_upload_length_are_413(client: httpx.AsyncClient, shop: NewTenant) -> None:
    """A PATCH that would go past Upload-Length: 413 at once from its Content-Length; nothing written."""
    url = await _create(client, shop, "l.csv", 1000)
    response = await _patch(client, shop, url, 0, csv_bytes(100))
    assert response.status_code == 413 and response.json()["rule"] == "upload_length", response.text
    assert await _offset(client, shop, url) == 0


async def test_a_truncated_patch_keeps_what_arrived_and_resumes(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """A body shorter than its Content-Length: 400; without a checksum the bytes that arrived
    are kept (HEAD says so) and the upload resumes from there; with one, none are kept."""
    data = csv_bytes(400)
    url = await _create(client, shop, "t.csv", len(data))
    cut = await _patch(client, shop, url, 0, Body([data[:1500]]), **{"Content-Length": "3000"})
    assert cut.status_code == 400 and cut.json()["rule"] == "content_length", cut.text
    assert await _offset(client, shop, url) == 1500
    checked = {"Content-Length": "3000", "Upload-Checksum": _sha1(data[1500:4500])}
    cut_checked = await _patch(client, shop, url, 1500, Body([data[1500:3000]]), **checked)
    assert cut_checked.status_code == 400
    assert await _offset(client, shop, url) == 1500
    done = await _patch(client, shop, url, 1500, data[1500:])
    file_id = done.headers["mysimbdp-file-id"]
    assert (platform.home.area("staging", "shop") / f"{file_id}.csv").read_bytes() == data


def _locked(path: Path) -> bool:
    """Whether a writer holds the upload's lock (its flock cannot be taken)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def test_a_stalled_patch_times_out_and_a_second_writer_is_refused_meanwhile(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """While a PATCH's body stalls, another PATCH of the upload is 409 (upload_busy); the stalled
    one ends 408 after the idle timeout, keeping the bytes it got."""
    data = csv_bytes(200)
    url = await _create(client, shop, "s.csv", len(data))
    stalled = asyncio.create_task(_patch(client, shop, url, 0, Body([data[:700]], stall=True)))
    partial = platform.home.area("inbox", "shop") / f".tus-{url.rsplit('/', 1)[1]}"
    await until_async(lambda: _locked(partial), 30, "the stalled PATCH to hold the upload")
    busy = await _patch(client, shop, url, 0, data)
    response = await stalled
    assert response.status_code == 408 and response.json()["rule"] == "idle_timeout", response.text
    assert busy.status_code == 409 and busy.json()["rule"] == "upload_busy", busy.text
    assert await _offset(client, shop, url) == 700


async def test_termination_removes_the_upload_and_frees_its_quota(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """DELETE: 204, then 404; its bytes are gone and its length no longer holds the day's quota."""
    url = await _create(client, shop, "d.csv", 35000)
    await _patch(client, shop, url, 0, csv_bytes(10))
    deleted = await client.delete(url, headers=_auth(shop))
    assert deleted.status_code == 204 and deleted.headers["tus-resumable"] == "1.0.0"
    assert (await client.head(url, headers=_auth(shop))).status_code == 404
    assert list(platform.home.area("inbox", "shop").iterdir()) == []
    assert (
        await client.post(
            "/v1/uploads/", headers=_auth(shop, **{"Upload-Length": "35000", "Upload-Metadata": _metadata("e.csv")})
        )
    ).status_code == 201


async def test_tus_requests_need_the_version_header_and_the_offset_content_type(
    client: httpx.AsyncClient, shop: NewTenant
) -> None:
    """No Tus-Resumable: 412 with Tus-Version; a PATCH of another content type: 415."""
    url = await _create(client, shop, "v.csv", 100)
    headers = {"Authorization": f"Bearer {shop.api_key}"}
    no_version = await client.head(url, headers=headers)
    assert no_version.status_code == 412 and no_version.headers["tus-version"] == "1.0.0"
    wrong_type = await client.patch(url, content=b"a", headers=_auth(shop, **{"Upload-Offset": "0"}))
    assert wrong_type.status_code == 415 and wrong_type.json()["rule"] == "content_type"
