"""Scan a Parquet file into ``FileFacts``: its bytes' sha256, its schema's columns and its rows
against the profile's row rules, read row group by row group (bounded memory).

The text facts (binary bytes, UTF-8, BOM, line lengths) do not apply to Parquet, a binary
format: they are reported neutral (not binary, no UTF-8 error, no line), so the text-only
rules of ``domain.filecheck`` stay silent. A file that is not readable Parquet (bad magic,
a corrupt or truncated footer, a corrupt row group) gets ``unreadable`` set, and is
rejected by rule ``unreadable`` with the reader's message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from mysimbdp.domain.facts import FileFacts
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.quality import RowRuleLike, compile_rules
from mysimbdp.errors import FileUnreadable
from mysimbdp.formats.parquet import MAGIC, ParquetRows
from mysimbdp.formats.readers import RecordReader

__all__ = ["looks_like_parquet", "scan_parquet"]

CHUNK_BYTES = 1 << 20
MAX_SAMPLES = 5


def looks_like_parquet(path: Path) -> bool:
    """The file starts and ends with Parquet's magic ``PAR1`` (whatever its name)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(MAGIC))
            size = fh.seek(0, 2)
            if size < 2 * len(MAGIC) or head != MAGIC:
                return False
            fh.seek(size - len(MAGIC))
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _sha256(path: Path) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb", buffering=0) as fh:
        while chunk := fh.read(CHUNK_BYTES):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def scan_parquet(path: Path, name: str, row_rules: Sequence[RowRuleLike]) -> FileFacts:
    """The facts of the Parquet file ``path`` (the tenant called it ``name``)."""
    size, sha256 = _sha256(path)
    checker = compile_rules(row_rules) if row_rules else None
    total = bad = 0
    by_rule: dict[str, int] = {}
    samples: list[str] = []
    unreadable: str | None = None
    reader = RecordReader(path, FileFormat.PARQUET)
    columns: list[str] | None = None
    if size > 0 and checker is None:  # the row count, every page decoded, no Python values
        rows = ParquetRows(path)
        try:
            total = rows.count()
        except FileUnreadable as exc:
            unreadable = str(exc)
        columns = rows.columns
    elif size > 0:
        try:
            for record in reader:
                total += 1
                if checker is not None and record.data is not None and (failures := checker.check(record.data)):
                    bad += 1
                    for failure in failures:
                        by_rule[failure.rule] = by_rule.get(failure.rule, 0) + 1
                    if len(samples) < MAX_SAMPLES:
                        samples.append(f"row {record.line}: " + "; ".join(f.message for f in failures))
        except FileUnreadable as exc:
            unreadable = str(exc)
        columns = reader.columns
    return FileFacts(
        name=name,
        size_bytes=size,
        sha256=sha256,
        format=FileFormat.PARQUET,
        is_binary=False,
        utf8_error=None,
        has_bom=False,
        max_line_bytes=0,
        longest_line=0,
        columns=columns,
        rows_total=total,
        rows_bad=bad,
        bad_by_rule=by_rule,
        samples=tuple(samples),
        unreadable=unreadable,
    )
