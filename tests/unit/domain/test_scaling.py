"""The monitor's scaling policy: pure decisions with their inputs and reasons."""

from __future__ import annotations

import pytest

from mysimbdp.domain.profile import Scaling, StreamApp
from mysimbdp.domain.scaling import Report, decide

APP = StreamApp(
    name="a",
    min_instances=1,
    max_instances=3,
    scaling=Scaling(
        window_s=30, backlog_high=100, latency_p95_high_ms=500, high_fraction=0.5, idle_s=60, cooldown_s=20
    ),
)
NOW = 10_000.0


def _report(at: float, backlog: int = 0, p95: float = 10.0, records: int = 50) -> Report:
    return Report(at, "t", "s", "a", "i1", 5.0, 1, records, 1000, 0, p95 / 2, p95, backlog)


def _decide(
    current: int, reports: list[Report], *, last_change: float = 0.0, last_busy: float = NOW
) -> tuple[int, str]:
    decision = decide(APP, current, reports, now=NOW, last_change_at=last_change, last_busy_at=last_busy)
    assert decision.inputs["reports"] == len([r for r in reports if r.at >= NOW - 30])
    return decision.target, decision.reason


def test_a_growing_backlog_adds_an_instance() -> None:
    reports = [_report(NOW - 20, backlog=50), _report(NOW - 10, backlog=500), _report(NOW - 5, backlog=900)]
    target, reason = _decide(1, reports)
    assert target == 2 and "2/3 reports over backlog 100" in reason and "scale up" in reason


def test_high_latency_alone_adds_an_instance() -> None:
    assert _decide(2, [_report(NOW - 5, p95=900.0)])[0] == 3


def test_never_above_max_instances() -> None:
    target, reason = _decide(3, [_report(NOW - 5, backlog=10_000)])
    assert target == 3 and "at max_instances 3" in reason


def test_cooldown_holds_any_change() -> None:
    target, reason = _decide(1, [_report(NOW - 5, backlog=10_000)], last_change=NOW - 10)
    assert target == 1 and reason.startswith("cooldown")


def test_idle_long_enough_removes_an_instance_but_not_below_min() -> None:
    quiet = [_report(NOW - 5, records=0)]
    assert _decide(3, quiet, last_busy=NOW - 61)[0] == 2
    assert _decide(1, quiet, last_busy=NOW - 61)[0] == 1
    assert _decide(3, quiet, last_busy=NOW - 30)[0] == 3  # not idle long enough


def test_old_reports_fall_out_of_the_window() -> None:
    assert _decide(1, [_report(NOW - 100, backlog=10_000)])[0] == 1


@pytest.mark.parametrize(("current", "target"), [(0, 1), (7, 3)])
def test_a_count_outside_the_bounds_is_brought_back(current: int, target: int) -> None:
    assert _decide(current, [])[0] == target


def test_a_report_round_trips_as_json() -> None:
    report = _report(NOW, backlog=3)
    assert Report.from_json(report.to_json()) == report
    assert report.to_json()["rate_per_s"] == 10.0


def test_a_report_round_trips_and_one_without_a_median_reads_as_zero() -> None:
    report = Report(9.0, "t", "s", "a", "i1", 5.0, 4, 400, 1000, 1, 20.0, 80.0, 3, 15.0)
    assert Report.from_json(report.to_json()) == report
    older = {k: v for k, v in report.to_json().items() if k != "latency_p50_ms"}  # an SDK of before
    assert Report.from_json(older).latency_p50_ms == 0.0
