"""Row data-quality rules: compile a profile's ``RowRule`` list once, check every row fast.

The checker takes any :class:`RowRuleLike`: the profile's pydantic ``RowRule`` where a
profile is at hand, or a :class:`PlainRule` built from its JSON in a child process.

Values are strings (CSV) or typed (JSON). A value is missing when its key is absent, it is
None, or it is a blank string. A missing required field fails ``required``; a missing
optional field is not checked further. Every failure of a row is returned, not the first.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from mysimbdp.domain.formats import FieldType
from mysimbdp.domain.patterns import Pattern, compile_pattern

_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_SHOWN_CHARS = 80


class RowRuleLike(Protocol):
    """A row rule as the checker reads it: the profile's ``RowRule`` or a :class:`PlainRule`."""

    @property
    def field(self) -> str: ...
    @property
    def type(self) -> FieldType | None: ...
    @property
    def required(self) -> bool: ...
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...
    @property
    def pattern(self) -> str | None: ...
    @property
    def allowed(self) -> list[str] | None: ...


@dataclass(frozen=True, slots=True)
class PlainRule:
    """A row rule already validated with its profile, as plain data: what the scan child and
    tenants' apps get (they check rows without importing the profile's pydantic models)."""

    field: str
    type: FieldType | None = None
    required: bool = False
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    allowed: list[str] | None = None

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> PlainRule:
        """The rule from its JSON form (a ``RowRule.model_dump(mode="json")``)."""
        kind = doc.get("type")
        allowed = doc.get("allowed")
        return cls(
            field=str(doc["field"]),
            type=FieldType(kind) if kind is not None else None,
            required=bool(doc.get("required", False)),
            min=_number(doc.get("min")),
            max=_number(doc.get("max")),
            pattern=doc.get("pattern"),
            allowed=list(allowed) if allowed is not None else None,
        )


def _number(value: Any) -> float | None:
    """A bound as the profile's model keeps it: a float (JSON may give ``8`` for ``8.0``)."""
    return None if value is None else float(value)


def plain_rules(docs: Sequence[Mapping[str, Any]]) -> tuple[PlainRule, ...]:
    return tuple(PlainRule.of(doc) for doc in docs)


def rules_of_quality_json(text: str) -> tuple[PlainRule, ...]:
    """The row rules of a profile's ``quality`` section in its JSON form (the apps'
    ``MYSIMBDP_QUALITY``); ``ValueError`` saying what is wrong with anything else."""
    try:
        doc = json.loads(text)
        rules = doc.get("rules") or []
        if not isinstance(rules, list) or not all(isinstance(rule, dict) for rule in rules):
            raise TypeError("'rules' is not a list of objects")
        return plain_rules(rules)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a quality section ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True, slots=True)
class RuleFailure:
    rule: str  # "<field>.<check>", check in: required, type, min, max, pattern, allowed
    message: str  # names the field, the rule and the value


class _Bad:
    """Marks a value that failed its type check."""


_BAD = _Bad()
Convert = Callable[[Any], Any]  # returns the typed value, or _BAD


def _to_str(value: Any) -> Any:
    return value if isinstance(value, str) else _BAD


def _to_int(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        return value
    if kind is str:
        text = value.strip()
        return int(text) if _INT_RE.fullmatch(text) else _BAD
    if kind is float and value.is_integer():
        return int(value)
    if kind is Decimal and value == value.to_integral_value():  # an exact number beyond a float's digits
        return int(value)
    return _BAD


def _to_float(value: Any) -> Any:
    kind = type(value)
    if kind is float or kind is int or kind is Decimal:
        return float(value)
    if kind is str:
        text = value.strip()
        return float(text) if _FLOAT_RE.fullmatch(text) else _BAD
    return _BAD


def _to_bool(value: Any) -> Any:
    if type(value) is bool:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return _BAD


def _to_date(value: Any) -> Any:
    if not isinstance(value, str):
        return _BAD
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return _BAD


def _to_datetime(value: Any) -> Any:
    if not isinstance(value, str):
        return _BAD
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        return _BAD


_CONVERTERS: dict[FieldType, tuple[Convert, str]] = {
    FieldType.STR: (_to_str, "a string"),
    FieldType.INT: (_to_int, "an int"),
    FieldType.FLOAT: (_to_float, "a float"),
    FieldType.BOOL: (_to_bool, "a bool (true/false/1/0)"),
    FieldType.DATE: (_to_date, "an ISO date (YYYY-MM-DD)"),
    FieldType.DATETIME: (_to_datetime, "an ISO 8601 date-time"),
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _limit(number: float) -> str:
    return str(int(number)) if number.is_integer() else str(number)


@dataclass(frozen=True, slots=True)
class _FieldCheck:
    field: str
    required: bool
    convert: Convert | None
    type_name: str
    numeric: bool  # the converted value can be compared with min/max as it is
    min: float | None
    max: float | None
    pattern: Pattern | None  # RE2: linear time whatever the pattern and the value
    allowed: frozenset[str] | None

    def run(self, row: Mapping[str, Any], failures: list[RuleFailure]) -> None:
        value = row.get(self.field)
        if value is None or (type(value) is str and not value.strip()):
            if self.required:
                failures.append(RuleFailure(f"{self.field}.required", f"field {self.field!r}: required but missing"))
            return
        typed = value
        if self.convert is not None:
            typed = self.convert(value)
            if typed is _BAD:
                message = f"field {self.field!r}: value {_shown(value)} is not {self.type_name}"
                failures.append(RuleFailure(f"{self.field}.type", message))
        if typed is not _BAD and (self.min is not None or self.max is not None):
            self._range(value, typed, failures)
        if self.pattern is not None and not self.pattern.fullmatch(str(value)):
            message = f"field {self.field!r}: value {_shown(value)} does not match pattern {self.pattern.pattern!r}"
            failures.append(RuleFailure(f"{self.field}.pattern", message))
        if self.allowed is not None and str(value) not in self.allowed:
            message = f"field {self.field!r}: value {_shown(value)} is not one of {sorted(self.allowed)}"
            failures.append(RuleFailure(f"{self.field}.allowed", message))

    def _range(self, value: Any, typed: Any, failures: list[RuleFailure]) -> None:
        number = typed if self.numeric else _to_float(value)
        if number is _BAD or type(number) is bool or (type(number) is float and math.isnan(number)):
            check = "min" if self.min is not None else "max"
            message = f"field {self.field!r}: value {_shown(value)} is not a number to compare with rule {check}"
            failures.append(RuleFailure(f"{self.field}.{check}", message))
            return
        if self.min is not None and number < self.min:
            message = f"field {self.field!r}: value {_shown(value)} is below the min of {_limit(self.min)}"
            failures.append(RuleFailure(f"{self.field}.min", message))
        if self.max is not None and number > self.max:
            message = f"field {self.field!r}: value {_shown(value)} is above the max of {_limit(self.max)}"
            failures.append(RuleFailure(f"{self.field}.max", message))


class RowChecker:
    """Checks rows against compiled rules; build it with ``compile_rules``."""

    __slots__ = ("_checks",)

    def __init__(self, checks: Sequence[_FieldCheck]) -> None:
        self._checks = tuple(checks)

    def check(self, row: Mapping[str, Any]) -> list[RuleFailure]:
        """Every rule the row fails (empty when the row is good)."""
        failures: list[RuleFailure] = []
        for check in self._checks:
            check.run(row, failures)
        return failures

    def __bool__(self) -> bool:
        """False when there are no rules, so callers can skip checking altogether."""
        return bool(self._checks)


def _compile(rule: RowRuleLike) -> _FieldCheck:
    convert, type_name = (None, "") if rule.type is None else _CONVERTERS[rule.type]
    return _FieldCheck(
        field=rule.field,
        required=rule.required,
        convert=convert,
        type_name=type_name,
        numeric=rule.type in (FieldType.INT, FieldType.FLOAT),
        min=rule.min,
        max=rule.max,
        pattern=compile_pattern(rule.pattern) if rule.pattern is not None else None,
        allowed=frozenset(rule.allowed) if rule.allowed is not None else None,
    )


def compile_rules(rules: Sequence[RowRuleLike]) -> RowChecker:
    """Compile ``rules`` once; the checker is then applied to every row."""
    return RowChecker([_compile(rule) for rule in rules])
