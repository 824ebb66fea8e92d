"""A file's scan runs in a limited process: a scan that hangs, runs out of memory or meets a
poison file rejects that file with the rule and a record, never the platform; stopping kills a
running scan and gives its file back; a restart never scans a decided file again, and gives
an interrupted scan one more try. Over SQLite and PostgreSQL where the meta store matters."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest

from mysimbdp.adapters.files.claims import CLAIM_PREFIX
from mysimbdp.adapters.process.runner import Limits, Outcome, run_sync
from mysimbdp.domain.states import FileStatus
from mysimbdp.errors import RunCancelled
from mysimbdp.managers.fetchdata import FetchData
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.fetch import FetchDecision, fetch_file
from mysimbdp.services.reconcile import reconcile
from mysimbdp.services.tenants import add_tenant
from mysimbdp.settings import Settings
from tests.helpers import until

PROFILE = """
formats: [jsonl]
limits: {max_line_length_bytes: 67108864}
quality:
  rules:
    - {field: name, pattern: "(a+)+$"}
"""
ROW = b'{"name": "aaaa"}\n'
SLOW_ROWS = 300_000  # 5 MB of rows with a rule: 1.5-3 s of scanning on 2 cores, well over half a second


@pytest.fixture
def settings(home: Path, meta_url: str, coredms_url: str, pg_prefix: str) -> Settings:
    return Settings(
        home=home, meta_url=meta_url, coredms_url=coredms_url, pg_prefix=pg_prefix, poll_interval_s=0.1, settle_s=0.0
    )


def _platform(settings: Settings, **limits: float) -> Platform:
    return Platform(dataclasses.replace(settings, **limits), os.environ).start()


@pytest.fixture
def platform(settings: Settings, tmp_path: Path) -> Iterator[Platform]:
    with _platform(settings) as started:
        profile = tmp_path / "bundle" / "profile.yaml"
        profile.parent.mkdir()
        profile.write_text(PROFILE)
        add_tenant(started, "poison", profile)
        add_tenant(started, "calm", None)
        yield started


def _drop(platform: Platform, tenant: str, name: str, content: bytes) -> Path:
    inbox = platform.home.area("inbox", tenant)
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / name).write_bytes(content)
    return inbox / name


def _reason_doc(platform: Platform, decision: FetchDecision) -> dict[str, object]:
    doc: dict[str, object] = orjson.loads(decision.path.with_name(f"{decision.file_id}.reason.json").read_bytes())
    return doc


# -- the runner's blocking run ----------------------------------------------------------------
def _python(code: str, tmp_path: Path, timeout_s: float, cancel: threading.Event | None = None) -> Outcome:
    return run_sync(
        [sys.executable, "-c", code],
        env={"PATH": os.environ.get("PATH", "")},
        cwd=tmp_path,
        limits=Limits(timeout_s=timeout_s, grace_s=0.5),
        sandbox=None,
        stdin_bytes=b"ping",
        cancel=cancel,
    )


def test_run_sync_feeds_stdin_and_kills_the_whole_group_on_timeout(tmp_path: Path) -> None:
    """The child reads its stdin; on timeout it and what it started are killed."""
    echoed = _python("import sys; print(sys.stdin.read())", tmp_path, 30)
    assert echoed.ok and echoed.stdout_tail.strip() == "ping"
    code = "import subprocess, sys, time; print(subprocess.Popen(['sleep', '60']).pid, flush=True); time.sleep(60)"
    hung = _python(code, tmp_path, 1.0)
    assert hung.timed_out
    grandchild = int(hung.stdout_tail)

    def gone() -> bool:
        try:
            return psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    # SIGKILL was sent to the group; the kernel ends the process when it next runs, so look
    # again for a while (a `sleep 60` that was not killed stays alive far past this)
    until(gone, 20, what=f"the grandchild {grandchild} to end with its group's kill", every_s=0.05)


def test_run_sync_cancelled_kills_the_child_and_raises(tmp_path: Path) -> None:
    """Setting ``cancel`` (the platform stopping) ends a run at once with RunCancelled."""
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(RunCancelled, match="the platform is stopping"):
        _python("import time; time.sleep(60)", tmp_path, 60, cancel)
    assert time.monotonic() - started < 30  # not the child's 60 s


@pytest.mark.slow
def test_a_catastrophic_pattern_never_ends_on_re_and_answers_at_once_on_re2(tmp_path: Path) -> None:
    """The old engine: ``re`` on ``(a+)+$`` against 40 ``a`` and a ``!`` (2^40 paths) does not
    finish within 5 s and is killed; RE2, the engine rules now use, answers on the same input."""
    value = "a" * 40 + "!"
    old = _python(f"import re; print(re.fullmatch('(a+)+$', {value!r}))", tmp_path, 5)
    assert old.timed_out
    code = (
        f"from mysimbdp.domain.patterns import compile_pattern; print(compile_pattern('(a+)+$').fullmatch({value!r}))"
    )
    new = _python(code, tmp_path, 60)
    assert new.ok and new.stdout_tail.strip() == "None"


# -- fetch_file ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_scan_over_its_time_limit_rejects_the_file_and_within_it_the_file_is_staged(
    settings: Settings, platform: Platform
) -> None:
    """With MYSIMBDP_SCAN_TIMEOUT_S 0.5 a file whose scan takes seconds is rejected by rule
    scan.timeout, moved to rejected/ with its reason and recorded; with the default limit
    the same file is staged."""
    content = ROW * SLOW_ROWS
    with _platform(settings, scan_timeout_s=0.5) as limited:
        decision = fetch_file(limited, "poison", _drop(limited, "poison", "slow.jsonl", content))
    assert decision.status is FileStatus.REJECTED
    (reason,) = decision.reasons
    assert reason.startswith("tenant 'poison': file 'slow.jsonl': rule scan.timeout: its scan took longer than")
    assert "0.5 s" in reason and "MYSIMBDP_SCAN_TIMEOUT_S" in reason
    assert decision.path.parent == platform.home.area("rejected", "poison") and decision.path.exists()
    assert _reason_doc(platform, decision)["rules"] == ["scan.timeout"]
    record = platform.meta.get_file(decision.file_id)
    assert record is not None and record.status is FileStatus.REJECTED and record.size_bytes == len(content)
    assert not list(platform.home.area("inbox", "poison").iterdir())
    staged = fetch_file(platform, "poison", _drop(platform, "poison", "slow.jsonl", content))
    assert staged.status is FileStatus.STAGED and staged.facts is not None and staged.facts.rows_total == SLOW_ROWS


@pytest.mark.slow
def test_a_scan_over_its_memory_limit_rejects_the_file_and_within_it_the_file_is_staged(
    settings: Settings, platform: Platform
) -> None:
    """A 30 MB line under a 64 MiB scan: rule scan.out_of_memory, naming the limit; under the
    default limit the same file is staged."""
    content = b'{"name": "' + b"a" * 30_000_000 + b'"}\n'
    with _platform(settings, scan_memory_bytes=64 * 2**20) as limited:
        decision = fetch_file(limited, "poison", _drop(limited, "poison", "huge.jsonl", content))
    assert decision.status is FileStatus.REJECTED
    assert "rule scan.out_of_memory: its scan needed more memory than the limit of 64 MiB" in decision.reasons[0]
    staged = fetch_file(platform, "poison", _drop(platform, "poison", "huge.jsonl", content))
    assert staged.status is FileStatus.STAGED


def test_the_poison_files_are_rejected_by_their_rows_and_the_platform_goes_on(platform: Platform) -> None:
    """The line nested 100,000 deep and the value against the catastrophic pattern are bad
    rows, counted by rule; the files are rejected by the bad-row ratio, and this process (the
    platform) scans the next tenant's file as usual."""
    deep = fetch_file(platform, "poison", _drop(platform, "poison", "deep.jsonl", b"[" * 100_000 + b"]" * 100_000))
    regex = fetch_file(
        platform, "poison", _drop(platform, "poison", "regex.jsonl", b'{"name": "' + b"a" * 100_000 + b'!"}\n')
    )
    for decision, rule in ((deep, "parse"), (regex, "name.pattern")):
        assert decision.status is FileStatus.REJECTED and decision.facts is not None
        assert decision.facts.bad_by_rule == {rule: 1} and "bad_row_ratio" in _reason_doc(platform, decision)["rules"]
    assert deep.facts is not None and deep.facts.samples == ("line 1: not valid JSON: nested deeper than 1024 levels",)
    calm = fetch_file(platform, "calm", _drop(platform, "calm", "ok.csv", b"a,b\n1,2\n"))
    assert calm.status is FileStatus.STAGED


def test_a_cancelled_scan_gives_the_file_back_untouched(platform: Platform) -> None:
    """The platform stopping mid-scan: RunCancelled, the file back under its name, no record."""
    path = _drop(platform, "poison", "slow.jsonl", ROW * SLOW_ROWS)
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(RunCancelled):
        fetch_file(platform, "poison", path, cancel=cancel)
    assert [p.name for p in platform.home.area("inbox", "poison").iterdir()] == ["slow.jsonl"]
    assert platform.meta.list_files(tenant="poison") == []


# -- fetchdata ------------------------------------------------------------------------------
async def test_a_slow_scan_holds_up_neither_another_tenant_nor_the_stop(platform: Platform) -> None:
    """fetchdata scans the poison tenant's slow file and meanwhile stages the calm tenant's;
    stopped during the slow scan, it returns at once and that file is back in the inbox."""
    decisions: list[FetchDecision] = []
    fetcher = FetchData(platform, on_decision=decisions.append)
    stop = asyncio.Event()
    _drop(platform, "poison", "slow.jsonl", ROW * SLOW_ROWS * 2)
    task = asyncio.create_task(fetcher.run(stop))
    await asyncio.sleep(0.5)  # the slow scan has started
    _drop(platform, "calm", "ok.csv", b"a,b\n1,2\n")
    deadline = time.monotonic() + 30
    while not decisions and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert [(d.tenant, d.status) for d in decisions] == [("calm", FileStatus.STAGED)]
    inbox = platform.home.area("inbox", "poison")
    assert [p.name.startswith(CLAIM_PREFIX) for p in inbox.iterdir()] == [True]  # still being scanned
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 20)
    assert time.monotonic() - started < 10  # the scan was killed, not waited for
    assert [p.name for p in inbox.iterdir()] == ["slow.jsonl"]
    assert platform.meta.list_files(tenant="poison") == []


# -- reconcile -------------------------------------------------------------------------------
def test_a_claim_with_a_final_record_is_moved_after_it_never_scanned_again(
    settings: Settings, platform: Platform
) -> None:
    """A crash after a rejection was recorded but before the file left the inbox: the restart
    moves it where the record says and records nothing new."""
    with _platform(settings, scan_timeout_s=0.5) as limited:
        decision = fetch_file(limited, "poison", _drop(limited, "poison", "slow.jsonl", ROW * SLOW_ROWS))
    claim = platform.home.area("inbox", "poison") / f"{CLAIM_PREFIX}{decision.file_id}-slow.jsonl"
    os.rename(decision.path, claim)  # as if the move had not happened
    assert reconcile(platform) == 1
    assert decision.path.exists() and not claim.exists()
    assert not list(platform.home.area("inbox", "poison").iterdir())
    assert [f.id for f in platform.meta.list_files(tenant="poison")] == [decision.file_id]


def test_an_interrupted_scan_is_tried_once_more_then_rejected(platform: Platform) -> None:
    """A claim with no record (the platform was killed during its scan) goes back to the inbox
    once, recorded with rule scan.interrupted; interrupted again, it is rejected for good."""
    inbox = platform.home.area("inbox", "poison")
    _drop(platform, "poison", f"{CLAIM_PREFIX}f0000000000001234abcd-x.jsonl", ROW)
    assert reconcile(platform) == 1
    assert [p.name for p in inbox.iterdir()] == ["x.jsonl"]
    (first,) = platform.meta.list_files(tenant="poison")
    assert first.status is FileStatus.REJECTED and "rule scan.interrupted" in first.reasons[0]
    assert "scanned once more" in first.reasons[0]
    os.rename(inbox / "x.jsonl", inbox / f"{CLAIM_PREFIX}f0000000000005678abcd-x.jsonl")  # claimed again, killed again
    assert reconcile(platform) == 1
    assert not list(inbox.iterdir())
    second = platform.meta.get_file("f0000000000005678abcd")
    assert second is not None and second.status is FileStatus.REJECTED
    assert "for the second time" in second.reasons[0] and "not scanned again" in second.reasons[0]
    assert Path(second.path).parent == platform.home.area("rejected", "poison") and Path(second.path).exists()
    assert reconcile(platform) == 0  # and stays so


def test_an_accepted_file_whose_staging_was_cut_short_is_staged(platform: Platform) -> None:
    """A crash between the 'received' record and the move into staging: the restart stages it."""
    decision = fetch_file(platform, "calm", _drop(platform, "calm", "ok.csv", b"a,b\n1,2\n"))
    claim = platform.home.area("inbox", "calm") / f"{CLAIM_PREFIX}{decision.file_id}-ok.csv"
    os.rename(decision.path, claim)
    platform.meta.set_status(decision.file_id, FileStatus.RECEIVED, path=str(claim))
    assert reconcile(platform) == 1
    record = platform.meta.get_file(decision.file_id)
    assert record is not None and record.status is FileStatus.STAGED and decision.path.exists()
    assert not claim.exists()
