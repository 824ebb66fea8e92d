"""Exact JSON numbers: what orjson would round is read and written digit for digit."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from mysimbdp.domain import exactjson

BIG = "123456789012345678901234567890"
LONG_DECIMAL = "0.1000000000000000000001"


def test_big_integers_and_long_decimals_are_read_exactly() -> None:
    """An integer beyond 64 bits is an int, a decimal a float would round a Decimal, the rest floats."""
    text = f'{{"big": {BIG}, "neg": -{BIG}, "dec": {LONG_DECIMAL}, "f": 1.5, "u64": 18446744073709551615}}'
    value = exactjson.loads(text.encode())
    assert value == {
        "big": int(BIG),
        "neg": -int(BIG),
        "dec": Decimal(LONG_DECIMAL),
        "f": 1.5,
        "u64": 18446744073709551615,
    }
    assert type(value["f"]) is float and type(value["big"]) is int


def test_numbers_beyond_a_doubles_range_are_decimals() -> None:
    """1e400 (orjson refuses it) and 1e-400 (a double makes it 0) keep their values."""
    assert exactjson.loads(b'{"a": 1e400, "b": 1e-400}') == {"a": Decimal("1E+400"), "b": Decimal("1E-400")}


def test_floats_that_round_trip_stay_floats() -> None:
    """A decimal whose float prints back the same number stays a float (1.10 is 1.1)."""
    value = exactjson.loads(b'{"a": 0.30000000000000004, "b": 1.10, "c": "12345678901234567890"}')
    assert value == {"a": 0.30000000000000004, "b": 1.1, "c": "12345678901234567890"}
    assert type(value["a"]) is float


@pytest.mark.parametrize("text", ["{", '{"a": 1e400', '{"a": NaN}', '{"a": 1e400, "b": "\\ud800"}'])
def test_invalid_json_is_still_refused(text: str) -> None:
    """What is not JSON raises orjson's error, whichever parser looked at it last."""
    with pytest.raises(orjson.JSONDecodeError):
        exactjson.loads(text.encode())


def test_dumps_writes_every_digit_and_round_trips() -> None:
    """dumps writes big ints and Decimals as their digits; loads_for_output gives them back to orjson."""
    doc = {"big": int(BIG), "dec": Decimal(LONG_DECIMAL), "list": [int(BIG), 1], "f": 2.5}
    text = exactjson.dumps(doc)
    assert text == f'{{"big":{BIG},"dec":{LONG_DECIMAL},"list":[{BIG},1],"f":2.5}}'.encode()
    assert orjson.dumps(exactjson.loads_for_output(text)) == text
    assert exactjson.loads_for_output(b'{"a": 1}') == {"a": 1}


def test_dumps_refuses_what_is_not_json() -> None:
    """A value JSON has no form for is a TypeError, as with orjson (a NaN Decimal too)."""
    with pytest.raises(TypeError):
        exactjson.dumps({"a": object()})
    with pytest.raises(TypeError):
        exactjson.dumps({"a": Decimal("NaN")})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.5", 1.5), ("0", 0.0), ("1e-400", Decimal("1E-400")), (LONG_DECIMAL, Decimal(LONG_DECIMAL)), ("1e5", 1e5)],
)
def test_exact_float(text: str, expected: float | Decimal) -> None:
    """exact_float gives the float when it is the text's number, else the Decimal."""
    value = exactjson.exact_float(text)
    assert value == expected and type(value) is type(expected)
