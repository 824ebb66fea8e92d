"""reconcile after a fetcher died while handling a compressed file, over SQLite and PostgreSQL:
a partial decompressed output in staging is removed and the claim given back once (rule
scan.interrupted), and a compressed claim whose plain copy was already staged is removed, not
fetched again. The crash points are made by calling the steps one by one, not by timing."""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mysimbdp.adapters.files.claims import CLAIM_PREFIX
from mysimbdp.domain.states import FileStatus
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.fetch import claim_file, fetch_claimed
from mysimbdp.services.reconcile import reconcile
from mysimbdp.services.tenants import add_tenant
from mysimbdp.settings import Settings

ROWS = b"a,b\n" + b"".join(b"%d,%d\n" % (n, n * 2) for n in range(500))


@pytest.fixture
def settings(home: Path, meta_url: str, coredms_url: str, pg_prefix: str) -> Settings:
    return Settings(home=home, meta_url=meta_url, coredms_url=coredms_url, pg_prefix=pg_prefix, settle_s=0.0)


@pytest.fixture
def fetcher(settings: Settings) -> Iterator[Platform]:
    with Platform(settings, os.environ) as platform:
        add_tenant(platform, "acme", None)
        yield platform


@pytest.fixture
def other(settings: Settings, fetcher: Platform) -> Iterator[Platform]:
    """Another process's platform on the same home, whose fetchdata starts with reconcile."""
    with Platform(settings, os.environ) as platform:
        yield platform


def _claim(platform: Platform) -> Path:
    inbox = platform.home.area("inbox", "acme")
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "readings.csv.gz").write_bytes(gzip.compress(ROWS))
    return claim_file(platform, inbox / "readings.csv.gz")


def test_a_partial_output_of_a_dead_fetcher_is_removed_and_its_file_fetched_again(
    fetcher: Platform, other: Platform
) -> None:
    claimed = _claim(fetcher)
    partial = fetcher.home.area("staging", "acme") / claimed.name  # where its decompression writes
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(ROWS[:100])  # the fetcher died mid-decompress
    assert reconcile(other) == 0  # alive: both left alone
    assert partial.exists() and claimed.exists()
    fetcher.close()
    assert reconcile(other) == 2  # the claim given back, the partial output removed
    assert not partial.exists() and not list(partial.parent.glob(f"{CLAIM_PREFIX}*"))
    inbox = other.home.area("inbox", "acme")
    assert [p.name for p in inbox.iterdir()] == ["readings.csv.gz"]
    (interrupted,) = other.meta.list_files(tenant="acme")
    assert "rule scan.interrupted:" in interrupted.reasons[0]
    decision = fetch_claimed(other, "acme", claim_file(other, inbox / "readings.csv.gz"))
    assert decision.status is FileStatus.STAGED and decision.path.read_bytes() == ROWS


def test_a_compressed_claim_whose_plain_copy_was_staged_is_not_fetched_again(
    fetcher: Platform, other: Platform
) -> None:
    claimed = _claim(fetcher)
    kept = claimed.with_name("kept")
    shutil.copy(claimed, kept)
    decision = fetch_claimed(fetcher, "acme", claimed)
    assert decision.status is FileStatus.STAGED
    os.rename(kept, claimed)  # as if it died between staging the plain copy and removing the claim
    fetcher.close()
    assert reconcile(other) == 1
    assert not claimed.exists() and not list(other.home.area("inbox", "acme").iterdir())
    record = other.meta.get_file(decision.file_id)
    assert record is not None and record.status is FileStatus.STAGED and Path(record.path).read_bytes() == ROWS
    assert len(other.meta.list_files(tenant="acme")) == 1
