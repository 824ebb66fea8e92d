"""JSON that keeps every digit: integers beyond 64 bits and decimals a double would round.

orjson, the parser used everywhere, turns an integer beyond 64 bits into a float and rounds
a decimal of more than 17 significant digits, silently (``123456789012345678901234567890``
became ``1.2345678901234568e+29``). Here:

- :func:`loads` parses with orjson and, only when the text holds a number that may lose
  digits (16 or more digits and points in a row, or a negative exponent of three digits), parses it
  again with ``json``: integers come as Python ``int`` (any size) and a decimal that a float
  would change comes as ``decimal.Decimal`` (every other number stays a float).
- :func:`dumps` writes ``Decimal`` and ``int`` of any size as their exact digits.
- :func:`loads_for_output` is :func:`loads` where those exact numbers come as
  ``orjson.Fragment`` of their digits, so ``orjson.dumps`` of the result (the documents API,
  ``mysimbdp query``) writes them back unchanged.

Pure: no IO.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

__all__ = [
    "LONG_RUN",
    "LOSSY_TABLE",
    "TINY_EXPONENT",
    "dumps",
    "exact_float",
    "exact_int",
    "loads",
    "loads_for_output",
    "maybe_lossy",
    "reread",
    "short_float",
    "slow_loads",
]

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1  # what orjson reads and writes as an int
FLOAT_DIGITS = 15  # a decimal text of at most this many characters round-trips through a double,
TINY = 1e-300  # unless its value is this close to zero
# A number that may lose digits in orjson: 16+ digits/points in a row (more significant digits
# than a double holds, or an integer beyond 64 bits), or a negative exponent of three digits
# (a double's subnormal range or below: 1e-400 became 0.0); a bigger exponent orjson refuses.
# Found with one bytes.translate (digits and '.' -> '0', 'e'/'E' -> 'e', '-' kept, the rest
# ' ') and two substring searches, all in C: a regular expression cost 5 times orjson's parse.
# The run may sit inside a string too: then the slow parse finds nothing to change.
LOSSY_TABLE = bytes(
    ord("0") if chr(c) in "0123456789." else ord("e") if chr(c) in "eE" else c if chr(c) == "-" else ord(" ")
    for c in range(256)
)
LONG_RUN, TINY_EXPONENT = b"0" * (FLOAT_DIGITS + 1), b"e-000"


def maybe_lossy(data: bytes | str) -> bool:
    """Whether ``data`` may hold a number that orjson would not read exactly."""
    shape = (data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data).translate(LOSSY_TABLE)
    return LONG_RUN in shape or TINY_EXPONENT in shape


def reread(data: bytes | str, value: Any) -> Any:
    """``value`` (orjson's parse of ``data``) again with exact numbers, when
    :func:`maybe_lossy` says ``data`` may hold one (the caller checked)."""
    try:
        return slow_loads(data)
    except RecursionError:  # deeper than Python recurses, not than orjson: keep its parse
        return value


def short_float(text: str, number: float) -> bool:
    """Whether ``number`` (``float(text)``) surely is ``text``'s exact value: few digits, and
    not so close to zero that a double rounds it (its subnormal range) or turns it into 0."""
    return len(text) <= FLOAT_DIGITS and (abs(number) > TINY or ("e" not in text and "E" not in text))


def exact_float(text: str, number: float | None = None) -> float | Decimal:
    """The float of a JSON/CSV decimal ``text`` (``number``, when already parsed) when it
    gives back the same number, else its ``Decimal`` (more digits than a double holds, or
    beyond its range)."""
    if number is None:
        number = float(text)
    if number - number != 0.0:  # beyond a double's range
        return Decimal(text)
    if short_float(text, number):
        return number
    return number if Decimal(repr(number)) == Decimal(text) else Decimal(text)


def exact_int(text: str) -> int | Decimal:
    try:
        return int(text)
    except ValueError:  # over Python's 4,300 digits for int(): still exact as a Decimal
        return Decimal(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_float=exact_float, parse_int=exact_int, parse_constant=_reject_constant)


def slow_loads(text: str | bytes) -> Any:
    """Parse with ``json``, numbers exact (``int``, ``Decimal``); raises ``ValueError``."""
    return _DECODER.decode(text.decode("utf-8") if isinstance(text, bytes) else text)


def loads(data: bytes | str) -> Any:
    """Parse JSON as ``orjson.loads`` does, but with every number exact (see the module).

    Raises ``orjson.JSONDecodeError`` for what orjson refuses, unless it is valid JSON whose
    numbers orjson cannot hold (``1e400``): that is parsed exactly."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "number" not in str(exc) or not maybe_lossy(data):  # only a number orjson cannot hold
            raise
        try:
            value = slow_loads(data)
            dumps(value)  # what else orjson refuses (a lone surrogate) stays refused
        except (ValueError, RecursionError, TypeError):
            raise exc from None
        return value
    return reread(data, value) if maybe_lossy(data) else value


def _fragment(value: Any) -> Any:
    if type(value) is int and not INT64_MIN <= value <= UINT64_MAX:
        return orjson.Fragment(str(value))
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    if type(value) is dict:
        return {key: _fragment(item) for key, item in value.items()}
    if type(value) is list:
        return [_fragment(item) for item in value]
    return value


def loads_for_output(data: bytes | str) -> Any:
    """:func:`loads`, with each number that a float or a 64-bit int cannot hold as an
    ``orjson.Fragment`` of its digits (written back as they are by ``orjson.dumps``)."""
    value = loads(data)
    return _fragment(value) if maybe_lossy(data) else value


def _default(value: Any) -> Any:
    if isinstance(value, Decimal) and value.is_finite():
        return orjson.Fragment(str(value))
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _big_ints(value: Any) -> Any:
    if type(value) is int and not INT64_MIN <= value <= UINT64_MAX:
        return orjson.Fragment(str(value))
    if isinstance(value, dict):
        return {key: _big_ints(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_big_ints(item) for item in value]
    return value


def dumps(value: Any, *, option: int | None = None) -> bytes:
    """``orjson.dumps`` that also writes ``Decimal`` and integers of any size, digit for digit.

    Raises ``TypeError`` (``orjson.JSONEncodeError``) for what is not JSON."""
    try:
        return orjson.dumps(value, default=_default, option=option)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        return orjson.dumps(_big_ints(value), default=_default, option=option)
