"""The read API's other query parameters as plain data: the projection (``fields=a,b.c``),
the sort (``sort=-ts``) and bounded numbers (``limit``); and a document's value at a path.

Pure: no IO.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mysimbdp.domain.docfilter import Path, parse_path
from mysimbdp.domain.exactjson import loads_for_output
from mysimbdp.errors import FilterError

__all__ = [
    "BY_KEY",
    "DEFAULT_PAGE_LIMIT",
    "MAX_FIELDS",
    "MAX_PAGE_LIMIT",
    "MISSING",
    "SortKind",
    "SortSpec",
    "assemble",
    "bounded_int",
    "get_path",
    "parse_fields",
    "parse_sort",
]

MAX_FIELDS = 100  # fields of one projection
DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT = 100, 1000  # documents per page


def parse_fields(text: str | None) -> tuple[Path, ...]:
    """The projection of ``fields=a,b.c`` (empty: whole documents). Raises
    :class:`FilterError` for a bad path, too many fields, or overlapping ones."""
    if text is None or not text.strip():
        return ()
    names = [name.strip() for name in text.split(",")]
    if len(names) > MAX_FIELDS:
        raise FilterError(
            "fields", f"fields lists {len(names)} fields, over the limit of {MAX_FIELDS}", limit=MAX_FIELDS
        )
    paths: list[Path] = []
    for name in names:
        if not name:
            raise FilterError("fields", f"fields {text[:200]!r}: an empty name (two commas in a row, or one at an end)")
        path = parse_path(name, "fields: field")
        if path in paths:
            continue
        for other in paths:
            shorter, longer = sorted((other, path), key=len)
            if longer[: len(shorter)] == shorter:
                raise FilterError(
                    "fields",
                    f"fields {'.'.join(other)!r} and {name!r} overlap: keep one",
                    field=name,
                )
        paths.append(path)
    return tuple(paths)


MISSING: Any = object()  # what get_path returns for a field the document lacks


def get_path(doc: Mapping[str, Any], path: Path) -> Any:
    """The value at ``path`` in ``doc`` (object keys only), or :data:`MISSING`."""
    value: Any = doc
    for segment in path:
        if not isinstance(value, dict) or segment not in value:
            return MISSING
        value = value[segment]
    return value


def assemble(fields: tuple[Path, ...], texts: tuple[str | bytes | None, ...]) -> dict[str, Any]:
    """A projected document from the JSON texts of ``fields`` (``coredms.filtersql``'s
    projection columns; None: the document lacks it), nested paths as nested objects."""
    doc: dict[str, Any] = {}
    for path, text in zip(fields, texts, strict=True):
        if text is None:
            continue
        into = doc
        for segment in path[:-1]:
            into = into.setdefault(segment, {})
        into[path[-1]] = loads_for_output(text)
    return doc


class SortKind(StrEnum):
    KEY = "key"
    INGESTED_AT = "ingested_at"
    FIELD = "field"


@dataclass(frozen=True, slots=True)
class SortSpec:
    """What a page is ordered by: the key, ``ingested_at`` or an indexed document field,
    then the key (unique: a total order)."""

    kind: SortKind = SortKind.KEY
    path: Path = ()
    descending: bool = False

    @property
    def text(self) -> str:
        """The canonical ``sort`` parameter (``-ts``, ``key``), which a cursor is bound to."""
        name = ".".join(self.path) if self.kind is SortKind.FIELD else self.kind.value
        return f"-{name}" if self.descending else name


BY_KEY = SortSpec()  # the default order


def parse_sort(text: str | None, indexed: Collection[str] = ()) -> SortSpec:
    """``sort=key`` (the default), ``ingested_at`` or a field of ``indexed`` (the first fields
    of the dataset's indexes); a leading ``-`` sorts descending. ``key`` and ``ingested_at``
    are the stored columns, never document fields of those names."""
    if text is None or not text.strip():
        return SortSpec()
    name = text.strip()
    descending = name.startswith("-")
    name = name[1:] if descending else name
    if name in (SortKind.KEY.value, SortKind.INGESTED_AT.value):
        return SortSpec(SortKind(name), (), descending)
    path = parse_path(name, "sort: field")
    if name not in indexed:
        choices = ", ".join(["key", "ingested_at", *sorted(indexed)])
        raise FilterError(
            "sort",
            f"sort: field {name!r} is not indexed; sort by one of: {choices} (a '-' before it: descending)",
            field=name,
        )
    return SortSpec(SortKind.FIELD, path, descending)


def bounded_int(name: str, value: str | int | None, *, default: int, minimum: int, maximum: int) -> int:
    """A numeric query parameter within ``[minimum, maximum]``; raises :class:`FilterError`."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise FilterError(
            "param", f"{name} must be an integer, got {str(value)[:40]!r}", param=name, value=str(value)[:40]
        ) from None
    if not minimum <= number <= maximum:
        raise FilterError(
            "param_range",
            f"{name} {number} is out of range: use {minimum} to {maximum}",
            param=name,
            value=str(number),
            minimum=minimum,
            maximum=maximum,
        )
    return number
