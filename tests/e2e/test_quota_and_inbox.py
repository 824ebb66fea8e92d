"""Profile quotas and the inbox conventions, through the CLI and a running platform."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from tests.e2e.conftest import Cli, wait_until_up
from tests.helpers import on_backends, until


def test_more_files_than_the_daily_quota_are_rejected(
    cli: Cli, write_tenant: Callable[..., Path], tmp_path: Path
) -> None:
    """With max_files_per_day 2 the third file is rejected by rule daily_files, naming the limit."""
    profile = write_tenant("q", "formats: [csv]\nlimits: {max_files_per_day: 2}\n")
    cli.run("tenant", "add", "q", "--profile", str(profile), check=True)
    statuses = []
    for n in range(3):
        data = tmp_path / f"f{n}.csv"
        data.write_text(f"a\n{n}\n")
        statuses.append(orjson.loads(cli.run("ingest", str(data), "--tenant", "q", "--json").stdout))
    assert [s["status"] for s in statuses] == ["ingested", "ingested", "rejected"]
    assert "daily_files" in statuses[2]["reasons"][0] and "2" in statuses[2]["reasons"][0]


@on_backends("sqlite")
def test_running_platform_takes_inbox_files_but_not_part_files(cli: Cli) -> None:
    """`up` ingests a file dropped in the inbox, ignores a `.part` file until it is renamed,
    and drains on SIGTERM."""
    cli.run("tenant", "add", "acme", check=True)
    up = cli.popen("up")
    try:
        inbox = cli.home / "inbox" / "acme"
        part = inbox / "later.csv.part"
        part.write_text("a\n1\n2\n")
        (inbox / "now.csv").write_text("a\n1\n")

        def ingested() -> list[str]:
            files = orjson.loads(cli.run("files", "--tenant", "acme", "--json").stdout)
            return [f["name"] for f in files if f["status"] == "ingested"]

        until(lambda: ingested() == ["now.csv"], 60.0, "now.csv ingested")
        time.sleep(1.0)
        assert ingested() == ["now.csv"], "a .part file is still being written"
        os.rename(part, inbox / "later.csv")
        until(lambda: sorted(ingested()) == ["later.csv", "now.csv"], 60.0, "both ingested")
        assert cli.run("query", "--tenant", "acme", "--dataset", "later", "--count").stdout.strip() == "2"
        # with the platform up, `ingest --wait` hands the file over and follows it
        extra = cli.home.parent / "extra.csv"
        extra.write_text("a\n5\n6\n7\n")
        summary = cli.json("ingest", str(extra), "--tenant", "acme", "--json")
        assert summary["status"] == "ingested" and summary["rows_written"] == 3
    finally:
        up.terminate()
        assert up.wait(timeout=60) == 0


@on_backends("sqlite")
def test_ingest_wait_with_the_platform_up_does_not_wait_out_the_settle_rule(cli: Cli) -> None:
    """The CLI knows its file is complete: with `up` running it fetches (checks and stages)
    the file itself at once and the platform runs it, so `ingest --wait` is done long before
    fetchdata would take a file that has not kept still for MYSIMBDP_SETTLE_S (here 600 s)."""
    cli.run("tenant", "add", "acme", check=True)
    cli.env["MYSIMBDP_SETTLE_S"] = "600"
    up = cli.popen("up")
    try:
        wait_until_up(cli)
        fresh = cli.home.parent / "fresh.csv"
        fresh.write_text("a\n1\n2\n")
        summary = cli.json("ingest", str(fresh), "--tenant", "acme", "--json")  # cli.run's bound: 120 s
        assert summary["status"] == "ingested" and summary["rows_written"] == 2, summary
        assert not list((cli.home / "inbox" / "acme").iterdir())  # taken by the CLI, not left for fetchdata
    finally:
        up.terminate()
        assert up.wait(timeout=60) == 0


def _stage_inboxes(cli: Cli, tenants: tuple[str, ...]) -> None:
    """Fetch (check and stage) every file in the tenants' inboxes, in order, as fetchdata does."""
    from mysimbdp.domain.states import FileStatus
    from mysimbdp.runtime.platform import Platform
    from mysimbdp.services.fetch import fetch_file
    from mysimbdp.settings import Settings

    with Platform(Settings.from_env(cli.env), {}) as platform:
        for tenant in tenants:
            for path in sorted((cli.home / "inbox" / tenant).iterdir()):
                decision = fetch_file(platform, tenant, path)
                assert decision.status == FileStatus.STAGED, decision.reasons


@on_backends("postgres")
def test_a_tenant_with_one_file_is_not_starved_by_a_tenant_with_many(cli: Cli) -> None:
    """With one worker, 12 queued files of tenant 'big' and 1 of tenant 'small': the manager's
    round robin runs the small tenant's file second, not last.

    The 13 files are staged before ``up`` starts, so that its manager finds them all queued:
    ``up``'s own fetchdata wakes the manager after each file it stages, and on a loaded machine
    (the parallel test run) the first of big's files was run before the rest were staged."""
    cli.env["MYSIMBDP_MAX_WORKERS"] = "1"
    cli.run("tenant", "add", "big", check=True)
    cli.run("tenant", "add", "small", check=True)
    for n in range(12):
        (cli.home / "inbox" / "big" / f"b{n:02d}.csv").write_text(f"a\n{n}\n")
    time.sleep(0.05)
    (cli.home / "inbox" / "small" / "s.csv").write_text("a\n1\n")
    _stage_inboxes(cli, ("big", "small"))
    up = cli.popen("up")
    try:

        def all_done() -> bool:
            files = orjson.loads(cli.run("files", "--limit", "100", "--json").stdout)
            return len(files) == 13 and all(f["status"] == "ingested" for f in files)

        until(all_done, timeout_s=120)
    finally:
        up.terminate()
        assert up.wait(timeout=60) == 0
    from mysimbdp.adapters.metastore import MetaStore

    meta = MetaStore(cli.env["MYSIMBDP_META_URL"])
    meta.start()
    try:
        order = [run.tenant for run in sorted(meta.list_runs(), key=lambda r: r.started_at)]
    finally:
        meta.close()
    assert len(order) == 13
    assert order.index("small") <= 1, order
