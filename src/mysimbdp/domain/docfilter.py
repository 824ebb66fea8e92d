"""The read API's document filter: a subset of MongoDB's query language, as plain data.

A filter is a JSON object in a subset of MongoDB's query language::

    {"city": "Oslo", "temp": {"$gte": 10, "$lt": 20}, "$or": [{"meta.ok": true}, {"n": {"$in": [1, 2]}}]}

:func:`parse_filter` turns it into a small AST (:class:`Compare`, :class:`And`, :class:`Or`)
or raises :class:`~mysimbdp.errors.FilterError` naming the rule, the place and the value;
``coredms.filtersql`` compiles the AST to SQL with every value and path a bound parameter.

What a filter means (the same on SQLite, PostgreSQL and the tests' reference evaluator):

- A field is a name, or a dotted path into nested objects (``meta.ts``). A path reaches
  object keys only: no array indexing (a segment of digits only is refused, as PostgreSQL
  would index an array with it) and no matching of array elements (a field holding an
  array equals no scalar).
- ``$eq``: the same type and value; numbers compare as numbers (``1`` equals ``1.0``),
  booleans are not numbers. ``{"f": null}`` matches a null ``f`` and a missing one (MongoDB).
- ``$gt $gte $lt $lte``: a number or a string; they match values of the same type bracket
  only (numbers with numbers, strings with strings in code point order, which is UTF-8
  byte order); a value of another type (or a missing one) never matches, as in MongoDB.
- ``$in``: ``$eq`` one of a list of scalars; ``$ne`` and ``$nin`` are their negations, so
  they match a missing field and values of other types.
- ``$exists``: ``true`` the field is there (null too), ``false`` it is not.
- Several fields or operators in one object are ANDed; ``$and`` / ``$or`` take a non-empty
  list of filters.

Pure: no IO.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeAlias

import orjson

from mysimbdp.errors import FilterError

__all__ = [
    "MATCH_ALL",
    "MAX_DEPTH",
    "MAX_FILTER_BYTES",
    "MAX_IN",
    "MAX_LEAVES",
    "MAX_PATH_CHARS",
    "MAX_PATH_SEGMENTS",
    "RANGE_OPS",
    "SUPPORTED",
    "And",
    "Compare",
    "Node",
    "Op",
    "Or",
    "Path",
    "Scalar",
    "filter_digest",
    "filter_json",
    "parse_filter",
    "parse_path",
]

MAX_FILTER_BYTES = 16384  # the filter's JSON text
MAX_DEPTH = 8  # $and / $or nested in one another
MAX_IN = 500  # values of one $in / $nin
MAX_LEAVES = 100  # comparisons in one filter
MAX_PATH_CHARS = 200  # a field path, dots included
MAX_PATH_SEGMENTS = 8  # names in a dotted path

Scalar: TypeAlias = bool | int | float | str | None
Path: TypeAlias = tuple[str, ...]


class Op(StrEnum):
    EQ = "$eq"
    NE = "$ne"
    GT = "$gt"
    GTE = "$gte"
    LT = "$lt"
    LTE = "$lte"
    IN = "$in"
    NIN = "$nin"
    EXISTS = "$exists"


RANGE_OPS = frozenset({Op.GT, Op.GTE, Op.LT, Op.LTE})
LOGICAL = ("$and", "$or")
SUPPORTED = (*(op.value for op in Op), *LOGICAL)
_SUPPORTED_TEXT = ", ".join(SUPPORTED)


@dataclass(frozen=True, slots=True)
class Compare:
    """One comparison of the field at ``path``. ``value``: a scalar (``$eq`` … ``$lte``), a
    tuple of scalars (``$in``, ``$nin``) or a bool (``$exists``)."""

    path: Path
    op: Op
    value: Any


@dataclass(frozen=True, slots=True)
class And:
    clauses: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    clauses: tuple[Node, ...]


Node: TypeAlias = Compare | And | Or
MATCH_ALL = And(())  # the empty filter


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def parse_path(text: str, what: str = "field") -> Path:
    """The segments of a dotted field path, checked; raises :class:`FilterError`."""

    def refuse(why: str) -> FilterError:
        return FilterError("field_path", f"{what} {text[:MAX_PATH_CHARS]!r}: {why}", field=text[:MAX_PATH_CHARS])

    if not isinstance(text, str) or not text:
        raise FilterError("field_path", f"{what} names no field: give a name, or a dotted path such as 'meta.ts'")
    if len(text) > MAX_PATH_CHARS:
        raise refuse(f"longer than {MAX_PATH_CHARS} characters (the limit)")
    parts = tuple(text.split("."))
    if len(parts) > MAX_PATH_SEGMENTS:
        raise refuse(f"{len(parts)} segments, over the limit of {MAX_PATH_SEGMENTS}")
    for part in parts:
        if not part:
            raise refuse("an empty segment (two dots in a row, or a dot at an end)")
        if part.startswith("$"):
            raise refuse(f"segment {part!r} starts with '$', which marks operators ({_SUPPORTED_TEXT})")
        if part.isdigit():
            raise refuse(f"segment {part!r} is digits only: array positions are not supported")
        if any(ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in part):
            raise refuse(f"segment {part!r} holds a quote, a backslash or a control character")
    return parts


def _check_value(value: Any, op: Op, field: str) -> Any:
    where = f"field {field!r}: {op.value}"
    if op is Op.EXISTS:
        if not isinstance(value, bool):
            raise FilterError("filter_type", f"{where} takes true or false, got {_kind(value)}", operator=op.value)
        return value
    if op in (Op.IN, Op.NIN):
        if not isinstance(value, list):
            raise FilterError(
                "filter_type", f"{where} takes an array of scalars, got {_kind(value)}", operator=op.value
            )
        if len(value) > MAX_IN:
            raise FilterError(
                "filter_in_limit",
                f"{where} lists {len(value)} values, over the limit of {MAX_IN}",
                operator=op.value,
                limit=MAX_IN,
            )
        return tuple(_check_value(item, Op.EQ, field) for item in value)
    if op in RANGE_OPS:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise FilterError(
                "filter_type", f"{where} takes a number or a string, got {_kind(value)}", operator=op.value
            )
    elif not _is_scalar(value):
        raise FilterError(
            "filter_type",
            f"{where} takes a string, number, boolean or null, got {_kind(value)}"
            " (to reach a nested field, use a dotted path such as 'meta.ts')",
            operator=op.value,
        )
    if isinstance(value, str) and "\0" in value:
        raise FilterError("filter_type", f"{where}: a string holding a NUL character matches no document")
    return value


class _Parser:
    def __init__(self) -> None:
        self.leaves = 0

    def node(self, value: Any, depth: int) -> Node:
        if not isinstance(value, dict):
            raise FilterError("filter_type", f"a filter is a JSON object, got {_kind(value)}")
        if depth > MAX_DEPTH:
            raise FilterError(
                "filter_depth", f"$and / $or nested deeper than the limit of {MAX_DEPTH}", limit=MAX_DEPTH
            )
        clauses: list[Node] = []
        for name, operand in value.items():
            if name in LOGICAL:
                if not isinstance(operand, list) or not operand:
                    raise FilterError("filter_type", f"{name} takes a non-empty array of filters, got {_kind(operand)}")
                subs = tuple(self.node(item, depth + 1) for item in operand)
                clauses.append(And(subs) if name == "$and" else Or(subs))
            elif name.startswith("$"):
                hint = ' (comparisons go under a field: {"f": {"$gt": 1}})' if name in tuple(Op) else ""
                raise FilterError(
                    "filter_operator",
                    f"unknown operator {name!r} at the top of a filter{hint}; supported: {_SUPPORTED_TEXT}",
                    operator=name,
                    supported=list(SUPPORTED),
                )
            else:
                clauses.extend(self.field(name, operand))
        return clauses[0] if len(clauses) == 1 else And(tuple(clauses))

    def field(self, name: str, operand: Any) -> list[Node]:
        path = parse_path(name)
        ops = operand if isinstance(operand, dict) and any(str(k).startswith("$") for k in operand) else None
        if ops is None:
            return [self.leaf(path, Op.EQ, _check_value(operand, Op.EQ, name))]
        out: list[Node] = []
        for op_name, op_value in ops.items():
            try:
                op = Op(op_name)
            except ValueError:
                raise FilterError(
                    "filter_operator",
                    f"field {name!r}: unknown operator {op_name!r}; supported: {_SUPPORTED_TEXT}"
                    + (" ($and / $or go at the top of a filter, not under a field)" if op_name in LOGICAL else ""),
                    operator=op_name,
                    supported=list(SUPPORTED),
                ) from None
            out.append(self.leaf(path, op, _check_value(op_value, op, name)))
        return out

    def leaf(self, path: Path, op: Op, value: Any) -> Compare:
        self.leaves += 1
        if self.leaves > MAX_LEAVES:
            raise FilterError(
                "filter_size", f"more than {MAX_LEAVES} comparisons in one filter (the limit)", limit=MAX_LEAVES
            )
        return Compare(path, op, value)


def parse_filter(source: str | bytes | Mapping[str, Any] | None) -> Node:
    """The AST of a filter given as JSON text or as an already parsed object; ``None``,
    ``""`` and ``{}`` are :data:`MATCH_ALL`. Raises :class:`FilterError`: for malformed JSON
    with its line, column and character position."""
    if source is None:
        return MATCH_ALL
    if isinstance(source, str | bytes):
        if not source.strip():
            return MATCH_ALL
        size = len(source.encode() if isinstance(source, str) else source)
        if size > MAX_FILTER_BYTES:
            raise FilterError(
                "filter_size",
                f"the filter is {size} bytes, over the limit of {MAX_FILTER_BYTES}",
                limit=MAX_FILTER_BYTES,
            )
        try:
            value = orjson.loads(source)
        except orjson.JSONDecodeError as exc:
            raise FilterError(
                "filter_json",
                f"the filter is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
                f" (character {exc.pos})",
                position=exc.pos,
                line=exc.lineno,
                column=exc.colno,
            ) from exc
    else:
        value = dict(source) if isinstance(source, Mapping) else source
    return _Parser().node(value, 1)


def _to_json(node: Node) -> Any:
    if isinstance(node, Compare):
        value = list(node.value) if isinstance(node.value, tuple) else node.value
        return {".".join(node.path): {node.op.value: value}}
    return {"$and" if isinstance(node, And) else "$or": [_to_json(c) for c in node.clauses]}


def filter_json(node: Node) -> str:
    """The canonical JSON text of ``node`` (a filter :func:`parse_filter` reads back as it)."""
    return orjson.dumps(_to_json(node), option=orjson.OPT_SORT_KEYS).decode()


def filter_digest(node: Node) -> str:
    """A short digest of the canonical filter, which a cursor is bound to."""
    return hashlib.sha256(filter_json(node).encode()).hexdigest()[:24]
