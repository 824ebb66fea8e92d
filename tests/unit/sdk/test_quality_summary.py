"""Quality as counts (``domain/qualitycounts.py``), the report fields that carry a stream
window's counts, and the stream SDK's per-record check: pure, offline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from mysimbdp import contract
from mysimbdp.adapters.broker import Message
from mysimbdp.domain.envelope import Envelope, encode_batch
from mysimbdp.domain.facts import FileFacts
from mysimbdp.domain.formats import FieldType, FileFormat
from mysimbdp.domain.profile import RowRule
from mysimbdp.domain.quality import PlainRule, RuleFailure, compile_rules
from mysimbdp.domain.qualitycounts import (
    FileQuality,
    QualityVerdict,
    RuleTally,
    WindowQuality,
    file_quality,
    summarize,
)
from mysimbdp.domain.scaling import Report
from mysimbdp.errors import AppContractError
from mysimbdp.sdk.stream import Documents, StreamConfig, StreamContext


def _facts(total: int, bad: int, by_rule: dict[str, int], unreadable: str | None = None) -> FileFacts:
    return FileFacts(
        name="orders.csv",
        size_bytes=100,
        sha256="0" * 64,
        format=FileFormat.CSV,
        is_binary=False,
        utf8_error=None,
        has_bom=False,
        max_line_bytes=10,
        longest_line=1,
        columns=["sku", "qty"],
        rows_total=total,
        rows_bad=bad,
        bad_by_rule=by_rule,
        samples=(),
        unreadable=unreadable,
    )


def _file(verdict: QualityVerdict, checked: int, failed: int, by_rule: dict[str, int]) -> FileQuality:
    return FileQuality("f1", "acme", 1.0, checked, failed, by_rule, 0.1, verdict)


def _window(checked: int, failed: int, by_rule: dict[str, int]) -> WindowQuality:
    return WindowQuality(1.0, "acme", "orders", "generic", "i1", checked, failed, by_rule)


def test_a_tally_counts_each_failed_row_once_and_each_rule_once_per_row() -> None:
    """Two failures of one rule in one row count that rule once; ``take`` hands the counts over and restarts."""
    tally = RuleTally()
    twice = [RuleFailure("qty.min", "a"), RuleFailure("qty.min", "b"), RuleFailure("sku.required", "c")]
    tally.add(10, [twice, [RuleFailure("qty.min", "d")]])
    tally.add(5, ())
    assert tally.take() == (15, 2, {"qty.min": 2, "sku.required": 1})
    assert tally.take() == (0, 0, {})


@pytest.mark.parametrize(
    ("facts", "rules", "verdict"),
    [
        (_facts(10, 1, {"qty.type": 1}), [], QualityVerdict.PASSED),
        (_facts(10, 1, {"qty.type": 1}), ["size"], QualityVerdict.PASSED),  # rejected, but not for its quality
        (_facts(10, 6, {"qty.type": 4, "ragged": 2}), ["bad_row_ratio"], QualityVerdict.REJECTED),
        (_facts(0, 0, {}), ["header_only"], QualityVerdict.UNCHECKED),
        (_facts(3, 0, {}, unreadable="unterminated quote"), ["unreadable"], QualityVerdict.UNCHECKED),
    ],
)
def test_a_files_verdict_follows_its_bad_row_ratio_rule(
    facts: FileFacts, rules: list[str], verdict: QualityVerdict
) -> None:
    """Rejected only for ``bad_row_ratio``; unchecked when no row could be checked; else passed."""
    quality = file_quality("f1", "acme", 5.0, facts, 0.1, rules)
    assert quality.verdict is verdict
    assert (quality.rows_checked, quality.rows_failed, quality.failed_by_rule) == (
        facts.rows_total,
        facts.rows_bad,
        facts.bad_by_rule,
    )
    assert quality.max_bad_row_ratio == 0.1 and quality.at == 5.0


def test_file_quality_json_gives_ratio_threshold_verdict_and_rules_most_failed_first() -> None:
    """The stored shape that reports and the API show."""
    quality = _file(QualityVerdict.REJECTED, 8, 3, {"a.type": 1, "ragged": 2})
    assert quality.to_json() == {
        "rows_checked": 8,
        "rows_failed": 3,
        "ratio": 0.375,
        "max_bad_row_ratio": 0.1,
        "verdict": "rejected",
        "failed_by_rule": {"ragged": 2, "a.type": 1},
    }
    assert list(quality.to_json()["failed_by_rule"]) == ["ragged", "a.type"]


def test_summarize_adds_up_files_and_names_the_top_rules() -> None:
    """Rows and per-rule counts are summed, rejected files counted, top rules by rows then name."""
    files = [
        _file(QualityVerdict.PASSED, 100, 2, {"qty.type": 2}),
        _file(QualityVerdict.REJECTED, 10, 8, {"qty.type": 5, "sku.pattern": 3, "ragged": 3}),
        _file(QualityVerdict.UNCHECKED, 0, 0, {}),
    ]
    summary = summarize(files)
    assert (summary.units, summary.rejected, summary.rows_checked, summary.rows_failed) == (3, 1, 110, 10)
    assert summary.top_rules(2) == [("qty.type", 7), ("ragged", 3)]
    assert summary.to_json() == {
        "rows_checked": 110,
        "rows_failed": 10,
        "ratio": 0.090909,
        "top_rules": [
            {"rule": "qty.type", "rows": 7},
            {"rule": "ragged", "rows": 3},
            {"rule": "sku.pattern", "rows": 3},
        ],
    }


def test_summarize_windows_and_nothing() -> None:
    """Windows are never rejected; nothing checked is a ratio of 0, not a division error."""
    summary = summarize([_window(50, 5, {"temp.max": 5}), _window(50, 0, {})])
    assert (summary.units, summary.rejected, summary.ratio) == (2, 0, 0.05)
    empty = summarize([])
    assert (empty.units, empty.rows_checked, empty.ratio, empty.top_rules()) == (0, 0, 0.0, [])


def test_a_report_carries_its_windows_quality_and_an_older_one_reads_as_none() -> None:
    """``to_json``/``from_json`` keep the counts; a report without them (older SDK) has zeros; a
    forged ``failed_by_rule`` is refused with ValueError or TypeError, as the monitor expects."""
    report = Report(1.0, "acme", "orders", "generic", "i1", 5.0, 3, 90, 900, 10, 4.0, 8.0, 0)
    checked = Report.from_json(
        {**report.to_json(), "rows_checked": 100, "rows_failed": 10, "failed_by_rule": {"temp.max": 10}}
    )
    assert (checked.rows_checked, checked.rows_failed, checked.failed_by_rule) == (100, 10, {"temp.max": 10})
    assert Report.from_json(orjson.loads(orjson.dumps(checked.to_json()))) == checked
    older = {k: v for k, v in report.to_json().items() if k not in ("rows_checked", "rows_failed", "failed_by_rule")}
    assert (Report.from_json(older).rows_checked, Report.from_json(older).failed_by_rule) == (0, {})
    assert WindowQuality.of(checked) == WindowQuality(1.0, "acme", "orders", "generic", "i1", 100, 10, {"temp.max": 10})
    for forged in ([1, 2], {"temp.max": "many"}, "x"):
        with pytest.raises((ValueError, TypeError)):
            Report.from_json({**report.to_json(), "failed_by_rule": forged})


# -- the stream SDK's check -------------------------------------------------------------------
RULES = [RowRule(field="temp", type=FieldType.FLOAT, required=True, max=85), RowRule(field="site", pattern="^[a-z]+$")]


def _env(tmp_path: Path, quality: str | None) -> dict[str, str]:
    env = {
        contract.TENANT: "acme",
        contract.STREAM: "readings",
        contract.DATASET: "readings",
        contract.BROKER_URL: "nats://127.0.0.1:1",
        contract.COREDMS_URL: "sqlite:///unused",
        contract.REJECTS: str(tmp_path / "rejects.jsonl"),
    }
    if quality is not None:
        env[contract.QUALITY] = quality
    return env


def test_stream_config_reads_the_rules_and_names_a_bad_quality_variable(tmp_path: Path) -> None:
    """``MYSIMBDP_QUALITY`` gives the rules; none or "" gives none; invalid JSON is a contract error naming it."""
    quality = orjson.dumps({"rules": [r.model_dump() for r in RULES]}).decode()
    rules = StreamConfig.from_env(_env(tmp_path, quality)).quality_rules
    assert rules == tuple(PlainRule(**r.model_dump()) for r in RULES)  # plain data: no pydantic in the app
    assert StreamConfig.from_env(_env(tmp_path, "")).quality_rules == ()
    assert StreamConfig.from_env(_env(tmp_path, None)).quality_rules == ()
    with pytest.raises(AppContractError, match="MYSIMBDP_QUALITY is not a valid quality section"):
        StreamConfig.from_env(_env(tmp_path, '{"rules": [{"field": 1}]'))
    with pytest.raises(AppContractError, match=r"MYSIMBDP_QUALITY is not a valid quality section.*'number'"):
        StreamConfig.from_env(_env(tmp_path, '{"rules": [{"field": "t", "type": "number"}]}'))


def _context(tmp_path: Path, rules: list[RowRule]) -> StreamContext:
    config = replace(StreamConfig.from_env(_env(tmp_path, None)), quality_rules=tuple(rules))
    return StreamContext(config, broker=None, store=None)  # type: ignore[arg-type]  # documents() uses neither


def _message(records: Sequence[dict[str, Any]]) -> Message:
    envelopes = [Envelope(f"e{n}", data) for n, data in enumerate(records)]
    return Message(encode_batch("acme", "readings", envelopes), 1, "m1")


def test_failing_records_are_quarantined_naming_rule_and_value_and_counted(tmp_path: Path) -> None:
    """Of four records two fail (one breaks two rules): they never reach the transform, each is
    quarantined with every rule and value, and the window counts 4 checked, 2 failed, per rule."""
    ctx = _context(tmp_path, RULES)
    seen: list[dict[str, object]] = []

    def transform(data: dict[str, object]) -> dict[str, object]:
        seen.append(data)
        return data

    out = Documents([], [], [])
    records: list[dict[str, Any]] = [
        {"temp": 20, "site": "a"},
        {"temp": 99, "site": "b"},
        {"temp": 21},
        {"temp": "hot", "site": "X1"},
    ]
    ctx.documents([_message(records)], transform, out)
    ctx.close()
    assert out.ids == ["e0", "e2"] and seen == [records[0], records[2]]
    rejects = [orjson.loads(line) for line in (tmp_path / "rejects.jsonl").read_bytes().splitlines()]
    assert [r["id"] for r in rejects] == ["e1", "e3"]
    assert rejects[0]["reason"] == "rule temp.max: field 'temp': value 99 is above the max of 85"
    assert rejects[1]["reason"].startswith(
        "rule temp.type: field 'temp': value 'hot' is not a float; rule site.pattern:"
    )
    assert "'X1'" in rejects[1]["reason"]
    assert ctx.quality.take() == (4, 2, {"temp.max": 1, "temp.type": 1, "site.pattern": 1})
    assert ctx.counters.rejected == 2


def test_without_rules_nothing_is_checked_or_counted(tmp_path: Path) -> None:
    """No rules: every record goes to the transform, the window's quality stays at zero."""
    ctx = _context(tmp_path, [])
    out = Documents([], [], [])
    ctx.documents([_message([{"temp": 99}, {"x": 1}])], dict, out)
    assert out.ids == ["e0", "e1"]
    assert ctx.quality.take() == (0, 0, {})
    assert not compile_rules([])  # the checker the context would skip
