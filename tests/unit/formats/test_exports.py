"""Streaming exports: JSON Lines, CSV and Parquet give back the documents (columns from
fields or the first rows, nested values as JSON), and each yields its first chunk having
read only a batch of an endless input: memory stays bounded whatever the size."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from mysimbdp.domain.exactjson import loads_for_output
from mysimbdp.domain.readparams import parse_fields
from mysimbdp.formats.exports import (
    columns_of,
    csv_chunks,
    infer_types,
    ndjson_chunks,
    ndjson_text_chunks,
    parquet_chunks,
)

DOCS: list[dict[str, Any]] = [
    {"id": 1, "name": "Oslo", "ok": True, "t": 2.5, "m": {"a": 1, "b": [1, 2]}},
    {"id": 2, "name": 'quote " and, comma\nnewline', "ok": False, "t": 3, "m": None},
    {"id": 3, "extra": "x", "big": loads_for_output(b'{"n": 123456789012345678901234567890}')["n"]},
]


class Counting:
    """An endless iterator of documents that counts how many were taken."""

    def __init__(self) -> None:
        self.taken = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in itertools.count():
            self.taken += 1
            yield {"id": i, "name": f"doc {i}", "v": i * 0.5, "m": {"k": i}}


def test_ndjson_writes_each_document_on_a_line_numbers_exact() -> None:
    """JSON Lines: one document a line, a number beyond 64 bits digit for digit."""
    text = b"".join(ndjson_chunks(DOCS))
    lines = text.splitlines()
    assert len(lines) == 3 and orjson.loads(lines[0]) == DOCS[0]
    assert b"123456789012345678901234567890" in lines[2]
    assert b"".join(ndjson_chunks([{"d": Decimal("0.1000000000000000000001")}])) == b'{"d":0.1000000000000000000001}\n'


def test_csv_columns_from_the_first_rows_nested_values_as_json() -> None:
    """CSV without fields: the union of top-level keys in order seen; nested as JSON, null/missing empty."""
    rows = list(csv.reader(io.StringIO(b"".join(csv_chunks(DOCS)).decode())))
    assert rows[0] == ["id", "name", "ok", "t", "m", "extra", "big"]
    assert rows[1] == ["1", "Oslo", "true", "2.5", '{"a":1,"b":[1,2]}', "", ""]
    assert rows[2] == ["2", 'quote " and, comma\nnewline', "false", "3", "", "", ""]
    assert rows[3] == ["3", "", "", "", "", "x", "123456789012345678901234567890"]


def test_csv_columns_from_fields_and_late_keys_dropped() -> None:
    """CSV with fields=name,m.a: those columns only; without fields, a key first seen after
    the sample is not exported."""
    rows = list(csv.reader(io.StringIO(b"".join(csv_chunks(DOCS, parse_fields("name,m.a"))).decode())))
    assert rows == [["name", "m.a"], ["Oslo", "1"], ['quote " and, comma\nnewline', ""], ["", ""]]
    late = list(csv.reader(io.StringIO(b"".join(csv_chunks(DOCS, sample_rows=2)).decode())))
    assert late[0] == ["id", "name", "ok", "t", "m"]
    assert b"".join(csv_chunks([])) == b""


def test_parquet_types_from_the_first_batch() -> None:
    """Parquet: bool, int64, float64, string columns; nested and mixed ones as JSON text."""
    table = pq.read_table(io.BytesIO(b"".join(parquet_chunks(DOCS))))
    types = {field.name: str(field.type) for field in table.schema}
    assert types == {
        "id": "int64",
        "name": "string",
        "ok": "bool",
        "t": "double",
        "m": "string",
        "extra": "string",
        "big": "string",
    }
    data = table.to_pydict()
    assert data["t"] == [2.5, 3.0, None] and data["ok"] == [True, False, None]
    assert data["m"] == ['{"a":1,"b":[1,2]}', None, None]
    assert data["big"] == [None, None, "123456789012345678901234567890"]
    assert infer_types(DOCS, columns_of(DOCS))["t"] == "float64"


def test_parquet_row_groups_and_fields() -> None:
    """Parquet with fields and batches of 2: one row group per batch, nested paths as columns."""
    data = b"".join(parquet_chunks(DOCS, parse_fields("id,m.a"), batch_rows=2))
    parquet = pq.ParquetFile(io.BytesIO(data))
    assert parquet.metadata.num_row_groups == 2
    assert parquet.read().to_pydict() == {"id": [1, 2, 3], "m.a": [1, None, None]}


def test_parquet_a_late_value_of_another_type_names_the_column_and_row() -> None:
    """A string after a first batch of integers: a ValueError naming the column, the row and the type;
    explicit types export it."""
    docs: list[dict[str, Any]] = [{"v": 1}, {"v": 2}, {"v": "n/a"}]
    with pytest.raises(ValueError, match=r"column 'v' is int64 \(from the first rows\), row 3 holds a str"):
        b"".join(parquet_chunks(docs, batch_rows=2))
    table = pq.read_table(io.BytesIO(b"".join(parquet_chunks(docs, types={"v": "json"}, batch_rows=2))))
    assert table.to_pydict() == {"v": ["1", "2", '"n/a"']}


@pytest.mark.parametrize(
    "encode",
    [
        lambda docs: ndjson_chunks(docs),
        lambda docs: csv_chunks(docs),
        lambda docs: parquet_chunks(docs, batch_rows=1000),
    ],
    ids=["ndjson", "csv", "parquet"],
)
def test_the_first_chunk_comes_after_a_batch_of_an_endless_input(encode: Any) -> None:
    """An endless input: each encoder yields bounded chunks having read one batch or sample only."""
    source = Counting()
    chunks = encode(iter(source))
    for _ in range(3):
        assert len(next(chunks)) < 1 << 20
    assert source.taken <= 10_000  # three 64 KiB chunks of short rows, or one Parquet batch
    chunks.close()


def test_ndjson_text_chunks_pass_each_text_through_as_a_line() -> None:
    """Texts become lines as they are (spacing, digits), a chunk per page; an empty page adds
    nothing, and a text spanning lines is encoded again on one, its digits kept."""
    pages = [
        ['{"a": 1, "b": 123456789012345678901234567890}', '{"c":"x\\ny"}'],
        [],
        ['{\n"d":\n0.1234567890123456789\n}'],
    ]
    chunks = list(ndjson_text_chunks(pages))
    assert chunks == [
        b'{"a": 1, "b": 123456789012345678901234567890}\n{"c":"x\\ny"}\n',
        b'{"d":0.1234567890123456789}\n',
    ]
    assert list(ndjson_text_chunks(iter(()))) == []
