"""The batch file formats and the field types of row rules: a leaf module (no pydantic).

The scan child, the chunker and tenants' apps need these names without importing the
profile's models (:mod:`mysimbdp.domain.profile`), which use them too.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["EXTENSIONS", "FieldType", "FileFormat"]


class FileFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    JSON = "json"  # one JSON array of objects
    PARQUET = "parquet"  # Apache Parquet (read with pyarrow: formats.parquet)


EXTENSIONS: dict[str, FileFormat] = {
    ".csv": FileFormat.CSV,
    ".jsonl": FileFormat.JSONL,
    ".ndjson": FileFormat.JSONL,
    ".json": FileFormat.JSON,
    ".parquet": FileFormat.PARQUET,
}


class FieldType(StrEnum):
    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DATE = "date"  # ISO 8601 date
    DATETIME = "datetime"  # ISO 8601 date-time
