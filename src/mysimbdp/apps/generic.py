"""The built-in clientbatchingestapp: any CSV, JSON Lines, JSON or Parquet file, stored as documents.

Run by the default profile as ``python -m mysimbdp.apps.generic``. JSON values keep their
JSON types; Parquet values come typed from the SDK's reader, one row group at a time, in
their JSON forms (``formats.parquet``; docs/tenant-guide.md "Parquet files"). A CSV
column's type (int, float, bool or str) is inferred from the first 1,000 rows, empty
values aside; every empty value is stored as null. A later value that does not fit its
column's type is widened for that value only (int -> float -> str, bool -> str), never
rejected. Numbers keep every digit: an integer of any size is an int, and a decimal that a
float would round (more than 15 significant digits) a ``decimal.Decimal``, written to the
store as its exact digits (``domain.exactjson``).
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

from mysimbdp.domain.exactjson import FLOAT_DIGITS, TINY, exact_float, short_float
from mysimbdp.domain.formats import FieldType, FileFormat

if TYPE_CHECKING:
    from mysimbdp.sdk import BatchContext

Converter = Callable[[str], Any]

SAMPLE_ROWS = 1000
# No leading zeros: "02134" is a code, not a number, and stays a string.
_INT_RE = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
_FLOAT_RE = re.compile(r"[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOLS = {"true": True, "false": False}


def is_int(value: str) -> bool:
    return _INT_RE.fullmatch(value) is not None


def is_float(value: str) -> bool:
    return _FLOAT_RE.fullmatch(value) is not None and math.isfinite(float(value))


def is_bool(value: str) -> bool:
    return value.lower() in _BOOLS


def to_str(value: str) -> str | None:
    return value if value else None


_NUMBER_CHARS = "0123456789.eE+-"
_INT_CHARS = "0123456789+-"


def _leading_zero(value: str) -> bool:
    digits = value[1:] if value[0] in "+-" else value
    return len(digits) > 1 and digits[0] == "0" and digits[1].isdigit()


def to_float(value: str) -> float | Decimal | str | None:
    # Hot path (every value of a float column). One C-level lstrip rejects letters, '_',
    # spaces and non-ASCII digits that float() would accept ('nan', '1_0', ' 1', Arabic-Indic digits).
    if not value:
        return None
    if value.lstrip(_NUMBER_CHARS):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    if number - number != 0.0:  # '1e999' is inf
        return value
    if (value[0] == "0" or value[0] in "+-") and _leading_zero(value):  # '01.5' is a code
        return value
    return number if short_float(value, number) else exact_float(value, number)


def to_int(value: str) -> int | float | Decimal | str | None:
    if not value:
        return None
    if value.lstrip(_INT_CHARS):
        return to_float(value)
    try:
        number = int(value)
    except ValueError:
        return value
    if not ((value[0] == "0" or value[0] in "+-") and _leading_zero(value)):
        return number
    return to_float(value)


def to_bool(value: str) -> bool | str | None:
    if not value:
        return None
    flag = _BOOLS.get(value.lower())
    return value if flag is None else flag


CONVERTERS: dict[FieldType, Converter] = {
    FieldType.INT: to_int,
    FieldType.FLOAT: to_float,
    FieldType.BOOL: to_bool,
    FieldType.STR: to_str,
}
_CHECKS: tuple[tuple[FieldType, Callable[[str], bool]], ...] = (
    (FieldType.INT, is_int),
    (FieldType.FLOAT, is_float),
    (FieldType.BOOL, is_bool),
)


def infer_type(values: Iterable[Any]) -> FieldType:
    """The narrowest of int, float, bool that every non-empty value fits, else str."""
    candidates = dict(_CHECKS)
    seen = False
    for value in values:
        if value == "" or value is None:
            continue
        if not isinstance(value, str):
            return FieldType.STR
        seen = True
        for kind, fits in list(candidates.items()):
            if not fits(value):
                del candidates[kind]
        if not candidates:
            return FieldType.STR
    if not seen:
        return FieldType.STR
    return next(iter(candidates))  # dict order: int before float before bool


def infer_types(rows: Sequence[Mapping[str, Any]]) -> dict[str, FieldType]:
    """Each column's type from sample ``rows`` (columns in first-seen order)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return {name: infer_type(row.get(name) for row in rows) for name in columns}


def convert_row(row: Mapping[str, str], converters: Mapping[str, Converter]) -> dict[str, Any]:
    """``row`` with each value converted by its column's converter (unknown columns: str)."""
    get = converters.get
    return {name: get(name, to_str)(value) for name, value in row.items()}


# -- a whole column at once (blocks of CSV rows) ------------------------------------------
# A column converts in a few C-level passes when every value is clean: not empty, only
# number characters, no leading zero. Any other column goes value by value, as above.
_LEADING_ZERO = re.compile(r"\n[+-]?0[0-9]")
_FLOAT_BYTES = (_NUMBER_CHARS + "\n").encode()
_INT_BYTES = (_INT_CHARS + "\n").encode()
Column = Sequence[Any]


def _clean(column: tuple[str, ...], allowed: bytes) -> bool:
    if "" in column:
        return False
    joined = "\n".join(column)
    return joined.isascii() and not joined.encode().translate(None, allowed) and not _LEADING_ZERO.search("\n" + joined)


def float_column(column: tuple[str, ...]) -> Column:
    """``to_float`` of every value."""
    if _clean(column, _FLOAT_BYTES):
        try:
            values = list(map(float, column))
        except ValueError:
            pass
        else:
            total = sum(values)
            if total - total == 0.0:  # no inf (nor an overflowing sum: then value by value)
                if max(map(len, column)) <= FLOAT_DIGITS:
                    joined = "".join(column)
                    if ("e" not in joined and "E" not in joined) or min(map(abs, values)) > TINY:
                        return values
                return [
                    v if short_float(text, v) else exact_float(text, v) for text, v in zip(column, values, strict=True)
                ]
    return [to_float(value) for value in column]


def int_column(column: tuple[str, ...]) -> Column:
    """``to_int`` of every value."""
    if _clean(column, _INT_BYTES):
        try:
            return list(map(int, column))
        except ValueError:
            pass
    return [to_int(value) for value in column]


def bool_column(column: tuple[str, ...]) -> Column:
    return [to_bool(value) for value in column]


def str_column(column: tuple[str, ...]) -> Column:
    return column if "" not in column else [value or None for value in column]


COLUMN_CONVERTERS: dict[FieldType, Callable[[tuple[str, ...]], Column]] = {
    FieldType.INT: int_column,
    FieldType.FLOAT: float_column,
    FieldType.BOOL: bool_column,
    FieldType.STR: str_column,
}


class TypedRows:
    """The generic transform: CSV rows converted by inferred column types, JSON as is."""

    def __init__(self) -> None:
        self.types: dict[str, FieldType] = {}
        self.converters: dict[str, Converter] | None = None
        self._names: tuple[str, ...] = ()
        self._floats: tuple[str, ...] = ()
        self._others: tuple[tuple[str, Converter], ...] = ()

    def setup(self, ctx: BatchContext) -> None:
        if ctx.config.input_format is not FileFormat.CSV:
            return
        self.types = infer_types(ctx.sample(SAMPLE_ROWS))
        self.converters = {name: CONVERTERS[kind] for name, kind in self.types.items()}
        self._names = tuple(self.converters)
        self._floats = tuple(name for name, f in self.converters.items() if f is to_float)
        self._others = tuple((name, f) for name, f in self.converters.items() if f not in (to_str, to_float))
        described = ", ".join(f"{name}={kind.value}" for name, kind in self.types.items())
        sys.stderr.write(f"mysimbdp.apps.generic: inferred column types: {described or '(no rows)'}\n")

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        converters = self.converters
        if converters is None:
            return row
        if len(row) != len(self._names):
            return convert_row(row, converters)
        # The row is ours to change (the SDK hands each row to transform once): convert the
        # typed columns in place; text columns only turn "" into None.
        for name in self._floats:  # to_float() inlined: this runs for every value of the file
            value = row[name]
            if not value:
                continue  # "" becomes None below
            try:
                number = float(value)
            except ValueError:
                continue  # widened: kept as text
            if number - number == 0.0 and not value.lstrip(_NUMBER_CHARS):
                if value[0] in "0+-" and _leading_zero(value):
                    continue
                row[name] = number if short_float(value, number) else exact_float(value, number)
        for name, convert in self._others:
            row[name] = convert(row[name])
        if "" in row.values():
            for name, value in row.items():
                if value == "":
                    row[name] = None
        return row

    def block(self, header: list[str], rows: list[list[str]]) -> list[dict[str, Any] | None]:
        """The documents of a block of CSV rows, converted column by column (the SDK's
        ``block_transform``): the same documents as ``self(row)`` gives row by row."""
        types = self.types
        columns = [
            COLUMN_CONVERTERS[types.get(name, FieldType.STR)](column)
            for name, column in zip(header, zip(*rows, strict=True), strict=True)
        ]
        return list(map(dict, map(zip, itertools.repeat(header), zip(*columns, strict=True))))


def main() -> NoReturn:
    from mysimbdp.sdk import run_batch

    typed = TypedRows()
    run_batch(typed, setup=typed.setup, block_transform=typed.block)


if __name__ == "__main__":
    main()
