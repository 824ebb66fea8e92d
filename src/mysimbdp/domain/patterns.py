"""Tenant regular expressions, matched in linear time (RE2), never by backtracking.

A profile's ``pattern`` rules run on every row of every file and message a tenant sends. With
Python's ``re`` (a backtracking engine) one rule such as ``(a+)+$`` and one value
``aaaa…!`` take time exponential in the value's length, and held fetchdata at 100 % CPU for
every tenant. RE2 (``google-re2``, Google's engine) matches in time linear in the input for
every pattern it accepts; it refuses the few constructs that need backtracking
(backreferences, lookaround), and :func:`compile_pattern` turns that refusal into the
profile error ``check-profile`` and ``tenant add`` report.
"""

from __future__ import annotations

from typing import Any, Protocol

import re2  # type: ignore[import-untyped]

__all__ = ["Pattern", "compile_pattern"]


class Pattern(Protocol):
    """What the quality rules use of a compiled pattern."""

    pattern: str

    def fullmatch(self, text: str) -> Any: ...


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the refusal is reported as a profile error, not logged by RE2 itself
    return options


def compile_pattern(text: str) -> Pattern:
    """``text`` compiled by RE2; ``ValueError`` naming the pattern and RE2's reason when it
    cannot be matched in linear time (or is not a regular expression at all)."""
    try:
        compiled: Pattern = re2.compile(text, _options())
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(
            f"pattern {text!r} cannot be used: {reason}; patterns are matched by RE2, in linear time, "
            "which has no backreferences or lookaround: rewrite the pattern without them (RE2 syntax)"
        ) from exc
    return compiled
