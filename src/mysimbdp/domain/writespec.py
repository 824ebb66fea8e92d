"""How a dataset is written (its write mode) and indexed, as plain data.

The profile's ``write`` / ``datasets`` / ``indexes`` (validated by ``domain.writes``) come to
a tenant's apps as one JSON value in ``MYSIMBDP_WRITE`` (``contract.WRITE``); the SDK parses
it here, without pydantic, and hands the :class:`WriteSpec` to every ``DocumentStore.write``.

- ``append`` (the default): insert if the key is absent; a stored record is never changed.
- ``merge``: upsert by key. With ``order_by`` a record replaces the stored one only if its
  ``order_by`` value is not older (a stored record without one is always replaced, a record
  without one never replaces a stored one that has one; the SDK quarantines a record whose
  document lacks it, :meth:`WriteSpec.lacks_order_by`); without ``order_by`` the last
  arrival wins. An identical document changes nothing (a re-run writes no row).
- ``replace``: a file's run writes a new generation of the dataset, which replaces the whole
  old content when the run commits (files only).

Pure: no IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

__all__ = ["APPEND", "FIELD_PATH_RE", "WriteMode", "WriteSpec", "field_path_problem", "parse_write_spec"]

# A field of the stored document: a name, or a dotted path into nested objects ("meta.ts").
FIELD_PATH_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(?:\.[A-Za-z_][A-Za-z0-9_]{0,62}){0,7}")


class WriteMode(StrEnum):
    APPEND = "append"
    MERGE = "merge"
    REPLACE = "replace"


def field_path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a document field in SQL, or None."""
    if FIELD_PATH_RE.fullmatch(path):
        return None
    return (
        f"field {path!r} is not a field path: use names of letters, digits and '_' (not starting with a digit),"
        " joined by '.' for nested fields, e.g. 'ts' or 'meta.ts'"
    )


@dataclass(frozen=True, slots=True)
class WriteSpec:
    """One dataset's write mode and indexes (each index: the field paths it covers, in order)."""

    mode: WriteMode = WriteMode.APPEND
    order_by: str | None = None
    indexes: tuple[tuple[str, ...], ...] = field(default=())

    def for_replay(self) -> WriteSpec:
        """How a quarantine replay writes: as this spec, but mode replace appends to the
        dataset's current content (a replay's few rows must not replace the whole of it)."""
        if self.mode is WriteMode.REPLACE:
            return WriteSpec(WriteMode.APPEND, None, self.indexes)
        return self

    def lacks_order_by(self, doc: Any) -> bool:
        """Whether ``doc`` cannot be merged by order: mode merge with ``order_by`` and the
        field (a dotted path into nested objects) missing from it or null."""
        if self.order_by is None or self.mode is not WriteMode.MERGE:
            return False
        value = doc
        for name in self.order_by.split("."):
            if not isinstance(value, dict):
                return True
            value = value.get(name)
        return value is None

    def order_by_missing_reason(self, tenant: str, dataset: str) -> str:
        """The quarantine reason of a record :meth:`lacks_order_by`."""
        return (
            f"tenant {tenant!r}: dataset {dataset!r}: rule write.order_by_missing: field {self.order_by!r}"
            " is missing from the document or null; mode merge orders records by it, so every record needs it"
        )

    def to_json(self) -> str:
        """The ``MYSIMBDP_WRITE`` value."""
        value: dict[str, Any] = {"mode": self.mode.value, "order_by": self.order_by}
        value["indexes"] = [list(index) for index in self.indexes]
        return orjson.dumps(value).decode()


APPEND = WriteSpec()


def parse_write_spec(text: str) -> WriteSpec:
    """The :class:`WriteSpec` of a ``MYSIMBDP_WRITE`` value ("" is ``append``, no indexes).

    Raises ``ValueError`` naming what is wrong."""
    if not text:
        return APPEND
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict) or set(value) - {"mode", "order_by", "indexes"}:
        raise ValueError(f"expected an object with mode, order_by and indexes, got {text[:200]!r}")
    try:
        mode = WriteMode(value.get("mode", "append"))
    except ValueError:
        raise ValueError(f"mode {value.get('mode')!r} is not one of append, merge, replace") from None
    order_by = value.get("order_by")
    if order_by is not None and (not isinstance(order_by, str) or field_path_problem(order_by)):
        raise ValueError(f"order_by {order_by!r} is not a field path")
    if order_by is not None and mode is not WriteMode.MERGE:
        raise ValueError(f"order_by is only for mode merge, got mode {mode.value}")
    raw_indexes = value.get("indexes") or []
    indexes: list[tuple[str, ...]] = []
    if not isinstance(raw_indexes, list):
        raise ValueError(f"indexes must be a list of lists of fields, got {raw_indexes!r}")
    for index in raw_indexes:
        if (
            not isinstance(index, list)
            or not index
            or any(not isinstance(f, str) or field_path_problem(f) for f in index)
        ):
            raise ValueError(f"index {index!r} is not a non-empty list of field paths")
        indexes.append(tuple(index))
    return WriteSpec(mode, order_by, tuple(indexes))
