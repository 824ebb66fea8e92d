"""POST /v1/files with ``Prefer: respond-async`` on SQLite and PostgreSQL: 202 as soon as the
body is on disk and kept under its file id, the same checks after the answer (staged,
rejected with reasons, duplicate), an Idempotency-Key replaying the 202, refusals while
reading unchanged, and a kept file that no check ran on (a crash after the 202) checked by
fetchdata under the same id."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mysimbdp.api.routes.files import wants_async
from mysimbdp.domain.records import FileRecord
from mysimbdp.managers.fetchdata import FetchData
from mysimbdp.runtime.platform import Platform
from mysimbdp.services import fetch
from mysimbdp.services.fetch import RECEIVED_PREFIX, Received, received_name
from mysimbdp.services.tenants import NewTenant, add_tenant
from mysimbdp.services.upload import keep_received, partial_path
from mysimbdp.settings import Settings
from tests.helpers import until_async
from tests.integration.api.routes.test_files import (
    IDLE_TIMEOUT_S,
    _auth,
    broker_url,
    client,
    csv_bytes,
    left_behind,
    scans,
    shop,
)

_ = (broker_url, client, scans, shop)  # fixtures


@pytest.fixture
def platform(home: Path, meta_url: str, coredms_url: str, pg_prefix: str) -> Iterator[Platform]:
    """As test_files' platform, and fetchdata takes a file without waiting for it to settle."""
    settings = Settings(
        home=home,
        meta_url=meta_url,
        coredms_url=coredms_url,
        pg_prefix=pg_prefix,
        upload_idle_timeout_s=IDLE_TIMEOUT_S,
        settle_s=0.0,
    )
    with Platform(settings, {}) as started:
        yield started


ASYNC = {"Prefer": "respond-async"}


def _decided(platform: Platform, file_id: str, status: str = "") -> Any:
    def check() -> FileRecord | None:
        record = platform.meta.get_file(file_id)
        return record if record is not None and (not status or record.status == status) else None

    return check


@pytest.mark.parametrize(
    ("prefer", "wanted"),
    [
        ("respond-async", True),
        ("Respond-Async", True),
        ("return=minimal, respond-async; wait=10", True),
        ("wait=10,respond-async", True),
        ("return=representation", False),
        ("respond-asynchronous", False),
        (None, False),
        ("", False),
    ],
)
def test_the_prefer_header_is_read_as_rfc_7240_says(prefer: str | None, wanted: bool) -> None:
    assert wants_async(prefer) is wanted


async def test_respond_async_answers_202_then_the_file_is_staged(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant, scans: list[str]
) -> None:
    """202 checking with the file id, its sha256, Location and Preference-Applied; the checks run
    after it (hashing nothing again) and GET Location ends at staged, the bytes exact."""
    data = csv_bytes(50, "s")
    response = await client.post("/v1/files", params={"name": "later.csv"}, content=data, headers=_auth(shop, **ASYNC))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "checking" and body["reasons"] == [] and body["size_bytes"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert response.headers["location"] == f"/v1/files/{body['file_id']}" == body["location"]
    assert response.headers["preference-applied"] == "respond-async"
    record = await until_async(_decided(platform, body["file_id"], "staged"), 30, "the file staged")
    assert record.sha256 == body["sha256"] and scans == [body["sha256"]]
    detail = (await client.get(response.headers["location"], headers=_auth(shop))).json()
    assert detail["file"]["status"] == "staged" and detail["file"]["name"] == "later.csv"
    assert (platform.home.area("staging", "shop") / f"{body['file_id']}.csv").read_bytes() == data
    assert left_behind(platform, "shop") == [f"{body['file_id']}.csv"]  # nothing waits in the inbox


async def test_respond_async_of_a_file_that_breaks_its_profile_ends_rejected_with_reasons(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """The profile's checks run after the 202: GET tells rejected and why."""
    response = await client.post(
        "/v1/files", params={"name": "bad.csv"}, content=b"sku,qty\na,1,extra\nb\n", headers=_auth(shop, **ASYNC)
    )
    assert response.status_code == 202, response.text
    file_id = response.json()["file_id"]
    await until_async(_decided(platform, file_id, "rejected"), 30, "the file rejected")
    detail = (await client.get(f"/v1/files/{file_id}", headers=_auth(shop))).json()
    assert detail["file"]["status"] == "rejected" and detail["file"]["reasons"], detail
    assert any("rule" in reason for reason in detail["file"]["reasons"])


async def test_respond_async_of_content_accepted_before_ends_duplicate(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """Content staged before: 202, then this upload's record is a duplicate naming the earlier file."""
    data = csv_bytes(10, "d")
    first = await client.post("/v1/files", params={"name": "a.csv"}, content=data, headers=_auth(shop))
    assert first.status_code == 201
    again = await client.post("/v1/files", params={"name": "b.csv"}, content=data, headers=_auth(shop, **ASYNC))
    assert again.status_code == 202
    record = await until_async(_decided(platform, again.json()["file_id"], "duplicate"), 30, "a duplicate")
    assert any(first.json()["file_id"] in reason for reason in record.reasons)


async def test_an_idempotency_key_replays_the_202_with_the_status_now(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """A retry with the key answers 202 and the same file, its status as it is now; one record."""
    headers = _auth(shop, **ASYNC, **{"Idempotency-Key": "async-1"})
    data = csv_bytes(12, "k")
    first = await client.post("/v1/files", params={"name": "k.csv"}, content=data, headers=headers)
    assert first.status_code == 202
    file_id = first.json()["file_id"]
    await until_async(_decided(platform, file_id, "staged"), 30, "the file staged")
    retry = await client.post("/v1/files", params={"name": "k.csv"}, content=data, headers=headers)
    assert retry.status_code == 202 and retry.json()["file_id"] == file_id and retry.json()["replayed"] is True
    assert retry.json()["status"] == "staged"
    assert [f.id for f in platform.meta.list_files("shop")] == [file_id]


async def test_an_idempotency_key_replays_a_202_whose_checks_have_not_run(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """A retry while the first upload waits for its checks: 202 checking, the same file (its name
    and sha256 from its record), nothing stored twice; GET Location answers checking meanwhile."""
    tenant = "shop"
    data = csv_bytes(5, "w")
    record, kept = keep_received(platform, tenant, _partial(platform, tenant, data), "w.csv", _received(data))
    file_id = record.id
    platform.meta.uploads.reserve_key(tenant, "async-2", 0.0, -1.0)
    platform.meta.uploads.settle_key(tenant, "async-2", file_id, 202)
    retry = await client.post(
        "/v1/files",
        params={"name": "w.csv"},
        content=csv_bytes(5, "w"),
        headers=_auth(shop, **ASYNC, **{"Idempotency-Key": "async-2"}),
    )
    assert retry.status_code == 202, retry.text
    answer = retry.json()
    assert answer["file_id"] == file_id and answer["status"] == "checking" and answer["name"] == "w.csv"
    assert answer["sha256"] == hashlib.sha256(data).hexdigest() and answer["size_bytes"] == len(data)
    assert kept.exists() and [(f.id, str(f.status)) for f in platform.meta.list_files(tenant)] == [
        (file_id, "checking")
    ]
    detail = await client.get(f"/v1/files/{file_id}", headers=_auth(shop))
    assert detail.status_code == 200, detail.text
    assert detail.json()["file"]["status"] == "checking" and detail.json()["file"]["name"] == "w.csv"


async def test_refusals_while_reading_are_answered_as_without_the_header(
    client: httpx.AsyncClient, platform: Platform, shop: NewTenant
) -> None:
    """Over the size limit, an unsafe name: the same refusals, no 202, nothing kept."""
    big = await client.post(
        "/v1/files", params={"name": "big.csv"}, content=csv_bytes(400), headers=_auth(shop, **ASYNC)
    )
    assert big.status_code == 413 and big.json()["rule"] == "size"
    bad = await client.post("/v1/files", params={"name": "../x.csv"}, content=b"a\n", headers=_auth(shop, **ASYNC))
    assert bad.status_code == 422 and bad.json()["rule"] == "file_name"
    assert "preference-applied" not in big.headers and left_behind(platform, "shop") == []


async def test_a_kept_file_left_unchecked_is_checked_by_fetchdata_under_its_id(
    platform: Platform, shop: NewTenant
) -> None:
    """A crash right after the 202 leaves the kept file: fetchdata (after its reconcile) checks
    it under the file id the 202 gave, once."""
    data = csv_bytes(30, "r")
    record, kept = keep_received(platform, "shop", _partial(platform, "shop", data), "recovered.csv", _received(data))
    file_id = record.id
    assert kept.name == received_name(file_id, "recovered.csv") and kept.name.startswith(RECEIVED_PREFIX)
    fetcher = FetchData(platform)
    decisions = await fetcher.scan_once()
    assert [(d.file_id, str(d.status)) for d in decisions] == [(file_id, "staged")]
    record = platform.meta.get_file(file_id)
    assert record is not None and record.name == "recovered.csv" and record.sha256 == hashlib.sha256(data).hexdigest()
    assert left_behind(platform, "shop") == [f"{file_id}.csv"]
    assert await fetcher.scan_once() == [] and len(platform.meta.list_files("shop")) == 1


def test_a_name_made_up_for_another_tenants_file_id_is_a_plain_inbox_file(platform: Platform, shop: NewTenant) -> None:
    """A tenant dropping a kept-upload name with someone else's file id gets a new id: nothing
    of the other file is touched."""
    first = fetch.fetch_file(platform, "shop", _dropped(platform, "shop", "a.csv", csv_bytes(3, "a")))
    add_tenant(platform, "other", None)
    made_up = _dropped(platform, "other", received_name(first.file_id, "b.csv"), csv_bytes(3, "b"))
    decision = fetch.fetch_file(platform, "other", made_up)
    assert decision.file_id != first.file_id and decision.tenant == "other"
    earlier = platform.meta.get_file(first.file_id)
    assert earlier is not None and earlier.tenant == "shop" and str(earlier.status) == "staged"


def test_a_kept_upload_name_with_no_record_is_a_plain_inbox_file_under_a_new_id(
    platform: Platform, shop: NewTenant
) -> None:
    """A tenant cannot choose its file's id: a kept-upload name whose id has no ``checking``
    record of the tenant (one the tenant made up) is fetched under an id of the platform's."""
    chosen = "f" + "0" * 20
    decision = fetch.fetch_file(platform, "shop", _dropped(platform, "shop", received_name(chosen, "c.csv"), b"a\n1\n"))
    assert decision.file_id != chosen and platform.meta.get_file(chosen) is None
    record = platform.meta.get_file(decision.file_id)
    assert record is not None and record.name == received_name(chosen, "c.csv")


def _received(data: bytes) -> Received:
    return Received(hashlib.sha256(data).hexdigest(), len(data))


def _partial(platform: Platform, tenant: str, data: bytes) -> Path:
    partial = partial_path(platform, tenant)
    partial.write_bytes(data)
    return partial


def _dropped(platform: Platform, tenant: str, name: str, data: bytes) -> Path:
    path = platform.home.area("inbox", tenant) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
