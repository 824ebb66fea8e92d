from __future__ import annotations

from typing import Any

import pytest

from mysimbdp.domain.formats import FieldType
from mysimbdp.domain.profile import RowRule
from mysimbdp.domain.quality import RuleFailure, compile_rules


def rules_failed(rule: RowRule, value: Any) -> list[str]:
    return [failure.rule for failure in compile_rules([rule]).check({rule.field: value})]


def test_no_rules_accept_every_row() -> None:
    """A checker without rules finds nothing and says it can be skipped."""
    checker = compile_rules([])
    assert not checker
    assert checker.check({"a": "anything"}) == []


@pytest.mark.parametrize("value", [None, "", "   "])
def test_required_field_missing_fails_only_required(value: Any) -> None:
    """None, "" and blank strings are missing: a required field fails 'required' and nothing else."""
    rule = RowRule(field="x", required=True, type=FieldType.INT, min=1, pattern=r"\d+")
    assert rules_failed(rule, value) == ["x.required"]
    assert compile_rules([rule]).check({}) == [RuleFailure("x.required", "field 'x': required but missing")]


def test_optional_missing_field_is_not_checked() -> None:
    """A missing optional field skips the type, range, pattern and allowed checks."""
    rule = RowRule(field="x", type=FieldType.INT, min=1, pattern="z", allowed=["q"])
    assert rules_failed(rule, "") == []
    assert compile_rules([rule]).check({}) == []


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (FieldType.STR, ["a", "12"], [12, True]),
        (FieldType.INT, [12, "12", "-3", " 7 ", 4.0], ["1.5", "abc", True, 1.5, "1_000"]),
        (FieldType.FLOAT, [1, 1.5, "1.5", "-2e3", ".5"], ["abc", "nan", "inf", False]),
        (FieldType.BOOL, [True, False, "true", "FALSE", "1", "0"], ["yes", 1, "2"]),
        (FieldType.DATE, ["2013-01-01"], ["2013-13-01", "01/02/2013", 20130101]),
        (FieldType.DATETIME, ["2013-01-01T05:00:00", "2013-01-01 05:00:00", "2013-01-01T05:00:00Z"], ["noon"]),
    ],
)
def test_type_checks_accept_and_refuse(kind: FieldType, good: list[Any], bad: list[Any]) -> None:
    """Each type accepts its strings and typed values and refuses the rest with a 'type' failure."""
    rule = RowRule(field="v", type=kind)
    for value in good:
        assert rules_failed(rule, value) == [], value
    for value in bad:
        assert rules_failed(rule, value) == ["v.type"], value


def test_type_failure_message_names_field_value_and_type() -> None:
    """The message names the field, the value and the expected type."""
    (failure,) = compile_rules([RowRule(field="dep_delay", type=FieldType.INT)]).check({"dep_delay": "abc"})
    assert failure == RuleFailure("dep_delay.type", "field 'dep_delay': value 'abc' is not an int")


def test_min_and_max_compare_the_number() -> None:
    """Values below min or above max fail with the limit in the message; the bounds are inclusive."""
    checker = compile_rules([RowRule(field="d", type=FieldType.INT, min=-30, max=60)])
    assert checker.check({"d": "-30"}) == [] and checker.check({"d": 60}) == []
    assert checker.check({"d": "-31"}) == [RuleFailure("d.min", "field 'd': value '-31' is below the min of -30")]
    assert checker.check({"d": 61}) == [RuleFailure("d.max", "field 'd': value 61 is above the max of 60")]


def test_range_is_skipped_when_the_type_check_failed() -> None:
    """A value that is not of its type fails only 'type', not min/max too."""
    assert rules_failed(RowRule(field="d", type=FieldType.FLOAT, min=0), "abc") == ["d.type"]


def test_range_without_a_type_parses_numeric_strings() -> None:
    """With no type, min/max still compare numeric strings and report non-numbers."""
    rule = RowRule(field="d", min=0)
    assert rules_failed(rule, "5") == []
    assert rules_failed(rule, "-1") == ["d.min"]
    assert rules_failed(rule, "abc") == ["d.min"]


def test_pattern_must_match_the_whole_value() -> None:
    """The pattern is a full match on str(value)."""
    rule = RowRule(field="c", pattern="[A-Z]{2}")
    assert rules_failed(rule, "UA") == []
    assert rules_failed(rule, "UAX") == ["c.pattern"]
    assert rules_failed(RowRule(field="n", pattern=r"\d+"), 42) == []


def test_allowed_values_compare_as_strings() -> None:
    """Allowed is membership of str(value), and the message lists the choices."""
    checker = compile_rules([RowRule(field="o", allowed=["EWR", "JFK", "1"])])
    assert checker.check({"o": "JFK"}) == [] and checker.check({"o": 1}) == []
    assert checker.check({"o": "LGA"}) == [
        RuleFailure("o.allowed", "field 'o': value 'LGA' is not one of ['1', 'EWR', 'JFK']")
    ]


def test_every_failure_of_a_row_is_returned() -> None:
    """A row breaking several rules on several fields gets all of them, in rule order."""
    checker = compile_rules(
        [
            RowRule(field="a", required=True),
            RowRule(field="b", type=FieldType.INT, max=5, allowed=["1", "2"]),
            RowRule(field="c", pattern="x+"),
        ]
    )
    failures = checker.check({"b": "9", "c": "y"})
    assert [f.rule for f in failures] == ["a.required", "b.max", "b.allowed", "c.pattern"]


def test_a_catastrophic_pattern_on_a_long_value_is_answered_at_once() -> None:
    """``(a+)+$`` against 100,000 ``a`` and a ``!``: a backtracking engine (Python's ``re``)
    would take exponential time here (this test would hit its timeout); RE2 answers in linear
    time, with the usual pattern failure."""
    from mysimbdp.domain.profile import RowRule
    from mysimbdp.domain.quality import compile_rules

    check = compile_rules([RowRule(field="name", pattern="(a+)+$")])
    assert [f.rule for f in check.check({"name": "a" * 100_000 + "!"})] == ["name.pattern"]
    assert check.check({"name": "a" * 100_000}) == []


def test_plain_rules_from_json_check_rows_as_the_profile_rules_do() -> None:
    """The apps' and the scan child's rules come as JSON, where a bound may be ``8`` (not 8.0)."""
    from mysimbdp.domain.quality import rules_of_quality_json

    rules = rules_of_quality_json('{"rules": [{"field": "qty", "type": "int", "min": 0, "max": 8}]}')
    failures = compile_rules(rules).check({"qty": "9"})
    assert [(f.rule, f.message) for f in failures] == [("qty.max", "field 'qty': value '9' is above the max of 8")]
    same = compile_rules([RowRule(field="qty", type=FieldType.INT, min=0, max=8)]).check({"qty": "9"})
    assert failures == same
