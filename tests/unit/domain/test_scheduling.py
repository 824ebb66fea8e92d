from __future__ import annotations

from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.scheduling import pick_files
from mysimbdp.domain.states import FileStatus


def _file(tenant: str, n: int, app: str = "a") -> FileRecord:
    return FileRecord(
        id=f"{tenant}-{n:05d}",
        tenant=tenant,
        name=f"{n}.csv",
        sha256="x",
        size_bytes=1,
        format="csv",
        status=FileStatus.STAGED,
        received_at=float(n),
        updated_at=float(n),
        path="",
        app=app,
    )


def test_one_file_tenant_is_not_starved_by_a_thousand_file_tenant() -> None:
    """A tenant with 1 file gets a slot in the first round next to a tenant with 1,000 older files."""
    runnable = [_file("big", n) for n in range(1000)] + [_file("small", 5000)]
    chosen = pick_files(
        runnable,
        free_slots=2,
        running={},
        concurrency={("big", "a"): 8, ("small", "a"): 8},
        last_served={},
    )
    assert {f.tenant for f in chosen} == {"big", "small"}


def test_per_app_concurrency_is_respected() -> None:
    """A tenant already running its app at the concurrency limit gets nothing more."""
    runnable = [_file("t", n) for n in range(10)]
    chosen = pick_files(runnable, free_slots=5, running={("t", "a"): 2}, concurrency={("t", "a"): 2}, last_served={})
    assert chosen == []


def test_round_robin_fills_free_slots_in_tenant_order() -> None:
    """With room for 4 and two tenants, each tenant gets 2, oldest files first."""
    runnable = [_file("x", n) for n in range(5)] + [_file("y", n) for n in range(10, 15)]
    chosen = pick_files(
        runnable,
        free_slots=4,
        running={},
        concurrency={("x", "a"): 4, ("y", "a"): 4},
        last_served={},
    )
    assert [f.id for f in chosen if f.tenant == "x"] == ["x-00000", "x-00001"]
    assert [f.id for f in chosen if f.tenant == "y"] == ["y-00010", "y-00011"]


def test_least_recently_served_tenant_goes_first() -> None:
    """With one slot, the tenant served longer ago wins."""
    runnable = [_file("x", 1), _file("y", 2)]
    chosen = pick_files(runnable, free_slots=1, running={}, concurrency={}, last_served={"x": 10.0, "y": 5.0})
    assert [f.tenant for f in chosen] == ["y"]


def test_a_full_app_does_not_block_the_tenants_other_app() -> None:
    """Files for a tenant's second app run while its first app is at its limit."""
    runnable = [_file("t", 1, "a"), _file("t", 2, "b")]
    chosen = pick_files(
        runnable,
        free_slots=2,
        running={("t", "a"): 1},
        concurrency={("t", "a"): 1, ("t", "b"): 1},
        last_served={},
    )
    assert [f.app for f in chosen] == ["b"]
