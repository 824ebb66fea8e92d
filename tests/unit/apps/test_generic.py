"""The generic app's CSV typing: inference from a sample, per-value widening, nulls."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mysimbdp.apps.generic import (
    COLUMN_CONVERTERS,
    CONVERTERS,
    TypedRows,
    convert_row,
    infer_type,
    infer_types,
    to_bool,
    to_float,
    to_int,
    to_str,
)
from mysimbdp.domain.formats import FieldType


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "-2", "+3", "0"], FieldType.INT),
        (["1", "2.5", "-.5", "1e3"], FieldType.FLOAT),
        (["true", "False", "TRUE"], FieldType.BOOL),
        (["1", "x"], FieldType.STR),
        (["true", "1"], FieldType.STR),
        (["02134", "10001"], FieldType.STR),
        (["12", "", "", "7"], FieldType.INT),
        (["", ""], FieldType.STR),
        ([], FieldType.STR),
        (["nan", "1.5"], FieldType.STR),
        (["1e999"], FieldType.STR),
        (["1_000"], FieldType.STR),
        ([" 1"], FieldType.STR),
        (["9223372036854775807"], FieldType.INT),
        (["9223372036854775808"], FieldType.INT),  # any size: kept exactly
    ],
)
def test_infer_type(values: list[str], expected: FieldType) -> None:
    """A column gets the narrowest type all its non-empty sample values fit; empties never count."""
    assert infer_type(values) is expected


def test_infer_types_per_column_in_header_order() -> None:
    """Each column of the sample rows is typed on its own, in first-seen order."""
    rows = [
        {"id": "1", "price": "2", "ok": "true", "name": "a"},
        {"id": "2", "price": "2.50", "ok": "", "name": "7"},
    ]
    assert infer_types(rows) == {
        "id": FieldType.INT,
        "price": FieldType.FLOAT,
        "ok": FieldType.BOOL,
        "name": FieldType.STR,
    }
    assert list(infer_types(rows)) == ["id", "price", "ok", "name"]


def test_int_values_widen_per_value() -> None:
    """In an int column a value that is not an int becomes a float, else stays a string."""
    assert to_int("42") == 42 and type(to_int("42")) is int
    assert to_int("4.5") == 4.5
    assert to_int("9223372036854775808") == 2**63 and type(to_int("9223372036854775808")) is int
    assert to_int("n/a") == "n/a"
    assert to_int("007") == "007"
    assert to_int("") is None


def test_float_bool_str_values() -> None:
    """Floats accept ints and exponents; bools accept any case; non-fitting values stay strings."""
    assert to_float("3") == 3.0 and type(to_float("3")) is float
    assert to_float("-1.5e2") == -150.0
    assert to_float("inf") == "inf"
    assert to_float("") is None
    assert to_bool("TRUE") is True and to_bool("false") is False
    assert to_bool("yes") == "yes"
    assert to_bool("") is None
    assert to_str("") is None and to_str("x") == "x"


def test_convert_row_uses_precomputed_converters() -> None:
    """A row is converted column by column; a column outside the sample is kept as a string."""
    converters = {"id": CONVERTERS[FieldType.INT], "ok": CONVERTERS[FieldType.BOOL]}
    row = {"id": "12", "ok": "True", "extra": "", "more": "x"}
    assert convert_row(row, converters) == {"id": 12, "ok": True, "extra": None, "more": "x"}
    assert convert_row({"id": "1.5", "ok": "maybe"}, converters) == {"id": 1.5, "ok": "maybe"}


TRICKY = [
    "1",
    "-1",
    "+1",
    "01",
    "-01",
    "0",
    "-0",
    "1.5",
    "01.5",
    "0.5",
    ".5",
    "5.",
    "1e5",
    "1E-3",
    "0e5",
    "1_000",
    " 1",
    "1 ",
    "١٢",
    "nan",
    "inf",
    "-Infinity",
    "1e999",
    "0x10",
    "",
    "abc",
    "1.2.3",
    "+.5",
    "00",
]


@pytest.mark.parametrize("value", TRICKY)
def test_fast_converters_agree_with_the_number_grammar(value: str) -> None:
    """The try-float()/int() fast path converts exactly the values the regular grammar accepts."""
    from mysimbdp.apps.generic import is_float, is_int, to_float, to_int

    expected_float = float(value) if value and is_float(value) else (value or None)
    assert to_float(value) == expected_float
    if value and is_int(value):
        assert to_int(value) == int(value) and isinstance(to_int(value), int)
    else:
        assert not isinstance(to_int(value), int) or isinstance(to_int(value), bool)


TRICKY = [
    "",
    "0",
    "-0",
    "+7",
    "007",
    "-01",
    "0.5",
    "00.5",
    "1.",
    ".5",
    "-.5",
    "1e3",
    "1e999",
    "-1e999",
    "nan",
    "inf",
    "1_0",
    " 1",
    "١٢",
    "e",
    "+-1",
    "1e",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "true",
    "FALSE",
    "x",
    "1.7976931348623157e308",
]


@pytest.mark.parametrize("kind", list(CONVERTERS))
@pytest.mark.parametrize("values", [["1", "2", "3"], ["1.5", "-2", "3e2"], TRICKY, ["12", "", "7"]])
def test_a_column_converts_as_its_values_do_one_by_one(kind: FieldType, values: list[str]) -> None:
    column = tuple(values)
    assert list(COLUMN_CONVERTERS[kind](column)) == [CONVERTERS[kind](value) for value in column]


def test_a_block_gives_the_documents_of_the_rows() -> None:
    typed = TypedRows()
    typed.types = {"id": FieldType.INT, "t": FieldType.FLOAT, "ok": FieldType.BOOL, "s": FieldType.STR}
    typed.converters = {name: CONVERTERS[kind] for name, kind in typed.types.items()}
    typed._names = tuple(typed.types)
    typed._floats = ("t",)
    typed._others = (("id", to_int), ("ok", to_bool))
    header = ["id", "t", "ok", "s"]
    rows = [["1", "2.5", "true", "a"], ["02", "", "no", ""], ["3", "1e999", "FALSE", "z"]]
    expected = [typed(dict(zip(header, row, strict=True))) for row in rows]
    assert typed.block(header, rows) == expected
    assert expected[1] == {"id": "02", "t": None, "ok": "no", "s": None}


def test_the_generic_app_on_sqlite_loads_no_client_of_another_backend_and_no_pydantic() -> None:
    """Every file's run starts this app: with a SQLite store it must not pay for psycopg (about
    100 ms), the brokers' clients or the profile's pydantic models."""
    probe = (
        "import sys, mysimbdp.apps.generic, mysimbdp.adapters.coredms.sqlite; "
        "print(sorted(m for m in ('psycopg', 'nats', 'aio_pika', 'pydantic', 'structlog') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
