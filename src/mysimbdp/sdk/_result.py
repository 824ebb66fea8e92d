"""What a batch app hands back to the platform: the contract's result JSON (:class:`BatchResult`),
and how it and the progress file are written (:func:`write_atomically`: a reader never sees half
a file). A leaf module: the batch context, the run loop and the parallel parts all write here."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

__all__ = ["BatchResult", "write_atomically"]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The result JSON of the contract (``$MYSIMBDP_RESULT``)."""

    rows_written: int
    rows_rejected: int
    rows_skipped: int
    rows_total: int
    bytes_read: int
    dataset: str
    error: str | None = None
    rows_stored: int = 0  # rows now in the store: newly written plus already there (a re-run)

    def to_json(self) -> bytes:
        data = asdict(self)
        if self.error is None:
            del data["error"]
        return orjson.dumps(data)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and one rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
