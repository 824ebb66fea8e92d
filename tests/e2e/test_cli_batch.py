"""The CLI end to end with real subprocess apps, over SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson

from mysimbdp.adapters.metastore import MetaStore
from mysimbdp.services.tenants import hash_key
from tests.e2e.conftest import Cli

CSV = "id,name,score,active,when\n1,ann,1.5,true,2024-01-01\n2,bob,,false,2024-01-02\n3,cy,7,true,\n"


def test_tenant_lifecycle(cli: Cli) -> None:
    """tenant add prints the id and a key once; list/show see it; remove deletes it."""
    new = cli.json("tenant", "add", "acme", "--json")
    assert new["id"] == "acme" and new["api_key"].startswith("msb_")
    assert [t["id"] for t in cli.json("tenant", "list", "--json")] == ["acme"]
    shown = cli.json("tenant", "show", "acme", "--json")
    assert shown["profile"]["batch_apps"][0]["name"] == "generic"
    assert new["api_key"] not in cli.run("tenant", "show", "acme").stdout
    cli.run("tenant", "remove", "acme", "--yes", check=True)
    assert cli.json("tenant", "list", "--json") == []
    again = cli.run("tenant", "show", "acme")
    assert again.returncode == 1 and "tenant 'acme' does not exist" in again.stderr


def test_tenant_show_masks_webhook_secrets(cli: Cli, write_tenant: Callable[..., Path]) -> None:
    secret = "s3cret-s3cret-s3cret"
    profile = write_tenant(
        "hooked", f"notifications:\n  webhooks:\n    - {{url: 'http://127.0.0.1:9/h', secret: {secret}}}\n"
    )
    cli.run("tenant", "add", "hooked", "--profile", str(profile), check=True)
    text = cli.run("tenant", "show", "hooked", check=True).stdout
    shown = cli.json("tenant", "show", "hooked", "--json")
    assert secret not in text and "secret: '***'" in text
    assert shown["profile"]["notifications"]["webhooks"][0]["secret"] == "***"
    bad = cli.home.parent / "x.exe"
    bad.write_bytes(b"MZ\x00\x01")
    assert cli.run("ingest", str(bad), "--tenant", "hooked").returncode == 3  # rejected, without `up`
    [queued] = cli.json("notifications", "list", "--tenant", "hooked", "--json")  # sent by the next `up`
    assert (queued["event"], queued["status"]) == ("file_rejected", "pending")


def test_default_profile_ingests_into_the_stem_dataset_with_types(cli: Cli, tmp_path: Path) -> None:
    """A CSV lands in the dataset named after its stem with inferred types, readable by query."""
    cli.run("tenant", "add", "acme", check=True)
    data = tmp_path / "My Scores-2024.csv"
    data.write_text(CSV)
    summary = cli.json("ingest", str(data), "--tenant", "acme", "--json")
    assert summary["status"] == "ingested", summary
    assert summary["dataset"] == "my_scores_2024"
    assert summary["rows_written"] == 3 and summary["rows_rejected"] == 0
    assert summary["bytes"] == len(CSV)
    count = cli.run("query", "--tenant", "acme", "--dataset", "my_scores_2024", "--count", check=True)
    assert count.stdout.strip() == "3"
    lines = cli.run("query", "--tenant", "acme", "--dataset", "my_scores_2024", "--limit", "2", check=True)
    docs = [orjson.loads(line) for line in lines.stdout.splitlines()]
    assert len(docs) == 2
    assert docs[0] == {"id": 1, "name": "ann", "score": 1.5, "active": True, "when": "2024-01-01"}
    assert docs[1]["score"] is None


def test_rejected_file_exits_3_with_reasons_and_keeps_the_file(cli: Cli, tmp_path: Path) -> None:
    """An empty file is rejected: exit 3, the reason names tenant, file and rule; the file is kept."""
    cli.run("tenant", "add", "acme", check=True)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    proc = cli.run("ingest", str(empty), "--tenant", "acme")
    assert proc.returncode == 3, proc.stderr
    assert "rejected" in proc.stdout and "'acme'" in proc.stdout and "empty.csv" in proc.stdout
    rejected = list((cli.home / "rejected" / "acme").iterdir())
    reason_files = [p for p in rejected if p.name.endswith(".reason.json")]
    assert len(rejected) == 2 and len(reason_files) == 1
    reason = orjson.loads(reason_files[0].read_bytes())
    assert reason["file"] == "empty.csv" and "empty" in reason["rules"]


def test_same_content_twice_is_a_duplicate_and_not_ingested_again(cli: Cli, tmp_path: Path) -> None:
    """The second copy (same sha256, other name) is rejected as a duplicate; the store is unchanged."""
    cli.run("tenant", "add", "acme", check=True)
    first = tmp_path / "scores.csv"
    first.write_text(CSV)
    assert cli.json("ingest", str(first), "--tenant", "acme", "--json")["status"] == "ingested"
    second = tmp_path / "scores_copy.csv"
    second.write_text(CSV)
    proc = cli.run("ingest", str(second), "--tenant", "acme", "--json")
    assert proc.returncode == 3
    summary = orjson.loads(proc.stdout)
    assert summary["status"] == "duplicate" and "duplicate" in summary["reasons"][0]
    assert cli.run("query", "--tenant", "acme", "--dataset", "scores", "--count").stdout.strip() == "3"


def test_tenant_app_with_quality_rules_quarantines_bad_rows(
    cli: Cli, tmp_path: Path, write_tenant: Callable[..., Path]
) -> None:
    """Rows failing the profile's rules are quarantined with line and reason; the rest land."""
    profile = write_tenant(
        "shop",
        """
formats: [csv]
required_columns: [sku, qty]
quality:
  max_bad_row_ratio: 0.5
  rules:
    - {field: qty, type: int, required: true, min: 0}
dataset: orders
key_fields: [sku]
batch_apps:
  - name: orders
    command: ["{python}", "{bundle}/app.py"]
    file_pattern: "*.csv"
""",
        {
            "app.py": (
                "from mysimbdp import sdk\n\n"
                "def transform(row):\n"
                "    return {'sku': row['sku'].upper(), 'qty': int(row['qty']), 'big': int(row['qty']) > 5}\n\n"
                "if __name__ == '__main__':\n"
                "    sdk.run_batch(transform)\n"
            )
        },
    )
    cli.run("tenant", "add", "shop", "--profile", str(profile), check=True)
    data = tmp_path / "orders.csv"
    data.write_text("sku,qty\na1,3\na2,-1\na3,x\na4,9\n")
    summary = cli.json("ingest", str(data), "--tenant", "shop", "--json")
    assert summary["status"] == "ingested", summary
    assert (summary["rows_written"], summary["rows_rejected"]) == (2, 2)
    assert {q["line"] for q in summary["quarantine_sample"]} == {3, 4}
    docs = [
        orjson.loads(x)
        for x in cli.run("query", "--tenant", "shop", "--dataset", "orders", "--limit", "10").stdout.splitlines()
    ]
    assert docs == [{"sku": "A1", "qty": 3, "big": False}, {"sku": "A4", "qty": 9, "big": True}]
    report = cli.json("report", "--tenant", "shop", "--json")
    assert report["tenants"][0]["quarantined_rows"] == 2
    assert report["tenants"][0]["rows_written"] == 2
    assert report["tenants"][0]["stream"]["messages"] == 0
    recent = cli.json("report", "--tenant", "shop", "--since", "1h", "--json", "--plot", str(tmp_path / "r.png"))
    assert recent["tenants"][0]["rows_written"] == 2 and recent["since"] > 0
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    later = cli.json("report", "--tenant", "shop", "--since", "0s", "--json")  # nothing since now
    assert later["tenants"][0]["rows_written"] == 0
    bad = cli.run("report", "--since", "yesterday")
    assert bad.returncode != 0 and "duration 'yesterday' is not valid" in bad.stderr


def test_tenant_update_replaces_the_profile_and_apps_and_keeps_key_and_data(
    cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path
) -> None:
    """`tenant update` validates the new profile first (a bad one changes nothing), then the
    next file is run by the new app under the new rules; the old data and the key stay."""
    v1 = write_tenant("v1", "formats: [csv]\ndataset: things\n")
    added = cli.json("tenant", "add", "acme", "--json", "--profile", str(v1))
    data = tmp_path / "a.csv"
    data.write_text("a,b\n1,2\n")
    cli.run("ingest", str(data), "--tenant", "acme", check=True)
    broken = write_tenant("broken", "formats: [xml]\n")
    refused = cli.run("tenant", "update", "acme", "--profile", str(broken))
    assert refused.returncode != 0 and "formats.0" in refused.stderr
    app = "from mysimbdp import sdk\nsdk.run_batch(lambda row: {**row, 'version': 2})\n"
    v2 = write_tenant(
        "v2",
        "formats: [csv, jsonl]\ndataset: things\n"
        'batch_apps:\n  - name: v2\n    command: ["{python}", "{bundle}/app.py"]\n',
        {"app.py": app},
    )
    cli.run("tenant", "update", "acme", "--profile", str(v2), check=True)
    shown = cli.run("tenant", "show", "acme").stdout
    assert "v2" in shown and "jsonl" in shown
    more = tmp_path / "b.jsonl"
    more.write_text('{"a": 3, "b": 4}\n')
    summary = cli.json("ingest", str(more), "--tenant", "acme", "--json")
    assert summary["status"] == "ingested" and summary["app"] == "v2"
    docs = [
        orjson.loads(x)
        for x in cli.run("query", "--tenant", "acme", "--dataset", "things", "--limit", "9").stdout.splitlines()
    ]
    assert sorted(d.get("version", 1) for d in docs) == [1, 2]
    meta = MetaStore(cli.env["MYSIMBDP_META_URL"])
    meta.start()
    try:
        assert meta.tenant_for_key(hash_key(added["api_key"])) == "acme"  # the key still works
    finally:
        meta.close()
