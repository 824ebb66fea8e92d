"""Parquet batch files: the layout (schema, row groups) and the rows, one row group at a time.

pyarrow is imported here only, and only when a Parquet file is opened: the CLI and the CSV
path never pay its import. A row's position is its row group and its index in that group;
as a :class:`~mysimbdp.formats.readers.Record` it gets one number, the row's 1-based place
in the whole file (the rows of the earlier groups + its index + 1), which plays the part a
line plays in a text file: the default record key, the rejects' ``line``. The footer holds
every group's row count, so a reader of some groups alone (a chunk) numbers its rows as the
reader of the whole file does.

A chunk of a Parquet file is a byte range ``[start, end)`` of it holding whole row groups: a
group belongs to the range its first byte (:attr:`RowGroup.start`) falls in.

Values become JSON-ready Python values column by column (``json_ready``), in Arrow's C++:
timestamps as ISO 8601 text (UTC with ``Z`` when the column has a time zone), dates and
times as ISO text, decimals and unsigned 64-bit integers as their exact decimal text (a
uint64 may pass 2**63 - 1, the largest integer the stores keep exactly), durations as integers of their
unit, binary as base64 text, dictionary-encoded columns as their values, structs as
objects, lists as arrays, maps as arrays of ``[key, value]`` pairs (a map's keys need be
neither text nor unique). docs/tenant-guide.md
has the table.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mysimbdp.errors import FileUnreadable

__all__ = [
    "BATCH_ROWS",
    "MAGIC",
    "ParquetLayout",
    "ParquetRows",
    "RowGroup",
    "has_magic",
    "json_ready",
    "read_layout",
]

MAGIC = b"PAR1"  # a Parquet file starts and ends with it
BATCH_ROWS = 4096  # rows decoded at a time: memory is one row group's pages plus one batch


@dataclass(frozen=True, slots=True)
class RowGroup:
    index: int
    rows: int
    rows_before: int  # rows of the groups before it
    start: int  # offset of its first byte (the lowest page offset of its column chunks)
    size_bytes: int  # its column chunks, compressed


@dataclass(frozen=True, slots=True)
class ParquetLayout:
    """What a Parquet file's footer says: columns, row count, row groups."""

    columns: tuple[str, ...]
    rows: int
    groups: tuple[RowGroup, ...]
    size_bytes: int

    def groups_in(self, start: int, end: int) -> list[RowGroup]:
        """The groups whose first byte is in ``[start, end)``."""
        return [g for g in self.groups if start <= g.start < end]

    @property
    def ordered(self) -> bool:
        """The groups lie in the file in their order (what cutting it into chunks needs)."""
        return all(a.start < b.start for a, b in zip(self.groups, self.groups[1:], strict=False))


def has_magic(head: bytes, tail: bytes) -> bool:
    """``head`` (the file's first bytes) and ``tail`` (its last) are Parquet's magic."""
    return head[:4] == MAGIC and tail[-4:] == MAGIC


def _unreadable(path: Path, exc: Exception, where: str = "") -> FileUnreadable:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return FileUnreadable(f"not a readable Parquet file{where}: {text}")


def _open(path: Path) -> Any:
    import pyarrow.parquet as pq  # here only: the CSV path does not pay pyarrow's import

    try:
        with path.open("rb") as fh:
            head = fh.read(4)
            if head != MAGIC:
                raise FileUnreadable(f"not a Parquet file: it starts with {head!r}, not {MAGIC!r}")
        return pq.ParquetFile(path, pre_buffer=False)
    except OSError as exc:  # pyarrow's ArrowInvalid and ArrowIOError are OSError/ValueError
        raise _unreadable(path, exc) from exc
    except ValueError as exc:
        raise _unreadable(path, exc) from exc


def _group_start(group: Any) -> int:
    starts = []
    for j in range(group.num_columns):
        column = group.column(j)
        offset = column.data_page_offset
        if column.has_dictionary_page and column.dictionary_page_offset is not None:
            offset = min(offset, column.dictionary_page_offset)
        starts.append(offset)
    return min(starts, default=0)


def _layout_of(path: Path, parquet: Any) -> ParquetLayout:
    meta = parquet.metadata
    groups: list[RowGroup] = []
    before = 0
    for index in range(meta.num_row_groups):
        group = meta.row_group(index)
        size = sum(group.column(j).total_compressed_size for j in range(group.num_columns))
        groups.append(RowGroup(index, group.num_rows, before, _group_start(group), size))
        before += group.num_rows
    if before != meta.num_rows:
        raise FileUnreadable(
            f"not a readable Parquet file: the footer says {meta.num_rows} rows, its row groups hold {before}"
        )
    columns = tuple(parquet.schema_arrow.names)
    return ParquetLayout(columns, meta.num_rows, tuple(groups), path.stat().st_size)


def read_layout(path: Path) -> ParquetLayout:
    """The footer's facts; :class:`FileUnreadable` for a file that is not readable Parquet
    (bad magic, a corrupt or truncated footer)."""
    return _layout_of(path, _open(path))


class ParquetRows:
    """The rows of a Parquet file (or of the row groups in bytes ``[start, end)`` of it) as
    ``(row number, JSON-ready dict)`` batches; each ``iter()`` reads again from the start."""

    def __init__(self, path: Path, start: int = 0, end: int | None = None, *, batch_rows: int = BATCH_ROWS) -> None:
        self.path = path
        self.start = start
        self.end = end
        self.batch_rows = batch_rows
        self.columns: list[str] | None = None
        self.bytes_read = 0  # compressed bytes of the groups read so far

    def count(self) -> int:
        """Decode every page of the groups (as :meth:`batches` would, so a corrupt group raises
        the same ``FileUnreadable``) and return the rows the footer gives: what a scan
        without row rules needs, without building a Python value per cell."""
        return sum(len(rows) for _, rows in self._batches(convert=False))

    def batches(self) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """``(number of the batch's first row, its rows)`` for each batch, in file order."""
        return self._batches(convert=True)

    def _batches(self, *, convert: bool) -> Iterator[tuple[int, Any]]:
        parquet = _open(self.path)
        layout = _layout_of(self.path, parquet)
        self.columns = list(layout.columns)
        end = layout.size_bytes if self.end is None else self.end
        builder = row_builder(layout.columns) if convert else None
        for group in layout.groups_in(self.start, end):
            first = group.rows_before + 1
            where = f" (row group {group.index}, rows {first}-{group.rows_before + group.rows})"
            try:
                for batch in parquet.iter_batches(
                    batch_size=self.batch_rows, row_groups=[group.index], use_threads=False
                ):
                    rows = _rows_of(batch, builder) if convert else batch
                    yield first, rows
                    first += len(rows)
            except (OSError, ValueError) as exc:
                raise _unreadable(self.path, exc, where) from exc
            self.bytes_read += group.size_bytes


def _rows_of(batch: Any, builder: RowBuilder | None = None) -> list[dict[str, Any]]:
    """The batch's rows as dicts: each column converted to Python values at once (one C loop
    per column), then zipped into rows by ``builder`` (made for the batch's columns)."""
    if not batch.num_columns:
        return [{} for _ in range(batch.num_rows)]
    columns = [json_ready(column).to_pylist() for column in batch.columns]
    return (builder or row_builder(batch.schema.names))(columns)


RowBuilder = Callable[[list[list[Any]]], list[dict[str, Any]]]
_BUILT_MAX_COLUMNS = 256  # wider: dict(zip(...)) per row


def row_builder(names: Sequence[str]) -> RowBuilder:
    """A function of column value lists to their rows as dicts keyed by ``names`` (a repeated
    name keeps its last value, as ``dict(zip(names, row))`` does). A dict display whose keys
    are bound once builds a row in about two thirds of ``dict(zip(...))``'s time; the code is
    made from the column count only, never from the names (they are arguments)."""
    width = len(names)
    if not 0 < width <= _BUILT_MAX_COLUMNS:
        keys = list(names)
        return lambda columns: list(map(dict, map(zip, itertools.repeat(keys), zip(*columns, strict=True))))
    values = ", ".join(f"v{i}" for i in range(width))
    items = ", ".join(f"k{i}: v{i}" for i in range(width))
    keys_args = ", ".join(f"k{i}" for i in range(width))
    source = f"def make({keys_args}):\n    return lambda columns: [{{{items}}} for {values}, in zip(*columns)]\n"
    scope: dict[str, Any] = {}
    exec(compile(source, "<mysimbdp.formats.parquet rows>", "exec"), scope)  # noqa: S102 - no input in the code
    built: RowBuilder = scope["make"](*names)
    return built


def json_ready(array: Any) -> Any:
    """``array`` (a pyarrow Array) with every value as its JSON form (see the module doc):
    ``to_pylist()`` of the result holds only what ``orjson`` writes exactly."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    types = pa.types
    if types.is_dictionary(kind):
        return json_ready(array.dictionary_decode())
    if types.is_timestamp(kind):
        if kind.tz is not None:
            array = pc.cast(array, pa.timestamp(kind.unit, "UTC"))  # "...Z"
        text = pc.cast(array, pa.string())
        return pc.replace_substring(text, " ", "T", max_replacements=1)
    if types.is_date(kind) or types.is_time(kind) or types.is_decimal(kind) or types.is_uint64(kind):
        return pc.cast(array, pa.string())
    if types.is_duration(kind):
        return pc.cast(array, pa.int64())
    if types.is_float16(kind):
        return pc.cast(array, pa.float64())
    if types.is_binary(kind) or types.is_large_binary(kind) or types.is_fixed_size_binary(kind):
        values: Sequence[bytes | None] = array.to_pylist()
        return pa.array([None if v is None else base64.b64encode(v).decode("ascii") for v in values], pa.string())
    if types.is_struct(kind):
        if not _needs_work(kind):
            return array
        children = [json_ready(child) for child in array.flatten()]
        names = [kind.field(i).name for i in range(kind.num_fields)]
        return pa.StructArray.from_arrays(children, names=names, mask=array.is_null())
    if types.is_map(kind):
        if not _needs_work(kind):
            return array
        keys, items = json_ready(array.keys), json_ready(array.items)
        return pa.MapArray.from_arrays(array.offsets, keys, items, mask=array.is_null())
    if types.is_list(kind) or types.is_large_list(kind):
        if not _needs_work(kind):
            return array
        values_array = json_ready(array.values)
        return type(array).from_arrays(array.offsets, values_array, mask=array.is_null())
    if types.is_fixed_size_list(kind):
        if not _needs_work(kind):
            return array
        return json_ready(pc.cast(array, pa.list_(kind.value_type)))
    return array


def _needs_work(kind: Any) -> bool:
    """Whether ``kind`` holds a value whose Python form is not JSON as it is."""
    import pyarrow as pa

    types = pa.types
    if types.is_struct(kind):
        return any(_needs_work(kind.field(i).type) for i in range(kind.num_fields))
    if types.is_map(kind):  # its Python form is a list of (key, value): JSON [key, value] pairs
        return _needs_work(kind.key_type) or _needs_work(kind.item_type)
    if types.is_list(kind) or types.is_large_list(kind) or types.is_fixed_size_list(kind):
        return _needs_work(kind.value_type)
    plain = (
        (types.is_integer(kind) and not types.is_uint64(kind))
        or (types.is_floating(kind) and not types.is_float16(kind))
        or types.is_boolean(kind)
        or types.is_string(kind)
        or types.is_large_string(kind)
        or types.is_null(kind)
    )
    return not plain
