"""Poison input from one tenant does not stop or stall ``up`` for the others: a JSON Lines
file nested 100,000 deep and a value built against a catastrophic quality pattern each get a
final record, another tenant's file is ingested meanwhile, ``/healthz`` answers throughout,
SIGTERM stops ``up`` cleanly, and a restart does not pick the poison up again."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.conftest import Cli, healthy, until

POISON_PROFILE = """
formats: [jsonl]
dataset: things
quality:
  max_bad_row_ratio: 1.0
  rules:
    - {field: name, pattern: "(a+)+$"}
"""
FINAL = {"ingested", "rejected", "failed", "duplicate"}


def _files(cli: Cli, tenant: str) -> dict[str, str]:
    proc = cli.run("files", "--tenant", tenant, "--json")
    if proc.returncode != 0:
        return {}
    import orjson

    return {f["name"]: f["status"] for f in orjson.loads(proc.stdout)}


def _drop(cli: Cli, tenant: str, name: str, content: bytes) -> None:
    inbox = cli.home / "inbox" / tenant
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f"{name}.part").write_bytes(content)
    (inbox / f"{name}.part").rename(inbox / name)


def test_poison_files_get_a_final_record_while_the_platform_serves_the_others(cli: Cli, tmp_path: Path) -> None:
    profile = tmp_path / "poison" / "profile.yaml"
    profile.parent.mkdir()
    profile.write_text(POISON_PROFILE)
    cli.run("tenant", "add", "poison", "--profile", str(profile), check=True)
    cli.run("tenant", "add", "calm", check=True)
    http = httpx.Client(base_url=f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}", timeout=5)
    up = cli.popen("up")
    try:
        until(lambda: healthy(http), what="the API")
        _drop(cli, "poison", "deep.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n")
        _drop(cli, "poison", "regex.jsonl", b'{"name": "' + b"a" * 50_000 + b'!"}\n{"name": "aaa"}\n')
        _drop(cli, "calm", "ok.csv", b"a,b\n1,2\n")
        poison = until(
            lambda: (found := _files(cli, "poison")) and len(found) == 2 and set(found.values()) <= FINAL and found,
            what="a final record for both poison files",
        )
        assert _files(cli, "calm") == {"ok.csv": "ingested"}
        assert healthy(http)
    finally:
        up.terminate()
        assert up.wait(timeout=60) == 0  # within the drain time
    assert poison == {"deep.jsonl": "ingested", "regex.jsonl": "ingested"}  # bad rows quarantined (ratio 1.0)
    up = cli.popen("up")
    try:
        until(lambda: healthy(http), what="the API after a restart")
        _drop(cli, "calm", "ok2.csv", b"a,b\n3,4\n")
        until(lambda: _files(cli, "calm").get("ok2.csv") == "ingested", what="the next file after a restart")
        assert _files(cli, "poison") == poison  # nothing picked up again
    finally:
        up.terminate()
        assert up.wait(timeout=60) == 0
