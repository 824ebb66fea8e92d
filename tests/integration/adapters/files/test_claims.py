"""A claim on an inbox file belongs to the fetcher that made it for as long as that fetcher
lives: a reconcile run meanwhile by another process (a worker, ``up`` starting) leaves it
alone, at every point of the fetch; once the owner is dead (closed, or SIGKILLed), reconcile
finishes or undoes it. The race this closes: the CLI's ``ingest`` fetching a file while a
starting fetchdata's reconcile took it back (``FileNotFoundError: .fetching-…``).

Deterministic: the live fetch is stopped between its steps by calling them one by one
(``claim_file``, then ``fetch_claimed``), not by timing. Over SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mysimbdp.adapters.files.claims import parse_claim
from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.states import FileStatus
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.fetch import claim_file, fetch_claimed
from mysimbdp.services.reconcile import reconcile
from mysimbdp.services.tenants import add_tenant
from mysimbdp.settings import Settings

ROWS = b"a,b\n1,2\n3,4\n"


@pytest.fixture
def settings(home: Path, meta_url: str, coredms_url: str, pg_prefix: str) -> Settings:
    return Settings(home=home, meta_url=meta_url, coredms_url=coredms_url, pg_prefix=pg_prefix, settle_s=0.0)


@pytest.fixture
def fetcher(settings: Settings) -> Iterator[Platform]:
    """The live fetcher (the CLI's ingest, say)."""
    with Platform(settings, os.environ) as platform:
        add_tenant(platform, "acme", None)
        yield platform


@pytest.fixture
def other(settings: Settings, fetcher: Platform) -> Iterator[Platform]:
    """Another process's platform on the same home, whose fetchdata starts with reconcile."""
    with Platform(settings, os.environ) as platform:
        yield platform


def _drop(platform: Platform, name: str = "readings.csv") -> Path:
    inbox = platform.home.area("inbox", "acme")
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / name).write_bytes(ROWS)
    return inbox / name


def test_a_live_fetchers_claim_is_left_alone_and_its_fetch_completes(fetcher: Platform, other: Platform) -> None:
    """Claimed and being scanned: another reconcile repairs nothing, and the fetch stages the
    file. (Before owners, reconcile took the claim back into the inbox as an interrupted scan
    and the fetch failed with FileNotFoundError.)"""
    claimed = claim_file(fetcher, _drop(fetcher))
    assert reconcile(other) == 0
    assert claimed.exists()
    assert other.meta.list_files(tenant="acme") == []
    decision = fetch_claimed(fetcher, "acme", claimed)
    assert decision.status is FileStatus.STAGED and decision.path.exists()
    assert [f.status for f in other.meta.list_files(tenant="acme")] == [FileStatus.STAGED]


def test_a_live_fetchers_received_record_is_left_alone_until_its_owner_is_gone(
    fetcher: Platform, other: Platform
) -> None:
    """Between the 'received' record and the move into staging: another reconcile leaves the
    record and the claim; once the owner is closed, the next reconcile stages the file."""
    claimed = claim_file(fetcher, _drop(fetcher))
    taken = parse_claim(claimed.name)
    assert taken is not None
    now = time.time()
    record = FileRecord(
        id=taken.file_id,
        tenant="acme",
        name=taken.original,
        sha256="0" * 64,
        size_bytes=len(ROWS),
        format="csv",
        status=FileStatus.RECEIVED,
        received_at=now,
        updated_at=now,
        path=str(claimed),
        app="generic",
        dataset="readings",
        rows_total=2,
    )
    fetcher.meta.insert_file(record)
    assert reconcile(other) == 0
    assert claimed.exists()
    got = other.meta.get_file(taken.file_id)
    assert got is not None and got.status is FileStatus.RECEIVED
    fetcher.close()  # the owner is gone: its lease ends
    assert reconcile(other) == 1
    got = other.meta.get_file(taken.file_id)
    assert got is not None and got.status is FileStatus.STAGED and Path(got.path).exists()
    assert not claimed.exists()


CLAIM_AND_HANG = """
import os, sys, time
from pathlib import Path
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.fetch import claim_file
from mysimbdp.settings import Settings
platform = Platform(Settings.from_env(os.environ), os.environ).start()
print(claim_file(platform, Path(sys.argv[1])), flush=True)
time.sleep(600)
"""


def test_a_killed_fetchers_claim_is_given_back_once(settings: Settings, other: Platform) -> None:
    """A fetcher SIGKILLed during its scan: its lease ends with it, so reconcile gives the
    file back to the inbox (rule scan.interrupted) and removes the dead owner's lock file."""
    env = {
        **os.environ,
        "MYSIMBDP_HOME": str(settings.home),
        "MYSIMBDP_META_URL": settings.meta_url,
        "MYSIMBDP_COREDMS_URL": settings.coredms_url,
        "MYSIMBDP_PG_PREFIX": settings.pg_prefix,
    }
    dropped = _drop(other)
    child = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_HANG, str(dropped)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        claimed = Path(child.stdout.readline().strip())
        assert claimed.exists()
        assert reconcile(other) == 0  # alive: left alone
        assert claimed.exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert reconcile(other) == 1
    assert dropped.exists() and not claimed.exists()
    (record,) = other.meta.list_files(tenant="acme")
    assert record.status is FileStatus.REJECTED and "rule scan.interrupted" in record.reasons[0]
    assert list(other.home.claims_dir.glob("*.lock")) == []
