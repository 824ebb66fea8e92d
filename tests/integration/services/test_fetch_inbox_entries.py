"""What fetchdata does with inbox entries that are not complete regular files, on SQLite and
PostgreSQL: a symbolic link is rejected (rule symlink, value its target's text) and removed,
never followed; a FIFO is rejected (rule not_a_regular_file) and removed, never opened, and
holds up no other file; a file a writer still holds open, or that changed while it was
scanned, goes back to the inbox unrecorded and is taken whole once the writer is done. The
writer is driven step by step (an open file object, a wrapped scan), not by timing."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import orjson
import pytest

from mysimbdp.domain.states import FileStatus
from mysimbdp.errors import FileStillWritten
from mysimbdp.managers.fetchdata import FetchData
from mysimbdp.runtime.platform import Platform
from mysimbdp.services import fetch
from mysimbdp.services.fetch import fetch_file
from mysimbdp.services.run_batch import run_file
from mysimbdp.services.tenants import add_tenant


def _rows(first: int, last: int) -> bytes:
    return b"".join(b"%d,%d\n" % (n, n * 2) for n in range(first, last))


@pytest.fixture
def tenant(operator_platform: Platform) -> str:
    return add_tenant(operator_platform, f"i{uuid.uuid4().hex[:8]}", None).record.id


def _inbox(platform: Platform, tenant: str) -> Path:
    inbox = platform.home.area("inbox", tenant)
    inbox.mkdir(parents=True, exist_ok=True)
    return inbox


def _reason_doc(platform: Platform, tenant: str, file_id: str) -> dict[str, object]:
    doc: dict[str, object] = orjson.loads(
        (platform.home.area("rejected", tenant) / f"{file_id}.reason.json").read_bytes()
    )
    return doc


def test_a_symlink_is_rejected_and_removed_never_followed(
    operator_platform: Platform, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = add_tenant(operator_platform, f"o{uuid.uuid4().hex[:8]}", None).record.id
    secret = _inbox(operator_platform, other) / "secret.csv"
    secret.write_bytes(b"a,b\n" + _rows(0, 3))
    inbox = _inbox(operator_platform, tenant)
    (inbox / "theirs.csv").symlink_to(secret)
    (inbox / "passwd.csv").symlink_to("/etc/passwd")

    def no_scan(*args: object, **kwargs: object) -> object:
        raise AssertionError("a link's target was scanned")

    monkeypatch.setattr(fetch, "_scan", no_scan)
    decisions = asyncio.run(FetchData(operator_platform).scan_once())
    by_name = {d.name: d for d in decisions}
    assert set(by_name) == {"theirs.csv", "passwd.csv"}
    for name, target in (("theirs.csv", str(secret)), ("passwd.csv", "/etc/passwd")):
        decision = by_name[name]
        assert decision.status is FileStatus.REJECTED
        assert f"rule symlink: it is a symbolic link to {target!r}" in decision.reasons[0]
        record = operator_platform.meta.get_file(decision.file_id)
        assert record is not None and record.status is FileStatus.REJECTED
        assert record.sha256 == "" and record.size_bytes == 0  # nothing of the target was read
        doc = _reason_doc(operator_platform, tenant, decision.file_id)
        assert doc["rules"] == ["symlink"] and target in str(doc["reasons"])
    assert list(inbox.iterdir()) == []  # the links are gone
    assert not any(p.is_symlink() for p in operator_platform.home.area("rejected", tenant).iterdir())
    assert secret.read_bytes() == b"a,b\n" + _rows(0, 3)  # the target is untouched, in its inbox


def test_a_fifo_is_rejected_without_being_opened_and_blocks_no_other_file(
    operator_platform: Platform, tenant: str
) -> None:
    inbox = _inbox(operator_platform, tenant)
    os.mkfifo(inbox / "pipe.csv")  # opening it for reading would block: nobody writes to it
    (inbox / "good.csv").write_bytes(b"a,b\n" + _rows(0, 5))
    os.utime(inbox / "good.csv", (1_000_000_000, 1_000_000_000))  # settled long ago
    decisions = asyncio.run(FetchData(operator_platform).scan_once())
    by_name = {d.name: d for d in decisions}
    assert by_name["good.csv"].status is FileStatus.STAGED
    pipe = by_name["pipe.csv"]
    assert pipe.status is FileStatus.REJECTED
    assert "rule not_a_regular_file: it is a FIFO (named pipe)" in pipe.reasons[0]
    assert _reason_doc(operator_platform, tenant, pipe.file_id)["rules"] == ["not_a_regular_file"]
    assert list(inbox.iterdir()) == []


def test_a_file_a_writer_holds_open_is_given_back_and_taken_whole_once_closed(
    operator_platform: Platform, tenant: str
) -> None:
    inbox = _inbox(operator_platform, tenant)
    path = inbox / "readings.csv"
    with path.open("ab") as writer:
        writer.write(b"a,b\n" + _rows(0, 11))
        writer.flush()  # 11 rows, then the writer pauses, the file still open
        with pytest.raises(FileStillWritten, match="rule still_written: a process holds it open for writing"):
            fetch_file(operator_platform, tenant, path)
        assert [p.name for p in inbox.iterdir()] == ["readings.csv"]  # back, under its name
        assert operator_platform.meta.latest_file_named(tenant, "readings.csv", 0.0) is None  # no record
        writer.write(_rows(11, 20))
    decision = fetch_file(operator_platform, tenant, path)
    assert decision.status is FileStatus.STAGED and decision.facts is not None
    assert decision.facts.rows_total == 20
    record = operator_platform.meta.get_file(decision.file_id)
    assert record is not None and record.size_bytes == decision.path.stat().st_size
    assert decision.path.read_bytes() == b"a,b\n" + _rows(0, 20)


def test_a_file_appended_to_during_its_scan_is_given_back_not_recorded(
    operator_platform: Platform, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer appends through the claimed inode after the claim (and closes): what was
    scanned is not the file, so nothing is recorded and the whole file is fetched again."""
    inbox = _inbox(operator_platform, tenant)
    path = inbox / "readings.csv"
    path.write_bytes(b"a,b\n" + _rows(0, 11))
    scan = fetch._scan

    def scan_then_append(platform: Platform, tenant: str, claimed: Path, *args: object, **kwargs: object) -> object:
        facts = scan(platform, tenant, claimed, *args, **kwargs)  # type: ignore[arg-type]
        with claimed.open("ab") as late:
            late.write(_rows(11, 20))
        return facts

    monkeypatch.setattr(fetch, "_scan", scan_then_append)
    with pytest.raises(FileStillWritten, match="rule still_written: it changed while it was scanned"):
        fetch_file(operator_platform, tenant, path)
    assert path.read_bytes() == b"a,b\n" + _rows(0, 20)
    assert operator_platform.meta.latest_file_named(tenant, "readings.csv", 0.0) is None
    monkeypatch.setattr(fetch, "_scan", scan)
    decision = fetch_file(operator_platform, tenant, path)
    assert decision.status is FileStatus.STAGED and decision.facts is not None
    assert decision.facts.rows_total == 20


def test_a_staged_file_appended_to_after_its_fetch_fails_its_run_instead_of_ingesting(
    operator_platform: Platform, tenant: str
) -> None:
    """A writer that reopens the file after its fetch (here: by its staged path) cannot make the
    run ingest bytes the scan did not read: the run fails with rule changed_after_scan."""
    inbox = _inbox(operator_platform, tenant)
    (inbox / "readings.csv").write_bytes(b"a,b\n" + _rows(0, 11))
    decision = fetch_file(operator_platform, tenant, inbox / "readings.csv")
    assert decision.status is FileStatus.STAGED
    with decision.path.open("ab") as late:
        late.write(_rows(11, 20))
    assert operator_platform.meta.claim(decision.file_id, "test", 60.0, "r-changed")
    record = operator_platform.meta.get_file(decision.file_id)
    assert record is not None
    finished = asyncio.run(run_file(operator_platform, record, "r-changed"))
    assert finished.status is FileStatus.FAILED
    assert "rule changed_after_scan: its staged file holds" in finished.reasons[0]
    assert finished.rows_written == 0


def test_fetchdata_leaves_a_file_held_open_in_the_inbox_to_settle_again(
    operator_platform: Platform, tenant: str
) -> None:
    inbox = _inbox(operator_platform, tenant)
    path = inbox / "readings.csv"
    fetchdata = FetchData(operator_platform)
    with path.open("ab") as writer:
        writer.write(b"a,b\n" + _rows(0, 11))
        writer.flush()
        os.utime(path, (1_000_000_000, 1_000_000_000))  # looks settled long ago, but is open
        assert asyncio.run(fetchdata.scan_once()) == []
        assert [p.name for p in inbox.iterdir()] == ["readings.csv"]
        seen = fetchdata._seen[path]  # observed again now: it must keep still for settle_s anew
        assert seen.size == path.stat().st_size and seen.at > 1_000_000_000
    assert operator_platform.meta.latest_file_named(tenant, "readings.csv", 0.0) is None
