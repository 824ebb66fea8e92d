"""Replays: the records of a replay input under the line numbers of the original file.

A quarantine replay (``mysimbdp quarantine replay``) gives the batch app a small input
holding only the quarantined rows (after the original CSV header), and in
``$MYSIMBDP_LINE_MAP`` a JSON object mapping each row's line in that input to its line in
the original file: ``{"2": 17, "3": 42}``. Keyed and reported by the original line (and
the original file's sha256, which the platform passes as ``$MYSIMBDP_INPUT_SHA256``), a
replayed row lands under the very key it would have had the first time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson

from mysimbdp import contract
from mysimbdp.errors import AppContractError
from mysimbdp.formats.readers import Record, RowBlock

__all__ = ["load_line_map", "remap"]

T = TypeVar("T")


def load_line_map(path: Path) -> dict[int, int]:
    """The map in ``path``; :class:`AppContractError` when it is missing or not such an object."""
    try:
        value: Any = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise AppContractError(f"{contract.LINE_MAP}={str(path)!r}: cannot read: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise AppContractError(f"{contract.LINE_MAP}={str(path)!r}: not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise AppContractError(f"{contract.LINE_MAP}={str(path)!r}: expected a JSON object of line numbers")
    try:
        return {int(line): int(original) for line, original in value.items()}
    except (TypeError, ValueError) as exc:
        raise AppContractError(f"{contract.LINE_MAP}={str(path)!r}: not every key and value is a line number") from exc


def _original(lines: dict[int, int], line: int) -> int:
    try:
        return lines[line]
    except KeyError:
        raise AppContractError(
            f"{contract.LINE_MAP}: line {line} of the replay input has no line of the original file"
        ) from None


def remap(items: Iterator[T], lines: dict[int, int]) -> Iterator[T]:
    """``items`` (records, or CSV row blocks and bad records) with original line numbers."""
    for item in items:
        if type(item) is RowBlock:
            block = cast(RowBlock, item)
            yield cast(T, RowBlock([_original(lines, n) for n in block.lines], block.rows))
        else:
            record = cast(Record, item)
            yield cast(T, record._replace(line=_original(lines, record.line)))
