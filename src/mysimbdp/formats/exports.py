"""Streaming exports of documents: JSON Lines, CSV and Parquet, from any iterator of documents.

Each encoder takes an iterator of documents (dicts, as ``DocumentStore`` returns them, exact
numbers as ``orjson.Fragment``) and yields bytes in chunks of about :data:`CHUNK_BYTES`, so
an export of any size holds one chunk (CSV: plus its sample; Parquet: one batch of rows and
its row group) at a time: the read API streams them as the body of its answer.

:func:`ndjson_text_chunks` is JSON Lines from documents already JSON text (the store's, for
an export of whole documents): each line is the text as it is, nothing parsed or encoded
again, so every digit stays; one chunk per page of texts.

Columns (CSV and Parquet): the ``fields`` asked for (``fields=a,b.c``: columns ``a`` and
``b.c``, a nested path read through objects), else the union of the top-level keys of the
first :data:`SAMPLE_ROWS` documents, in the order first seen. A key that appears only
later is not exported: ask for it with ``fields``. Values: a missing field and null are
empty in CSV and null in Parquet; in CSV a string is itself, a boolean ``true``/``false``,
a number and an object or array their JSON text.

Parquet column types come from the first batch (:data:`PARQUET_BATCH_ROWS` rows), or from
``types``: booleans ``bool``, integers ``int64``, numbers ``float64``, strings
``string``; any other column (objects, arrays, mixed types, numbers beyond 64 bits, all
null) is a ``string`` column of each value's JSON text (``"json"``). A later value that its
column cannot hold (a string in an ``int64`` column) raises ``ValueError`` naming the
column, the row and the value's type, after the rows before it were yielded: give ``types``
(e.g. from a type census of the dataset) to export such a dataset. pyarrow is imported only
when a Parquet export starts.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import orjson

from mysimbdp.domain.exactjson import dumps, loads_for_output
from mysimbdp.domain.readparams import MISSING, get_path

__all__ = [
    "CHUNK_BYTES",
    "PARQUET_BATCH_ROWS",
    "SAMPLE_ROWS",
    "ColumnType",
    "columns_of",
    "csv_chunks",
    "infer_types",
    "ndjson_chunks",
    "ndjson_text_chunks",
    "parquet_chunks",
]

CHUNK_BYTES = 64 * 1024  # bytes yielded at a time
SAMPLE_ROWS = 1000  # documents whose top-level keys make the columns when no fields are given
PARQUET_BATCH_ROWS = 4096  # rows per Parquet row group: memory is one batch

ColumnType: TypeAlias = Literal["bool", "int64", "float64", "string", "json"]
Document: TypeAlias = Mapping[str, Any]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def ndjson_chunks(docs: Iterable[Document], *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """One JSON document per line (``application/x-ndjson``), numbers exact."""
    parts: list[bytes] = []
    size = 0
    for doc in docs:
        line = dumps(doc, option=orjson.OPT_APPEND_NEWLINE)
        parts.append(line)
        size += len(line)
        if size >= chunk_bytes:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def ndjson_text_chunks(pages: Iterable[Sequence[str]]) -> Iterator[bytes]:
    """JSON Lines of documents that are JSON text already: each text and ``"\\n"``, one
    chunk per page (a store page of :data:`~mysimbdp.services.reads.EXPORT_PAGE_ROWS`
    documents). A text that spans lines (a newline between its tokens, possible only in a
    text that no ``orjson`` wrote) is encoded again on one line, numbers exact."""
    for page in pages:
        if not page:
            continue
        block = "\n".join(page)
        if block.count("\n") != len(page) - 1:
            block = "\n".join(t if "\n" not in t else dumps(loads_for_output(t)).decode() for t in page)
        yield (block + "\n").encode()


def columns_of(docs: Iterable[Document], fields: Sequence[tuple[str, ...]] = ()) -> tuple[tuple[str, ...], ...]:
    """The export's columns (paths): ``fields``, else the top-level keys of ``docs`` in
    the order first seen."""
    if fields:
        return tuple(fields)
    seen: dict[str, None] = {}
    for doc in docs:
        seen.update(dict.fromkeys(doc))
    return tuple((key,) for key in seen)


def _sampled(
    docs: Iterable[Document], fields: Sequence[tuple[str, ...]], rows: int
) -> tuple[tuple[tuple[str, ...], ...], Iterator[Document]]:
    """The columns and the documents again (the sample held, then the rest streamed)."""
    it = iter(docs)
    if fields:
        return tuple(fields), it
    sample = list(itertools.islice(it, rows))
    return columns_of(sample), itertools.chain(sample, it)


def _cell(value: Any) -> str:
    if value is MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return dumps(value).decode()


def csv_chunks(
    docs: Iterable[Document],
    fields: Sequence[tuple[str, ...]] = (),
    *,
    sample_rows: int = SAMPLE_ROWS,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[bytes]:
    """``text/csv`` (UTF-8, RFC 4180 quoting, a header of the column paths); see the module
    for the columns and the cells. No documents and no ``fields``: nothing at all."""
    columns, rows = _sampled(docs, fields, sample_rows)
    if not columns:
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([".".join(path) for path in columns])
    for doc in rows:
        writer.writerow([_cell(get_path(doc, path)) for path in columns])
        if buffer.tell() >= chunk_bytes:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_of(values: Iterable[Any]) -> ColumnType:
    present = [v for v in values if v is not MISSING and v is not None]
    if not present:
        return "json"
    if all(isinstance(v, bool) for v in present):
        return "bool"
    if all(type(v) is int and INT64_MIN <= v <= INT64_MAX for v in present):
        return "int64"
    if all(_number(v) for v in present):
        return "float64"
    return "string" if all(isinstance(v, str) for v in present) else "json"


def infer_types(batch: Sequence[Document], columns: Sequence[tuple[str, ...]]) -> dict[str, ColumnType]:
    """Each column's Parquet type from a batch of documents (see the module)."""
    return {".".join(path): _type_of(get_path(doc, path) for doc in batch) for path in columns}


def _converter(kind: ColumnType, column: str) -> Any:
    def refuse(value: Any, row: int) -> ValueError:
        return ValueError(
            f"parquet export: column {column!r} is {kind} (from the first rows), row {row} holds"
            f" a {type(value).__name__}: give the export explicit types for this dataset"
        )

    def convert(value: Any, row: int) -> Any:
        if value is MISSING or value is None:
            return None
        if kind == "json":
            return dumps(value).decode()
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "string" and isinstance(value, str):
            return value
        if kind == "int64" and _number(value):
            if type(value) is int and INT64_MIN <= value <= INT64_MAX:
                return value
            if isinstance(value, float) and value.is_integer() and INT64_MIN <= value <= INT64_MAX:
                return int(value)
        if kind == "float64" and _number(value):
            return float(value)
        raise refuse(value, row)

    return convert


class _Sink:
    """A write-only file for pyarrow's writer whose bytes are taken out as they come."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        """Nothing buffered here: ``drain`` takes the bytes."""

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def parquet_chunks(
    docs: Iterable[Document],
    fields: Sequence[tuple[str, ...]] = (),
    *,
    types: Mapping[str, ColumnType] | None = None,
    batch_rows: int = PARQUET_BATCH_ROWS,
) -> Iterator[bytes]:
    """``application/vnd.apache.parquet``: one row group per batch of ``batch_rows``
    documents, each yielded once written, then the footer. No documents and no ``fields``:
    a file without columns."""
    import pyarrow as pa  # only here: a CSV or JSON export never pays its import
    import pyarrow.parquet as pq

    arrow_types = {"bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64()}
    it = iter(docs)
    first = list(itertools.islice(it, max(batch_rows, 1)))
    columns = columns_of(first, fields)
    names = [".".join(path) for path in columns]
    kinds: dict[str, ColumnType] = {**infer_types(first, columns), **(types or {})}
    schema = pa.schema([pa.field(name, arrow_types.get(kinds[name], pa.string())) for name in names])
    converters = [_converter(kinds[name], name) for name in names]
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema)
    row = 0
    batch = first
    try:
        while batch:
            arrays = {
                name: [convert(get_path(doc, path), row + i + 1) for i, doc in enumerate(batch)]
                for name, path, convert in zip(names, columns, converters, strict=True)
            }
            writer.write_table(pa.table(arrays, schema=schema), row_group_size=len(batch))
            row += len(batch)
            if data := sink.drain():
                yield data
            batch = list(itertools.islice(it, max(batch_rows, 1)))
    finally:
        writer.close()
    yield sink.drain()
