from __future__ import annotations

import time

import pytest

from mysimbdp.adapters.metastore import MetaStore
from mysimbdp.domain.records import FileRecord, QuarantinedRow, RunRecord, ScalingRecord, TenantRecord
from mysimbdp.domain.scaling import Report
from mysimbdp.domain.states import FileStatus, RunStatus
from mysimbdp.errors import TenantError


@pytest.fixture
def meta(meta_url: str) -> MetaStore:
    store = MetaStore(meta_url)
    store.start()
    yield store  # type: ignore[misc]
    store.close()


def _tenant(meta: MetaStore, tenant_id: str = "acme") -> None:
    meta.add_tenant(TenantRecord(tenant_id, time.time(), "{}", "/b", "sqlite:///x"), f"hash-{tenant_id}")


def _file(file_id: str, status: FileStatus = FileStatus.STAGED, tenant: str = "acme", sha: str = "s1") -> FileRecord:
    now = time.time()
    return FileRecord(file_id, tenant, f"{file_id}.csv", sha, 10, "csv", status, now, now, "/p", app="a")


def test_tenants_round_trip_and_duplicates_are_refused(meta: MetaStore) -> None:
    """A tenant is stored with its key hash; adding it twice is a TenantError."""
    _tenant(meta)
    assert meta.get_tenant("acme").bundle_dir == "/b"
    assert meta.tenant_for_key("hash-acme") == "acme"
    with pytest.raises(TenantError, match="already exists"):
        _tenant(meta)
    meta.remove_tenant("acme")
    with pytest.raises(TenantError, match="does not exist"):
        meta.get_tenant("acme")
    assert meta.tenant_for_key("hash-acme") is None


def test_status_changes_are_recorded_as_history(meta: MetaStore) -> None:
    """Every status change appends an event; an expected-state guard blocks a stale change."""
    _tenant(meta)
    meta.insert_file(_file("f1"))
    assert meta.claim("f1", "owner-1", 10.0, "r1")
    assert not meta.claim("f1", "owner-2", 10.0, "r2"), "a claimed file cannot be claimed again"
    meta.set_status("f1", FileStatus.INGESTED, {"rows": 3}, rows_written=3)
    record = meta.get_file("f1")
    assert record is not None and record.status is FileStatus.INGESTED and record.rows_written == 3
    assert [status for _, status, _ in meta.file_events("f1")] == ["staged", "running", "ingested"]


def test_a_claim_sent_again_by_its_own_run_takes_the_file_and_no_other_does(meta: MetaStore) -> None:
    """A claim whose commit went through but whose answer was lost (a failover) is sent again:
    the same owner and run take the file; the same owner with another run, or another owner
    with the same run id, does not. One 'running' event."""
    _tenant(meta)
    meta.insert_file(_file("f1"))
    assert meta.claim("f1", "owner-1", 10.0, "r1")
    assert meta.claim("f1", "owner-1", 10.0, "r1"), "the same claim again: still this run's"
    assert not meta.claim("f1", "owner-1", 10.0, "r2") and not meta.claim("f1", "owner-2", 10.0, "r1")
    assert [status for _, status, _ in meta.file_events("f1")] == ["staged", "running"]


def test_expired_leases_are_found_and_renewal_keeps_them(meta: MetaStore) -> None:
    """A lease not renewed expires; a renewed one does not."""
    _tenant(meta)
    meta.insert_file(_file("f1"))
    meta.insert_file(_file("f2", sha="s2"))
    meta.claim("f1", "dead", 0.01, "r1")
    meta.claim("f2", "alive", 0.01, "r2")
    meta.renew_leases("alive", 60.0)
    time.sleep(0.05)
    assert [f.id for f in meta.expired_leases(time.time())] == ["f1"]


def test_runnable_limits_each_tenant_not_the_whole_queue(meta: MetaStore) -> None:
    """A tenant with many staged files cannot hide another tenant's single file."""
    _tenant(meta, "big")
    _tenant(meta, "small")
    for n in range(30):
        meta.insert_file(_file(f"b{n:03d}", tenant="big", sha=f"s{n}"))
    meta.insert_file(_file("s000", tenant="small"))
    runnable = meta.runnable(time.time(), per_tenant=5)
    assert sum(f.tenant == "big" for f in runnable) == 5
    assert [f.id for f in runnable if f.tenant == "small"] == ["s000"]


def test_quota_and_duplicate_lookup_ignore_rejected_files(meta: MetaStore) -> None:
    """Rejected files do not count against the daily quota nor as earlier copies."""
    _tenant(meta)
    meta.insert_file(_file("f1", FileStatus.REJECTED, sha="same"))
    assert meta.quota_usage("acme", 0) == (0, 0)
    assert meta.accepted_with_sha("acme", "same") is None
    meta.insert_file(_file("f2", FileStatus.STAGED, sha="same"))
    assert meta.quota_usage("acme", 0) == (1, 10)
    earlier = meta.accepted_with_sha("acme", "same")
    assert earlier is not None and earlier.id == "f2"


def test_runs_and_quarantine_are_recorded_idempotently(meta: MetaStore) -> None:
    """A run's outcome is stored; the same quarantined line recorded twice is kept once."""
    _tenant(meta)
    meta.start_run(RunRecord("r1", "f1", "acme", "a", 1, 1.0))
    meta.finish_run(RunRecord("r1", "f1", "acme", "a", 1, 1.0, RunStatus.SUCCEEDED, 2.0, 0, 5, 1, 100))
    (run,) = meta.list_runs("acme")
    assert run.status is RunStatus.SUCCEEDED and run.rows_written == 5
    row = QuarantinedRow("acme", "f1", "r1", 7, "a,b", "field 'x': missing")
    meta.add_quarantine([row, row])
    meta.add_quarantine([row])
    assert meta.count_quarantine("acme") == 1
    assert meta.list_quarantine("acme")[0].reason == "field 'x': missing"


def test_heartbeats_tell_whether_a_component_is_alive(meta: MetaStore) -> None:
    """A fresh beat is alive; a cleared one is not."""
    assert not meta.alive("fetchdata", 5.0)
    meta.beat("fetchdata", "me")
    assert meta.alive("fetchdata", 5.0)
    meta.clear_beat("fetchdata", "me")
    assert not meta.alive("fetchdata", 5.0)


def test_lookups_by_file_name_and_by_file_quarantine(meta: MetaStore) -> None:
    """The newest record of a name since a time is found, and quarantine filters by file."""
    _tenant(meta)
    meta.insert_file(_file("f1"))
    meta.insert_file(_file("f2", sha="s2"))
    found = meta.latest_file_named("acme", "f2.csv", 0.0)
    assert found is not None and found.id == "f2"
    assert meta.latest_file_named("acme", "f2.csv", time.time() + 60) is None
    meta.add_quarantine(
        [QuarantinedRow("acme", "f1", "r", 2, "x", "bad"), QuarantinedRow("acme", "f2", "r", 3, "y", "worse")]
    )
    assert [q.line for q in meta.list_quarantine("acme", file_id="f2")] == [3]
    assert len(meta.list_quarantine("acme")) == 2


def test_scaling_decisions_are_kept_with_their_inputs(meta: MetaStore) -> None:
    """Decisions come back oldest first, filtered by tenant and time, inputs intact."""
    _tenant(meta)
    up = ScalingRecord(100.0, "acme", "clicks", "app", 1, 2, "backlog: scale up", {"max_backlog": 900, "reports": 4})
    down = ScalingRecord(200.0, "acme", "clicks", "app", 2, 1, "idle: scale down", {"max_backlog": 0})
    meta.streams.record_decision(down)
    meta.streams.record_decision(up)
    assert meta.streams.decisions("acme") == [up, down]
    assert meta.streams.decisions("acme", since=150.0) == [down]
    assert meta.streams.decisions("other") == []


def test_stream_reports_are_kept_and_read_back_by_tenant_and_time(meta: MetaStore) -> None:
    _tenant(meta)
    first = Report(10.0, "acme", "clicks", "app", "i1", 5.0, 3, 300, 9000, 1, 12.5, 40.0, 7, 9.5)
    second = Report(15.0, "acme", "clicks", "app", "i1", 5.0, 0, 0, 0, 0, 0.0, 0.0, 0)
    meta.streams.record_reports([second, first])
    assert meta.streams.reports("acme") == [first, second]
    assert meta.streams.reports("acme", since=12.0) == [second]
    assert meta.streams.reports("other") == []
