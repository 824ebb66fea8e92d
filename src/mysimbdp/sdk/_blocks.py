"""The records of a block of CSV rows (:class:`BlockRecords`), for the batch context's block path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

from mysimbdp.formats.readers import Record, good_record

__all__ = ["BlockRecords"]


class BlockRecords(Sequence[Record]):
    """The records of a block's rows, built only when one is needed (to reject it)."""

    def __init__(self, header: list[str], lines: list[int], rows: list[list[str]]) -> None:
        self._header, self._lines, self._rows = header, lines, rows

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def lines(self) -> list[int]:
        return self._lines

    def subset(self, indexes: list[int]) -> BlockRecords:
        return BlockRecords(self._header, [self._lines[i] for i in indexes], [self._rows[i] for i in indexes])

    @overload
    def __getitem__(self, index: int) -> Record: ...
    @overload
    def __getitem__(self, index: slice) -> BlockRecords: ...
    def __getitem__(self, index: int | slice) -> Record | BlockRecords:
        if isinstance(index, slice):
            return BlockRecords(self._header, self._lines[index], self._rows[index])
        return good_record(self._lines[index], dict(zip(self._header, self._rows[index], strict=False)))
