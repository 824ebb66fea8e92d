"""Ingestion over time in buckets (report plots, dashboard charts): pure functions."""

from __future__ import annotations

import pytest

from mysimbdp.domain.records import RunRecord
from mysimbdp.domain.scaling import Report
from mysimbdp.errors import ConfigError
from mysimbdp.services.timeseries import Point, bucket_size, parse_duration, series_of


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("1.5h", 5400.0), ("2d", 172800.0)]
)
def test_durations_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "1w", "1 hour"])
def test_a_bad_duration_names_the_value_and_the_form(text: str) -> None:
    with pytest.raises(ConfigError, match=f"duration {text!r} is not valid: use e.g. 90s"):
        parse_duration(text)


def test_buckets_are_round_and_about_sixty() -> None:
    assert [bucket_size(s) for s in (30, 60, 61, 3600, 86400)] == [1.0, 1.0, 5.0, 60.0, 3600.0]


def _run(started: float, ended: float | None, rows: int) -> RunRecord:
    return RunRecord("r", "f", "acme", "app", 1, started, None, ended, 0, rows)


def _report(at: float, records: int, messages: int, p95: float) -> Report:
    return Report(at, "acme", "s", "app", "i", 5.0, messages, records, 0, 0, p95 / 2, p95, 0, p95 / 4)


def test_runs_and_reports_fall_into_the_bucket_where_they_ended() -> None:
    runs = [_run(95, 101, 500), _run(100, 108, 300), _run(103, 113, 1000), _run(50, None, 9)]
    reports = [_report(102, 40, 4, 120.0), _report(107, 60, 6, 80.0), _report(114, 0, 0, 0.0)]
    series = series_of("acme", runs, reports, start=100, end=119, width=10)
    assert series.batch_rows_per_s == [Point(100, 80.0), Point(110, 100.0)]
    assert series.batch_run_p50_s == [Point(100, 6.0), Point(110, 10.0)]
    assert series.batch_run_p95_s == [Point(100, 8.0), Point(110, 10.0)]
    assert series.stream_records_per_s == [Point(100, 10.0), Point(110, 0.0)]
    assert series.stream_latency_p50_ms == [Point(100, 20.0)]  # the median of the periods' medians 30, 20
    assert series.stream_latency_p95_ms == [Point(100, 120.0)]  # an idle report carries no latency
