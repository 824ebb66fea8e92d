"""The read API (GET /v1/datasets, /documents, /count) on SQLite and PostgreSQL: filters,
projections, sorts, cursors while documents arrive, exports read back, tenant scoping, and
a clear refusal for each bad input."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow.parquet as pq
import pytest

from mysimbdp.api import create_app
from mysimbdp.domain import exactjson
from mysimbdp.domain.docfilter import MAX_DEPTH, MAX_IN
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.tenants import NewTenant, add_tenant

BIG = "123456789012345678901234567890"
PROFILE = "indexes: [[n], [m.t]]\n"
DOCS = "/v1/datasets/things/documents"


def _doc(i: int) -> dict[str, Any]:
    return {"i": i, "n": i % 5, "m": {"t": f"v{i % 3}", "deep": {"x": i}}, "name": f"row {i}"}


def _write(platform: Platform, t: NewTenant, docs: dict[str, Any], dataset: str = "things") -> None:
    profile = platform.tenant(t.record.id)[1]
    with closing(platform.tenant_store(t.record)) as store:
        records = [(key, doc if isinstance(doc, bytes) else orjson.dumps(doc)) for key, doc in docs.items()]
        store.write(dataset, records, "test", profile.write_for(dataset))


def _indexed_tenant(platform: Platform, directory: Path, prefix: str, n: int) -> NewTenant:
    path = directory / "profile.yaml"
    path.parent.mkdir()
    path.write_text(PROFILE, encoding="utf-8")
    t = add_tenant(platform, f"{prefix}{uuid.uuid4().hex[:8]}", path)
    _write(platform, t, {f"k{i:03d}": _doc(i) for i in range(n)})
    return t


@pytest.fixture
def tenant(operator_platform: Platform, tmp_path: Path) -> NewTenant:
    """A tenant whose profile indexes n and m.t, with 40 documents in dataset things."""
    return _indexed_tenant(operator_platform, tmp_path / "bundle", "t", 40)


@pytest.fixture
def other(operator_platform: Platform) -> NewTenant:
    t = add_tenant(operator_platform, f"o{uuid.uuid4().hex[:8]}", None)
    _write(operator_platform, t, {"secret": {"i": -1}}, "theirs")
    return t


@pytest.fixture
async def client(operator_platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(operator_platform, None)  # type: ignore[arg-type]  # reading needs no broker
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


def _auth(t: NewTenant, accept: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {t.api_key}", **({"Accept": accept} if accept else {})}


async def _get(
    client: httpx.AsyncClient, t: NewTenant, path: str, accept: str | None = None, **params: Any
) -> httpx.Response:
    return await client.get(path, params=params, headers=_auth(t, accept))


async def test_offset_paging_is_kept(client: httpx.AsyncClient, tenant: NewTenant) -> None:
    """limit and offset page by key as before."""
    page = await _get(client, tenant, DOCS, limit=2, offset=3)
    assert page.status_code == 200 and [d["i"] for d in page.json()] == [3, 4]


async def test_filter_on_nested_fields_projection_and_indexed_sort(
    client: httpx.AsyncClient, tenant: NewTenant
) -> None:
    """A filter on nested paths with $or/$in, fields=, and a descending sort on an indexed field."""
    where = orjson.dumps({"m.t": "v1", "m.deep.x": {"$lt": 30}, "$or": [{"n": {"$in": [1, 2]}}, {"i": 4}]}).decode()
    answer = await _get(client, tenant, DOCS, filter=where, fields="i,m.t", sort="-n", limit=100)
    assert answer.status_code == 200, answer.text
    want = sorted(
        ((i % 5, f"k{i:03d}", i) for i in range(30) if i % 3 == 1 and (i % 5 in (1, 2) or i == 4)), reverse=True
    )
    assert answer.json() == [{"i": i, "m": {"t": "v1"}} for _, _, i in want]
    count = await _get(client, tenant, "/v1/datasets/things/count", filter=where)
    assert count.json() == {"dataset": "things", "count": len(want)}


async def test_a_cursor_walk_sees_each_document_once_while_more_arrive(
    client: httpx.AsyncClient, operator_platform: Platform, tenant: NewTenant
) -> None:
    """Paging by cursor (sorted by an indexed field) while documents are inserted between
    pages sees every document there at the start exactly once, and none twice."""
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 7, "sort": "n"}
    extra = 1000
    while True:
        answer = await _get(client, tenant, DOCS, **params)
        assert answer.status_code == 200, answer.text
        seen += [d["i"] for d in answer.json()]
        token = answer.headers.get("X-Next-Cursor")
        if token is None:
            break
        assert 'rel="next"' in answer.headers["Link"]
        await asyncio.to_thread(_write, operator_platform, tenant, {f"new{extra}": _doc(extra)})
        extra += 1
        params["cursor"] = token
    assert sorted(i for i in seen if i < 1000) == list(range(40)) and len(set(seen)) == len(seen)


async def test_forged_altered_and_foreign_cursors_are_400(
    client: httpx.AsyncClient, operator_platform: Platform, tenant: NewTenant, tmp_path: Path
) -> None:
    """A cursor made up, altered, or issued for another filter, sort or tenant is 400 naming the caller."""
    first = await _get(client, tenant, DOCS, limit=5)
    token = first.headers["X-Next-Cursor"]
    version, payload, mac = token.split(".")
    altered = f"{version}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{mac}"
    twin = _indexed_tenant(operator_platform, tmp_path / "twin", "w", 10)
    for who, params in [
        (tenant, {"cursor": "1.eyJkIjoidGhpbmdzIn0.AAAA"}),
        (tenant, {"cursor": altered}),
        (tenant, {"cursor": "garbage"}),
        (tenant, {"cursor": token, "filter": '{"n": 1}'}),
        (tenant, {"cursor": token, "sort": "n"}),
        (twin, {"cursor": token}),
    ]:
        answer = await _get(client, who, DOCS, **params)
        assert answer.status_code == 400, (params, answer.text)
        body = answer.json()
        assert body["rule"] == "cursor" and repr(who.record.id) in body["error"] and "'things'" in body["error"]


async def test_another_tenants_dataset_is_404_as_is_a_missing_one(
    client: httpx.AsyncClient, tenant: NewTenant, other: NewTenant
) -> None:
    """A dataset of another tenant answers exactly as one nobody has: 404 naming the caller."""
    for path in ("/v1/datasets/theirs/documents", "/v1/datasets/theirs/count", "/v1/datasets/nobody/documents"):
        answer = await _get(client, tenant, path)
        assert answer.status_code == 404, answer.text
        assert repr(tenant.record.id) in answer.json()["error"] and "secret" not in answer.text
    export = await _get(client, tenant, "/v1/datasets/theirs/documents", accept="application/x-ndjson")
    assert export.status_code == 404
    theirs = await _get(client, other, "/v1/datasets/theirs/documents")
    assert theirs.json() == [{"i": -1}]
    bad = await _get(client, tenant, "/v1/datasets/Bad-Name/count")
    assert bad.status_code == 422 and repr(tenant.record.id) in bad.json()["error"]


async def test_the_datasets_list_has_counts_bytes_and_the_last_write(
    client: httpx.AsyncClient, tenant: NewTenant, other: NewTenant
) -> None:
    """GET /v1/datasets lists the caller's datasets only, with count, bytes and last write."""
    answer = await _get(client, tenant, "/v1/datasets")
    assert answer.status_code == 200, answer.text
    [things] = answer.json()
    assert things["dataset"] == "things" and things["count"] == 40 and things["size_bytes"] > 0
    assert things["last_write"].endswith("Z")


def _deep(depth: int) -> str:
    node: dict[str, Any] = {"a": 1}
    for _ in range(depth):
        node = {"$and": [node]}
    return orjson.dumps(node).decode()


BAD = [
    ({"offset": "9223372036854775808"}, "param_range", "9223372036854775808"),
    ({"offset": "-1"}, "param_range", "-1"),
    ({"limit": "0"}, "param_range", "1000"),
    ({"limit": "1001"}, "param_range", "1000"),
    ({"limit": "ten"}, "param", "ten"),
    ({"filter": '{"a": 1,}'}, "filter_json", "character"),
    ({"filter": '{"a": {"$regex": "x"}}'}, "filter_operator", "$nin"),
    ({"filter": '{"a": {"$gt": {"b": 1}}}'}, "filter_type", "$gt"),
    ({"filter": orjson.dumps({"a": {"$in": list(range(MAX_IN + 1))}}).decode()}, "filter_in_limit", str(MAX_IN)),
    ({"filter": _deep(MAX_DEPTH + 1)}, "filter_depth", str(MAX_DEPTH)),
    ({"sort": "name"}, "sort", "m.t"),
    ({"fields": "a,,b"}, "fields", "empty"),
]


@pytest.mark.parametrize(("params", "rule", "says"), BAD)
async def test_each_bad_input_is_422_naming_the_rule_and_value(
    client: httpx.AsyncClient, tenant: NewTenant, params: dict[str, str], rule: str, says: str
) -> None:
    """Each bad parameter: 422 with the rule, naming the tenant, the dataset and the value or limit."""
    answer = await _get(client, tenant, DOCS, **params)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["rule"] == rule and says in body["error"], body
    assert repr(tenant.record.id) in body["error"] and "'things'" in body["error"]
    if rule == "filter_json":
        assert body["position"] == 7  # the offending character: the closing brace after a comma
    if rule == "filter_operator":
        assert "'$regex'" in body["error"] and "$exists" in body["supported"]


async def test_count_refuses_a_bad_filter_and_an_unknown_accept_is_406(
    client: httpx.AsyncClient, tenant: NewTenant
) -> None:
    """The count checks its filter as the documents do; an Accept of no served type is 406."""
    bad = await _get(client, tenant, "/v1/datasets/things/count", filter='{"a": {"$in": 3}}')
    assert bad.status_code == 422 and bad.json()["rule"] == "filter_type"
    answer = await _get(client, tenant, DOCS, accept="image/png")
    assert answer.status_code == 406 and "text/csv" in answer.json()["error"]


@pytest.mark.parametrize("fields", [None, "i,name,m.t"])
async def test_each_export_reads_back_as_the_json_result(
    client: httpx.AsyncClient, tenant: NewTenant, fields: str | None
) -> None:
    """ndjson, csv and parquet exports (streamed through keyset pages) hold exactly what the
    JSON page holds."""
    params = {"filter": '{"n": {"$gte": 1}}', "sort": "-n", **({"fields": fields} if fields else {})}
    pages = (await _get(client, tenant, DOCS, limit=1000, **params)).json()
    ndjson = await _get(client, tenant, DOCS, accept="application/x-ndjson", **params)
    assert ndjson.headers["content-type"].startswith("application/x-ndjson")
    assert [orjson.loads(line) for line in ndjson.content.splitlines()] == pages
    columns = list(pages[0]) if fields is None else ["i", "name", "m.t"]  # jsonb keeps its own key order

    def flat(doc: dict[str, Any]) -> list[str]:
        values = [doc["m"]["t"] if c == "m.t" else doc[c] for c in columns]
        return [v if isinstance(v, str) else orjson.dumps(v).decode() for v in values]

    text = (await _get(client, tenant, DOCS, accept="text/csv", **params)).text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == columns and rows[1:] == [flat(d) for d in pages]
    parquet = await _get(client, tenant, DOCS, accept="application/vnd.apache.parquet", **params)
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.column_names == columns and table.num_rows == len(pages)
    assert table.column("i").to_pylist() == [d["i"] for d in pages]
    assert table.column("name").to_pylist() == [d["name"] for d in pages]


async def test_big_integers_stay_exact_in_every_format(
    client: httpx.AsyncClient, operator_platform: Platform, tenant: NewTenant
) -> None:
    """A 30-digit integer keeps every digit in JSON, JSON Lines, CSV (its digits) and Parquet
    (a string column of its digits). JSON Lines passes the stored text through: PostgreSQL's
    in ``jsonb``'s spacing (``"big": 1234...``), the digits as written on both."""
    _write(operator_platform, tenant, {"b1": f'{{"big":{BIG},"x":1}}'.encode()}, "nums")
    path = "/v1/datasets/nums/documents"
    assert f'"big":{BIG}'.encode() in (await _get(client, tenant, path)).content
    lines = (await _get(client, tenant, path, accept="application/x-ndjson")).content.splitlines()
    assert [exactjson.loads(line) for line in lines] == [{"big": int(BIG), "x": 1}]
    assert BIG.encode() in lines[0]
    rows = list(csv.DictReader(io.StringIO((await _get(client, tenant, path, accept="text/csv")).text)))
    assert [{k: row[k] for k in ("big", "x")} for row in rows] == [{"big": BIG, "x": "1"}]
    parquet = await _get(client, tenant, path, accept="application/vnd.apache.parquet")
    assert pq.read_table(io.BytesIO(parquet.content)).column("big").to_pylist() == [BIG]


async def test_an_export_goes_on_from_a_cursor_up_to_its_limit(client: httpx.AsyncClient, tenant: NewTenant) -> None:
    """An export continues after a cursor and stops at its limit; offset is for JSON pages only."""
    first = await _get(client, tenant, DOCS, limit=10)
    rest = await _get(
        client, tenant, DOCS, accept="application/x-ndjson", cursor=first.headers["X-Next-Cursor"], limit=5
    )
    assert [orjson.loads(line)["i"] for line in rest.content.splitlines()] == [10, 11, 12, 13, 14]
    offset = await _get(client, tenant, DOCS, accept="text/csv", offset=3)
    assert offset.status_code == 422 and offset.json()["param"] == "offset"


async def _feed(client: httpx.AsyncClient, t: NewTenant, since: str, want: int) -> tuple[list[int], str]:
    """Follow since= until ``want`` documents came and a page is empty (PostgreSQL shows a
    commit once the cluster's older transactions ended: another test's may run a moment)."""
    got: list[int] = []
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        answer = await _get(client, t, DOCS, since=since, limit=15)
        assert answer.status_code == 200, answer.text
        got += [d["i"] for d in answer.json()]
        since = answer.headers.get("X-Next-Cursor", since)
        if not answer.json():
            if len(got) >= want or asyncio.get_running_loop().time() > deadline:
                return got, since
            await asyncio.sleep(0.05)


async def test_since_follows_the_writes_in_order_exactly_once(
    client: httpx.AsyncClient, operator_platform: Platform, tenant: NewTenant
) -> None:
    """since=start reads everything in write order; its cursor then gives only what was written after."""
    first, since = await _feed(client, tenant, "start", 40)
    assert sorted(first) == list(range(40)) and len(first) == 40
    await asyncio.to_thread(_write, operator_platform, tenant, {f"z{i}": _doc(100 + i) for i in range(20)})
    later, since = await _feed(client, tenant, since, 20)
    assert sorted(later) == list(range(100, 120)) and len(later) == 20  # in a batch: key order on PostgreSQL
    assert (await _feed(client, tenant, since, 0))[0] == []
    everything, _ = await _feed(client, tenant, "start", 60)
    assert len(everything) == 60 and everything[-20:] == later


async def test_since_refuses_foreign_cursors_and_other_orders(client: httpx.AsyncClient, tenant: NewTenant) -> None:
    """A page's cursor is no since cursor (400); since with sort, or an export, is 422."""
    page_token = (await _get(client, tenant, DOCS, limit=5)).headers["X-Next-Cursor"]
    assert (await _get(client, tenant, DOCS, since=page_token)).status_code == 400
    assert (await _get(client, tenant, DOCS, cursor=page_token, since="start")).status_code == 422
    with_sort = await _get(client, tenant, DOCS, since="start", sort="n")
    assert with_sort.status_code == 422 and with_sort.json()["param"] == "since"
    assert (await _get(client, tenant, DOCS, accept="text/csv", since="start")).status_code == 422
