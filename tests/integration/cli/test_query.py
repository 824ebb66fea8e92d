"""``mysimbdp query`` locally (through the store) and with ``--api`` (through the read API):
filters, fields, sort, each export format read back, counts, and errors that name the tenant,
the dataset, the rule and the value. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import uuid
import warnings
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

with warnings.catch_warnings():  # starlette wants httpx2 for its TestClient; httpx serves it here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from mysimbdp.adapters.apiclient import ApiClient
from mysimbdp.api import create_app
from mysimbdp.cli.files import query
from mysimbdp.domain import exactjson
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.tenants import NewTenant, add_tenant

BIG = "123456789012345678901234567890"
WHERE = '{"n": {"$gte": 2}}'


@pytest.fixture
def tenant(operator_platform: Platform, tmp_path: Path) -> NewTenant:
    """A tenant indexing n, with 30 documents (one holding a 30-digit integer) in dataset things."""
    path = tmp_path / "bundle" / "profile.yaml"
    path.parent.mkdir()
    path.write_text("indexes: [[n]]\n", encoding="utf-8")
    t = add_tenant(operator_platform, f"q{uuid.uuid4().hex[:8]}", path)
    docs = [(f"k{i:02d}", orjson.dumps({"i": i, "n": i % 4, "name": f"row {i}"})) for i in range(29)]
    docs.append(("k29", f'{{"i":29,"n":3,"name":"big","big":{BIG}}}'.encode()))
    with closing(operator_platform.tenant_store(t.record)) as store:
        store.write("things", docs, "test", operator_platform.tenant(t.record.id)[1].write_for("things"))
    return t


@pytest.fixture(params=["local", "remote"])
def run(
    request: pytest.FixtureRequest, operator_platform: Platform, tenant: NewTenant, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """``mysimbdp query --tenant T --dataset things ARGS``, in the store or through the API."""
    if request.param == "remote":
        app = create_app(operator_platform, None)  # type: ignore[arg-type]  # reading needs no broker
        clients: list[TestClient] = []

        def http(self: ApiClient) -> TestClient:
            clients.append(TestClient(app, base_url="http://test", headers=self.headers))
            return clients[-1]

        monkeypatch.setattr(ApiClient, "http", property(http))
        monkeypatch.setattr(ApiClient, "check_tenant", lambda self: None)  # /v1/files: not this test's
    env = {"MYSIMBDP_API_KEY": tenant.api_key} if request.param == "remote" else {}
    remote = ["--api", "http://test"] if request.param == "remote" else []

    def invoke(*args: str) -> Result:
        argv = ["--tenant", tenant.record.id, "--dataset", "things", *args, *remote]
        return CliRunner().invoke(query, argv, obj=operator_platform, env=env)

    yield invoke


def _expected(fields: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """What WHERE matches sorted by -n (then the key, descending too), projected to ``fields``."""
    docs: list[dict[str, Any]] = [{"i": i, "n": i % 4, "name": f"row {i}"} for i in range(29)]
    docs.append({"i": 29, "n": 3, "name": "big"})
    picked = [d for d in docs if d["n"] >= 2]
    picked = sorted(picked, key=lambda d: (d["n"], f"k{d['i']:02d}"), reverse=True)
    return [{k: d[k] for k in fields} for d in picked] if fields else picked


def test_ndjson_with_a_filter_fields_and_a_sort(run: Any) -> None:
    """--where, --fields and --sort -n: the matching documents' fields in that order."""
    result = run("--where", WHERE, "--fields", "i,name", "--sort", "-n")
    assert result.exit_code == 0, result.output
    assert [orjson.loads(line) for line in result.stdout_bytes.splitlines()] == _expected(("i", "name"))


def test_csv_and_parquet_to_a_file_hold_the_same_rows(run: Any, tmp_path: Path) -> None:
    """--format csv / parquet --out FILE: read back with csv and pyarrow, as the JSON Lines."""
    out = tmp_path / "x.csv"
    assert (
        run("--where", WHERE, "--fields", "i,name", "--sort", "-n", "--format", "csv", "--out", str(out)).exit_code == 0
    )
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert rows == [{"i": str(d["i"]), "name": d["name"]} for d in _expected(("i", "name"))]
    pq_out = tmp_path / "x.parquet"
    result = run("--where", WHERE, "--fields", "i,name", "--sort", "-n", "--format", "parquet", "--out", str(pq_out))
    assert result.exit_code == 0, result.output
    assert pq.read_table(pq_out).to_pylist() == _expected(("i", "name"))


def test_big_integers_keep_every_digit(run: Any, tmp_path: Path) -> None:
    """The 30-digit integer: digits in JSON Lines (the stored text; PostgreSQL's in jsonb's
    spacing) and CSV, a string column of them in Parquet."""
    where = '{"name": "big"}'
    line = run("--where", where).stdout_bytes
    assert exactjson.loads(line)["big"] == int(BIG) and BIG.encode() in line
    csv_out = tmp_path / "b.csv"
    assert run("--where", where, "--format", "csv", "--out", str(csv_out)).exit_code == 0
    assert next(csv.DictReader(io.StringIO(csv_out.read_text())))["big"] == BIG
    pq_out = tmp_path / "b.parquet"
    assert run("--where", where, "--format", "parquet", "--out", str(pq_out)).exit_code == 0
    assert pq.read_table(pq_out).column("big").to_pylist() == [BIG]


def test_count_limit_and_offset(run: Any) -> None:
    """--count counts what --where matches; --limit and --offset cut the export."""
    assert run("--count").stdout.strip() == "30"
    assert run("--count", "--where", WHERE).stdout.strip() == "15"
    lines = run("--limit", "3", "--offset", "2").stdout_bytes.splitlines()
    assert [orjson.loads(line)["i"] for line in lines] == [2, 3, 4]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--where", '{"n": {"$regex": "x"}}'], "'$regex'"),
        (["--where", '{"n": 1'], "not valid JSON"),
        (["--sort", "name"], "not indexed"),
    ],
)
def test_errors_name_the_tenant_dataset_rule_and_value(run: Any, tenant: NewTenant, args: list[str], says: str) -> None:
    """A bad --where or --sort fails naming the tenant, the dataset, the rule and the value (the
    command's message: a usage error locally, the API's refusal remotely)."""
    result = run(*args)
    assert result.exit_code != 0
    message = result.output + str(result.exception or "")
    assert repr(tenant.record.id) in message and "'things'" in message and says in message
    assert "(rule " in message
