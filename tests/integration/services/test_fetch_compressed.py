"""Compressed files through fetchdata, on SQLite and PostgreSQL: told by their magic bytes,
decompressed in a limited process into staging before the scan; bombs, corrupt, truncated
and unsupported streams rejected with the rule and the value, nothing left in staging."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import random
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from backports import zstd

from mysimbdp.adapters.files.claims import CLAIM_PREFIX
from mysimbdp.domain.states import FileStatus
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.fetch import FetchDecision, fetch_file
from mysimbdp.services.tenants import add_tenant

ROWS = 2000
CSV = ("id,value\n" + "".join(f"{n},{n * 0.5}\n" for n in range(ROWS))).encode()
PROFILE = "formats: [csv, jsonl]\nlimits: {max_uncompressed_bytes: 4000000, max_expansion_ratio: 50}\n"
COMPRESS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.compress, "bzip2": bz2.compress, "zstd": zstd.compress}


@pytest.fixture
def tenant(operator_platform: Platform, tmp_path: Path) -> str:
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE)
    return add_tenant(operator_platform, f"z{uuid.uuid4().hex[:8]}", profile).record.id


def _fetch(platform: Platform, tenant: str, name: str, data: bytes) -> FetchDecision:
    inbox = platform.home.area("inbox", tenant)
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / name).write_bytes(data)
    return fetch_file(platform, tenant, inbox / name)


def _staging_is_clean(platform: Platform, tenant: str) -> bool:
    staging = platform.home.area("staging", tenant)
    return not staging.exists() or not list(staging.glob(f"{CLAIM_PREFIX}*"))


@pytest.mark.parametrize(("kind", "name"), [("gzip", "r.csv.gz"), ("bzip2", "r.csv.bz2"), ("zstd", "r.csv.zst")])
def test_a_compressed_file_is_staged_plain_and_recorded_as_sent(
    operator_platform: Platform, tenant: str, kind: str, name: str
) -> None:
    sent = COMPRESS[kind](CSV)
    decision = _fetch(operator_platform, tenant, name, sent)
    assert decision.status is FileStatus.STAGED, decision.reasons
    assert decision.path.suffix == ".csv" and decision.path.read_bytes() == CSV
    record = operator_platform.meta.get_file(decision.file_id)
    assert record is not None
    assert (record.name, record.size_bytes, record.sha256) == (name, len(sent), hashlib.sha256(sent).hexdigest())
    assert record.rows_total == ROWS and record.format == "csv" and record.dataset == "r"
    staged = [
        detail for _, status, detail in operator_platform.meta.file_events(decision.file_id) if status == "staged"
    ]
    assert staged[0]["compression"] == kind and staged[0]["uncompressed_bytes"] == len(CSV)
    assert not list(operator_platform.home.area("inbox", tenant).iterdir())  # the compressed file is spent
    assert _staging_is_clean(operator_platform, tenant)


def test_gzip_bytes_under_a_plain_name_are_told_by_their_magic(operator_platform: Platform, tenant: str) -> None:
    decision = _fetch(operator_platform, tenant, "r.csv", gzip.compress(CSV))
    assert decision.status is FileStatus.STAGED, decision.reasons
    assert decision.path.read_bytes() == CSV


def test_the_same_compressed_file_twice_is_a_duplicate(operator_platform: Platform, tenant: str) -> None:
    sent = gzip.compress(CSV)
    assert _fetch(operator_platform, tenant, "a.csv.gz", sent).status is FileStatus.STAGED
    again = _fetch(operator_platform, tenant, "b.csv.gz", sent)
    assert again.status is FileStatus.DUPLICATE and "rule duplicate" in again.reasons[0]
    assert again.path.read_bytes() == sent  # the file as sent is kept in rejected/
    assert _staging_is_clean(operator_platform, tenant)


BOMB = b"\0" * 20_000_000  # compresses ~1000x: over the ratio limit of 50x and the 4 MB limit
# ~5 MB of hex (compresses ~2x): under the ratio, over max_uncompressed_bytes (4 MB)
BIG = ("id,hex\n" + "".join(f"{n},{random.Random(n).randbytes(32).hex()}\n" for n in range(70_000))).encode()


@pytest.mark.parametrize(
    ("name", "sent", "rule"),
    [
        ("bomb.csv.gz", gzip.compress(BOMB), "expansion_ratio"),
        ("bomb.csv.zst", zstd.compress(BOMB), "expansion_ratio"),
        ("big.csv.gz", gzip.compress(BIG), "uncompressed_size"),
        ("corrupt.csv.gz", gzip.compress(CSV)[:30] + b"garbage!" * 8 + gzip.compress(CSV)[94:], "compression"),
        ("truncated.csv.gz", gzip.compress(CSV)[:-20], "compression"),
        ("corrupt.csv.zst", zstd.compress(CSV)[:20] + b"\xff" * 40 + zstd.compress(CSV)[60:], "compression"),
        ("truncated.csv.zst", zstd.compress(CSV)[:-9], "compression"),
        ("r.csv.xz", lzma.compress(CSV), "compression"),
    ],
    ids=[
        "gzip-bomb",
        "zstd-bomb",
        "over-size",
        "corrupt-gzip",
        "truncated-gzip",
        "corrupt-zstd",
        "truncated-zstd",
        "xz",
    ],
)
def test_a_bad_compressed_file_is_rejected_with_its_rule_and_nothing_staged(
    operator_platform: Platform, tenant: str, name: str, sent: bytes, rule: str
) -> None:
    decision = _fetch(operator_platform, tenant, name, sent)
    assert decision.status is FileStatus.REJECTED
    assert decision.reasons[0].startswith(f"tenant {tenant!r}: file {name!r}: rule {rule}: "), decision.reasons
    assert decision.path.read_bytes() == sent
    reason = orjson.loads(decision.path.with_name(f"{decision.file_id}.reason.json").read_bytes())
    assert reason["rules"] == [rule] and reason["size_bytes"] == len(sent)
    assert _staging_is_clean(operator_platform, tenant)
    assert not list(operator_platform.home.area("staging", tenant).glob("*"))


def test_an_unsupported_compression_names_the_supported_ones(
    operator_platform: Platform, tenant: str, tmp_path: Path
) -> None:
    archive = tmp_path / "r.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("r.csv", CSV)
    decision = _fetch(operator_platform, tenant, "r.csv.zip", archive.read_bytes())
    assert decision.status is FileStatus.REJECTED
    assert (
        "rule compression: the file is zip-compressed, which is not supported (supported: gzip, bzip2, zstd)"
        in (decision.reasons[0])
    )
