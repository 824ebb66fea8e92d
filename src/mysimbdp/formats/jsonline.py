"""The JSON Lines reader's second try at a line orjson refused, bounded in depth.

A JSON Lines file nested 100,000 deep got orjson's "depth limit exceeded"; the retry with
``json.loads``, which recurses once per level, raised ``RecursionError`` out of the reader
and stopped every service of ``up``. Such a line is a bad row with its reason now.
"""

from __future__ import annotations

from typing import Any

import orjson

from mysimbdp.domain.exactjson import slow_loads

__all__ = ["MAX_JSON_DEPTH", "json_fallback"]

MAX_JSON_DEPTH = 1024  # orjson's nesting limit; a deeper line is a bad row, never parsed by recursion
_TOO_DEEP = f"not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels"


def json_fallback(line: bytes, exc: orjson.JSONDecodeError) -> tuple[Any] | str:
    """Parse what orjson refuses but is valid JSON (a number beyond a double's range), else the
    problem. ``json.loads`` recurses per level: a line too deep for orjson, or with more opening
    brackets than ``MAX_JSON_DEPTH`` (as deep, maybe), is never handed to it."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise  # a whole-file problem: the guard names the byte offset
    reason = str(exc)
    if "depth limit" in reason or "recursion" in reason.lower():  # orjson: nested over its limit
        return _TOO_DEEP
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        return f"not valid JSON: {reason}"
    try:
        return (slow_loads(text),)
    except ValueError:
        return f"not valid JSON: {reason}"
    except RecursionError:  # up to MAX_JSON_DEPTH levels may still pass Python's recursion limit
        return _TOO_DEEP
