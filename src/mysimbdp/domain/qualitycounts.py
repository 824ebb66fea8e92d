"""Data quality as counts: what one file's scan or one stream window's checks found, and a
tenant's summary of many of them. Pure: no IO.

A row *fails* when it breaks at least one rule. ``failed_by_rule`` counts, per rule, the
rows that broke it: a row breaking two rules is counted under both, and once in
``rows_failed``. Rule names are ``<field>.<check>`` (``domain/quality.py``) and, for files,
the row's parse problems: ``ragged``, ``parse``, ``line_length``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from mysimbdp.domain.facts import FileFacts
from mysimbdp.domain.quality import RuleFailure
from mysimbdp.domain.scaling import Report

TOP_RULES = 5  # failing rules a summary names


class QualityVerdict(StrEnum):
    """What a file's quality decided (its status may still be rejected for another rule)."""

    PASSED = "passed"  # the bad-row ratio is within the tenant's max_bad_row_ratio
    REJECTED = "rejected"  # over it: the whole file was rejected (rule bad_row_ratio)
    UNCHECKED = "unchecked"  # no row could be checked: empty, binary, not UTF-8, unreadable, no rows


def bad_ratio(failed: int, checked: int) -> float:
    """``failed / checked``, 0 when nothing was checked."""
    return failed / checked if checked else 0.0


def _sorted_rules(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """Most failed first, then by name (a stable order for reports and tests)."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


class RuleTally:
    """A running count of rows checked and rows failed per rule (a stream window's)."""

    __slots__ = ("failed_by_rule", "rows_checked", "rows_failed")

    def __init__(self) -> None:
        self.rows_checked = 0
        self.rows_failed = 0
        self.failed_by_rule: dict[str, int] = {}

    def add(self, checked: int, failing: Iterable[Sequence[RuleFailure]]) -> None:
        """``checked`` rows were checked; ``failing`` holds the failures of each failed one."""
        self.rows_checked += checked
        by_rule = self.failed_by_rule
        for failures in failing:
            self.rows_failed += 1
            for rule in {failure.rule for failure in failures}:
                by_rule[rule] = by_rule.get(rule, 0) + 1

    def take(self) -> tuple[int, int, dict[str, int]]:
        """The counts so far (checked, failed, per rule), and start again from zero."""
        counts = (self.rows_checked, self.rows_failed, self.failed_by_rule)
        self.rows_checked, self.rows_failed, self.failed_by_rule = 0, 0, {}
        return counts


@dataclass(frozen=True, slots=True)
class FileQuality:
    """The quality of one file as fetchdata found it, accepted or rejected."""

    file_id: str
    tenant: str
    at: float  # when the file was received (epoch s)
    rows_checked: int
    rows_failed: int
    failed_by_rule: dict[str, int]
    max_bad_row_ratio: float  # the tenant's threshold when the file was checked
    verdict: QualityVerdict

    @property
    def ratio(self) -> float:
        return bad_ratio(self.rows_failed, self.rows_checked)

    @property
    def rejected(self) -> bool:
        return self.verdict is QualityVerdict.REJECTED

    def to_json(self) -> dict[str, Any]:
        return {
            "rows_checked": self.rows_checked,
            "rows_failed": self.rows_failed,
            "ratio": round(self.ratio, 6),
            "max_bad_row_ratio": self.max_bad_row_ratio,
            "verdict": str(self.verdict),
            "failed_by_rule": dict(_sorted_rules(self.failed_by_rule)),
        }


def file_quality(
    file_id: str, tenant: str, at: float, facts: FileFacts, max_bad_row_ratio: float, rules_broken: Iterable[str]
) -> FileQuality:
    """A file's quality from its scan (``facts``) and the rules it broke (``check_file``)."""
    if "bad_row_ratio" in rules_broken:
        verdict = QualityVerdict.REJECTED
    elif facts.rows_total == 0 or facts.unreadable is not None:
        verdict = QualityVerdict.UNCHECKED  # ``bad_row_ratio`` is not evaluated either
    else:
        verdict = QualityVerdict.PASSED
    return FileQuality(
        file_id=file_id,
        tenant=tenant,
        at=at,
        rows_checked=facts.rows_total,
        rows_failed=facts.rows_bad,
        failed_by_rule=dict(facts.bad_by_rule),
        max_bad_row_ratio=max_bad_row_ratio,
        verdict=verdict,
    )


@dataclass(frozen=True, slots=True)
class WindowQuality:
    """The quality of what one stream app instance checked in one report period."""

    at: float  # the end of the period (epoch s)
    tenant: str
    stream: str
    app: str
    instance: str
    rows_checked: int
    rows_failed: int
    failed_by_rule: dict[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return bad_ratio(self.rows_failed, self.rows_checked)

    @property
    def rejected(self) -> bool:
        return False  # a window is never rejected: its failing records are quarantined

    @classmethod
    def of(cls, report: Report) -> WindowQuality:
        return cls(
            report.at,
            report.tenant,
            report.stream,
            report.app,
            report.instance,
            report.rows_checked,
            report.rows_failed,
            dict(report.failed_by_rule),
        )


class _Counted(Protocol):
    @property
    def rows_checked(self) -> int: ...
    @property
    def rows_failed(self) -> int: ...
    @property
    def failed_by_rule(self) -> dict[str, int]: ...
    @property
    def rejected(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class QualitySummary:
    """Many files' or windows' quality added up."""

    units: int  # files or windows
    rejected: int  # of them, files rejected for their bad-row ratio
    rows_checked: int
    rows_failed: int
    failed_by_rule: dict[str, int]

    @property
    def ratio(self) -> float:
        return bad_ratio(self.rows_failed, self.rows_checked)

    def top_rules(self, n: int = TOP_RULES) -> list[tuple[str, int]]:
        """The ``n`` rules that failed most rows, most first."""
        return _sorted_rules(self.failed_by_rule)[:n]

    def to_json(self, n: int = TOP_RULES) -> dict[str, Any]:
        return {
            "rows_checked": self.rows_checked,
            "rows_failed": self.rows_failed,
            "ratio": round(self.ratio, 6),
            "top_rules": [{"rule": rule, "rows": rows} for rule, rows in self.top_rules(n)],
        }


def summarize(items: Iterable[_Counted]) -> QualitySummary:
    """Add up the quality of ``items`` (files or stream windows)."""
    units = rejected = checked = failed = 0
    by_rule: dict[str, int] = {}
    for item in items:
        units += 1
        rejected += item.rejected
        checked += item.rows_checked
        failed += item.rows_failed
        for rule, rows in item.failed_by_rule.items():
            by_rule[rule] = by_rule.get(rule, 0) + rows
    return QualitySummary(units, rejected, checked, failed, by_rule)
