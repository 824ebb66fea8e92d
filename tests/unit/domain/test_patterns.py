"""Tenant patterns run on RE2: refused by the profile check when RE2 cannot run them (naming
the rule's field and the pattern), matched as Python's ``re`` would for everything else."""

from __future__ import annotations

import json
import re

import pytest

from mysimbdp.domain.patterns import compile_pattern
from mysimbdp.domain.profile import parse_profile
from mysimbdp.errors import ProfileError


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\1", "backreference"),
        ("(?=x)y", "lookahead"),
        ("(?<!x)y", "lookbehind"),
        ("a{1001}", "a repetition over RE2's limit"),
        ("(", "not a regular expression"),
    ],
)
def test_check_profile_refuses_what_re2_cannot_run_naming_field_and_pattern(pattern: str, why: str) -> None:
    """Each of these (``why``) is refused with the rule's field, the pattern and what to do."""
    text = f"quality: {{rules: [{{field: code, pattern: {json.dumps(pattern)}}}]}}\n"  # JSON is YAML
    with pytest.raises(ProfileError) as raised:
        parse_profile(text, "p.yaml")
    message = str(raised.value)
    assert "quality.rules.0.pattern" in message and "rule on field 'code'" in message, why
    assert f"pattern {pattern!r} cannot be used" in message and "rewrite the pattern" in message, why


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=x)y"])
def test_what_re2_refuses_compiles_with_re(pattern: str) -> None:
    """The refusal is RE2's own: Python's backtracking engine would have taken these."""
    assert re.compile(pattern)


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("^[a-z][0-9]$", "a1", True),
        ("^[a-z][0-9]$", "a12", False),
        (r"\d{4}-\d{2}-\d{2}", "2024-01-31", True),
        ("(a+)+$", "aaaa", True),
        ("(a+)+$", "aaaa!", False),
        ("é+", "ééé", True),
        ("(?i)abc", "ABC", True),
    ],
)
def test_fullmatch_agrees_with_re(pattern: str, value: str, matches: bool) -> None:
    """On ordinary patterns RE2's answer is ``re``'s (UTF-8 text, flags inline)."""
    assert (compile_pattern(pattern).fullmatch(value) is not None) is matches
    assert (re.fullmatch(pattern, value) is not None) is matches
