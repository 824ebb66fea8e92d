"""Poison input from one tenant does not stop or stall ``up`` for the others. Three poison
files: a JSON Lines file nested 100,000 deep, a value built against a catastrophic quality
pattern, and a file whose scan takes far longer than MYSIMBDP_SCAN_TIMEOUT_S. Each is
rejected with its rule and recorded, another tenant's file is fetched while the slow scan
runs and is ingested, ``/healthz`` answers throughout, SIGTERM during a scan stops ``up``
within its drain time, and a restart does not pick any of them up again."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from mysimbdp.runtime.platform import Platform
from mysimbdp.settings import Settings
from tests.e2e.conftest import Cli
from tests.helpers import on_backends
from tests.helpers import until as wait_until

POISON_PROFILE = """
formats: [jsonl]
dataset: things
quality:
  rules:
    - {field: name, pattern: "(a+)+$"}
"""
FINAL = {"ingested", "rejected", "failed", "duplicate"}
SCAN_TIMEOUT_S = 3
DRAIN_S = 30  # `up`'s drain time
SLOW = b'{"name": "aaaa"}\n' * 2_000_000  # 34 MB of rows with a rule: seconds of scanning beyond the limit


class Watch:
    """Polls conditions while checking that ``/healthz`` answers at every step."""

    def __init__(self, cli: Cli) -> None:
        self.api = f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
        self.unanswered: list[str] = []
        self.up = False  # whether `up` should be answering now

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def until(self, check: Callable[[], Any], what: str, timeout_s: float = 120.0) -> Any:
        """:func:`tests.helpers.until`, noting every poll at which ``/healthz`` did not answer."""

        def watched() -> Any:
            if self.up and not self.healthy():
                self.unanswered.append(f"/healthz unanswered while waiting for {what}")
            return check()

        return wait_until(watched, timeout_s, what=what, every_s=0.2)

    def start(self, cli: Cli) -> Any:
        up = cli.popen("up")
        try:
            self.until(lambda: self.healthy() or up.poll() is not None, "the API")
            assert up.poll() is None, f"`up` exited with {up.returncode}"
        except AssertionError as exc:
            up.kill()
            up.wait()
            raise AssertionError(f"{exc}; its log ends:\n{cli.up_log()}") from exc
        self.up = True
        return up

    def stop(self, up: Any) -> float:
        self.up = False
        started = time.monotonic()
        up.terminate()
        assert up.wait(timeout=DRAIN_S + 30) == 0
        return time.monotonic() - started


def _files(cli: Cli, tenant: str) -> dict[str, dict[str, Any]]:
    proc = cli.run("files", "--tenant", tenant, "--json")
    return {f["name"]: f for f in orjson.loads(proc.stdout)} if proc.returncode == 0 else {}


def _final(cli: Cli, tenant: str, names: set[str]) -> dict[str, dict[str, Any]] | None:
    found = _files(cli, tenant)
    done = {n: f for n, f in found.items() if n in names and f["status"] in FINAL}
    return found if set(done) == names else None


def _drop(cli: Cli, tenant: str, name: str, content: bytes) -> Path:
    inbox = cli.home / "inbox" / tenant
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f"{name}.part").write_bytes(content)
    (inbox / f"{name}.part").rename(inbox / name)
    return inbox


def _claimed(inbox: Path) -> bool:
    return any(p.name.startswith(".fetching-") for p in inbox.iterdir())


def _received_at(cli: Cli, file_id: str) -> tuple[float, float]:
    """(when fetchdata took the file, when its record last changed), from the meta store."""
    with Platform(Settings.from_env(cli.env), {}) as platform:
        record = platform.meta.get_file(file_id)
    assert record is not None
    return record.received_at, record.updated_at


@on_backends("sqlite")
def test_poison_files_are_rejected_and_recorded_while_the_platform_serves_the_others(cli: Cli, tmp_path: Path) -> None:
    cli.env["MYSIMBDP_SCAN_TIMEOUT_S"] = str(SCAN_TIMEOUT_S)
    profile = tmp_path / "poison" / "profile.yaml"
    profile.parent.mkdir()
    profile.write_text(POISON_PROFILE)
    cli.run("tenant", "add", "poison", "--profile", str(profile), check=True)
    cli.run("tenant", "add", "calm", check=True)
    watch = Watch(cli)
    up = watch.start(cli)
    try:
        inbox = _drop(cli, "poison", "slow.jsonl", SLOW)
        watch.until(lambda: _claimed(inbox), "the slow file's scan to start")
        _drop(cli, "calm", "ok.csv", b"a,b\n1,2\n")
        _drop(cli, "poison", "deep.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n")
        _drop(cli, "poison", "regex.jsonl", b'{"name": "' + b"a" * 100_000 + b'!"}\n{"name": "aaa"}\n')
        poison = watch.until(
            lambda: _final(cli, "poison", {"slow.jsonl", "deep.jsonl", "regex.jsonl"}), "the poison files' records"
        )
        calm = watch.until(lambda: _final(cli, "calm", {"ok.csv"}), "the calm tenant's file")
        # and SIGTERM while a scan runs: the scan is killed, `up` stops well within its drain time
        _drop(cli, "poison", "slow2.jsonl", SLOW)
        watch.until(lambda: _claimed(inbox), "the second slow file's scan to start")
    finally:
        stopped_s = watch.stop(up)
    assert stopped_s < DRAIN_S
    assert watch.unanswered == []
    assert calm["ok.csv"]["status"] == "ingested"
    # the calm tenant's file was taken while the slow scan ran, not queued behind it
    calm_taken, _ = _received_at(cli, calm["ok.csv"]["file_id"])
    _, slow_rejected = _received_at(cli, poison["slow.jsonl"]["file_id"])
    assert calm_taken < slow_rejected
    expected = {
        "slow.jsonl": (
            ["scan.timeout"],
            f"rule scan.timeout: its scan took longer than the limit of {SCAN_TIMEOUT_S} s",
        ),
        "deep.jsonl": (["bad_row_ratio"], "rule bad_row_ratio"),
        "regex.jsonl": (["bad_row_ratio"], "rule bad_row_ratio"),
    }
    samples = {"deep.jsonl": "nested deeper than 1024 levels", "regex.jsonl": "name"}
    for name, (rules, says) in expected.items():
        record = poison[name]
        assert record["status"] == "rejected", name
        assert says in record["reasons"][0] and "tenant 'poison'" in record["reasons"][0], name
        rejected = Path(record["path"])
        assert rejected.parent == cli.home / "rejected" / "poison" and rejected.exists(), name
        doc = orjson.loads(rejected.with_name(f"{record['file_id']}.reason.json").read_bytes())
        assert doc["rules"] == rules and doc["file"] == name, name
        if name in samples:
            assert samples[name] in doc["bad_row_samples"][0], name
    assert (inbox / "slow2.jsonl").exists()  # given back untouched by the stop
    up = watch.start(cli)
    try:
        _drop(cli, "calm", "ok2.csv", b"a,b\n3,4\n")
        watch.until(lambda: _final(cli, "calm", {"ok2.csv"}), "the next file after a restart")
        after = watch.until(lambda: _final(cli, "poison", {"slow2.jsonl"}), "the second slow file's record")
    finally:
        watch.stop(up)
    assert watch.unanswered == []
    assert after["slow2.jsonl"]["status"] == "rejected" and "scan.timeout" in after["slow2.jsonl"]["reasons"][0]
    assert {n: (f["file_id"], f["status"]) for n, f in after.items() if n != "slow2.jsonl"} == {
        n: (f["file_id"], f["status"]) for n, f in poison.items()
    }  # nothing picked up again
    assert len(orjson.loads(cli.run("files", "--tenant", "poison", "--json").stdout)) == 4
    assert not [p for p in inbox.iterdir() if p.is_file()]
