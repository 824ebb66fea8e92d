"""The batch side of the SDK: read, check, transform, write idempotently, report.

``sdk.run_batch(transform)`` (in ``_run``) is a whole clientbatchingestapp. ``BatchContext`` offers the same
pieces one by one for apps that want their own loop::

    with BatchContext.from_env(os.environ) as ctx:
        for record in ctx.records():          # bad and rule-breaking rows are rejected for you
            ctx.process(record, transform)    # or ctx.write(record, doc) / ctx.reject / ctx.skip
        ctx.finish()
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from mysimbdp import contract
from mysimbdp.adapters.coredms import DocumentInvalid, DocumentStore, KeyFieldMissing, open_store, record_key
from mysimbdp.domain.quality import compile_rules
from mysimbdp.errors import AppContractError, FileUnreadable
from mysimbdp.sdk._config import BatchConfig
from mysimbdp.sdk.readers import Record, RecordReader, Span, raw_text

Transform = Callable[[dict[str, Any]], dict[str, Any] | None]

EXIT_FAILED = 1
PROGRESS_EVERY_S = 0.5
MAX_BATCH_BYTES = 32 * 1024 * 1024


class Reject(Exception):
    """Raise inside a transform to quarantine the current row with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


DEFAULT_STORE_TIMEOUT_S = 30.0


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


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class BatchContext:
    """One batch run: counters, the store, the rejects sink. The constructor does no IO."""

    def __init__(self, config: BatchConfig, *, batch_size: int = 5000, busy_timeout_s: float = 30.0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.config = config
        self.batch_size = batch_size
        self.busy_timeout_s = busy_timeout_s
        self.rows_total = 0
        self.rows_written = 0
        self.rows_stored = 0
        self.rows_rejected = 0
        self.rows_skipped = 0
        self._store: DocumentStore | None = None
        self._reader: RecordReader | None = None
        self._rejects: IO[bytes] | None = None
        self._pending: list[tuple[str, bytes]] = []
        self._pending_records: list[Record] = []
        self._pending_bytes = 0
        self._size_bytes = 0
        self._bytes_done = 0
        self._next_progress = 0.0
        self._checker = compile_rules(config.quality.rules) if config.quality.rules else None
        self.span: Span | None = None  # read only this part of the input (parallel runs)
        self.peer_progress: tuple[Path, ...] = ()  # other parts' progress files, summed into ours
        self._started = time.monotonic()
        self.result: BatchResult | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, batch_size: int = 5000) -> BatchContext:
        """Build from the contract variables; raises :class:`AppContractError`."""
        try:
            timeout_s = float(env.get(contract.STORE_TIMEOUT_S) or DEFAULT_STORE_TIMEOUT_S)
        except ValueError as exc:
            raise AppContractError(f"{contract.STORE_TIMEOUT_S} is not a number of seconds") from exc
        return cls(BatchConfig.from_env(env), batch_size=batch_size, busy_timeout_s=timeout_s)

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> BatchContext:
        """Connect to the store and open the input (raises StoreUnavailable / FileUnreadable)."""
        try:
            self._size_bytes = self.config.input.stat().st_size
            if self.span is not None:
                self._size_bytes = self.span.end - self.span.start
        except OSError as exc:
            raise FileUnreadable(f"input {self.config.input}: cannot read: {exc.strerror}") from exc
        if self._store is None:
            self._store = open_store(self.config.coredms_url, busy_timeout_s=self.busy_timeout_s)
        return self

    def __enter__(self) -> BatchContext:
        return self.open()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._rejects is not None:
            self._rejects.close()
            self._rejects = None
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def bytes_read(self) -> int:
        if self._bytes_done:
            return self._bytes_done
        return self._reader.bytes_read if self._reader is not None else 0

    # -- reading ---------------------------------------------------------------------------
    def _reader_for_input(self, span: Span | None = None) -> RecordReader:
        cfg = self.config
        return RecordReader(cfg.input, cfg.input_format, max_line_bytes=cfg.max_line_bytes, span=span)

    def sample(self, n: int) -> list[dict[str, Any]]:
        """The first ``n`` rows that parse and pass the quality rules, read in a separate
        pass (e.g. for type inference); counts nothing."""
        rows: list[dict[str, Any]] = []
        if n <= 0:
            return rows
        checker = self._checker
        for record in self._reader_for_input():
            if record.data is None or record.problem is not None:
                continue
            if checker is None or not checker.check(record.data):
                rows.append(record.data)
                if len(rows) >= n:
                    break
        return rows

    def records(self) -> Iterator[Record]:
        """Every row that parses and passes the profile's quality rules; the others are
        rejected with their line and reason. Progress is reported on the way."""
        self._reader = reader = self._reader_for_input(self.span)
        checker = self._checker
        for record in reader:
            self.rows_total += 1
            if self.rows_total & 255 == 0:
                self._maybe_progress()
            if record.problem is not None or record.data is None:
                self.reject(record, record.problem or "row cannot be parsed")
                continue
            if checker is not None:
                failures = checker.check(record.data)
                if failures:
                    self.reject(record, "; ".join(f.message for f in failures))
                    continue
            yield record
        # The whole file was consumed (whatever the reader's own count says once closed).
        self._bytes_done = max(reader.bytes_read, self._size_bytes)

    # -- per-row outcomes ------------------------------------------------------------------
    def process(self, record: Record, transform: Transform) -> None:
        """Apply ``transform`` to a good record: write, skip (None) or reject (any error)."""
        doc = self._apply(record, transform)
        if doc is not None:
            self.write(record, doc)

    def _apply(self, record: Record, transform: Transform) -> Mapping[str, Any] | None:
        """``transform(record.data)``; None when the row was skipped or rejected (both counted)."""
        try:
            doc = transform(record.data)  # type: ignore[arg-type]
        except Reject as exc:
            self.reject(record, exc.reason)
            return None
        except Exception as exc:
            self.reject(record, f"transform raised {type(exc).__name__}: {exc}")
            return None
        if doc is None:
            self.rows_skipped += 1
            return None
        if type(doc) is not dict and not isinstance(doc, Mapping):
            self.reject(record, f"transform returned {type(doc).__name__}; expected a dict or None")
            return None
        return doc

    def ingest(self, transform: Transform) -> None:
        """Every good record through ``transform`` into the store (the loop of ``run_batch``)."""
        process = self.process  # bound once: this loop runs for every row
        for record in self.records():
            process(record, transform)

    def write(self, record: Record, doc: Mapping[str, Any]) -> None:
        """Queue ``doc`` under its deterministic key; the batch is written when full."""
        cfg = self.config
        try:
            key = record_key(doc, cfg.key_fields, cfg.sha256, record.line)
            data = orjson.dumps(doc)
        except KeyFieldMissing as exc:
            self.reject(record, str(exc))
            return
        except TypeError as exc:
            self.reject(record, f"document cannot be stored as JSON: {exc}")
            return
        self._pending.append((key, data))
        self._pending_records.append(record)
        self._pending_bytes += len(data)
        if len(self._pending) >= self.batch_size or self._pending_bytes >= MAX_BATCH_BYTES:
            self.flush()

    def reject(self, record: Record, reason: str) -> None:
        """Quarantine ``record``: one JSON line ``{"line", "raw", "reason"}`` in the rejects file."""
        self.rows_rejected += 1
        if self._rejects is None:
            self._rejects = open(self.config.rejects, "ab")  # noqa: SIM115 - closed in close()
        raw = record.raw if record.problem is not None else raw_text(record, self.config.input_format)
        self._rejects.write(orjson.dumps({"line": record.line, "raw": raw, "reason": reason}) + b"\n")

    def skip(self, record: Record) -> None:
        """Count ``record`` as deliberately filtered out."""
        self.rows_skipped += 1

    def flush(self) -> None:
        """Write the queued documents (one transaction per batch)."""
        if self._pending:
            rows, records = self._pending, self._pending_records
            self._pending, self._pending_records, self._pending_bytes = [], [], 0
            self._store_rows(rows, records)

    def _store_rows(self, rows: list[tuple[str, bytes]], records: list[Record]) -> None:
        if self._store is None:
            self.open()
        assert self._store is not None
        try:
            self.rows_written += self._store.write(self.config.dataset, rows, source=self.config.source)
            self.rows_stored += len(rows)
        except DocumentInvalid as exc:
            # One bad document must not sink its batch: halve until it is found, reject it.
            if len(rows) == 1:
                self.reject(records[0], f"the store refused the document: {exc}")
                return
            mid = len(rows) // 2
            self._store_rows(rows[:mid], records[:mid])
            self._store_rows(rows[mid:], records[mid:])

    # -- reporting -------------------------------------------------------------------------
    def _maybe_progress(self, force: bool = False) -> None:
        path = self.config.progress
        now = time.monotonic()
        if path is None or (now < self._next_progress and not force):
            return
        self._next_progress = now + PROGRESS_EVERY_S
        data = {"rows": self.rows_total, "bytes": self.bytes_read, "size": self._size_bytes}
        for peer in self.peer_progress:  # parallel parts: report the whole file's progress
            with contextlib.suppress(OSError, orjson.JSONDecodeError, TypeError, ValueError):
                other = orjson.loads(peer.read_bytes())
                data = {name: data[name] + int(other.get(name, 0)) for name in data}
        with contextlib.suppress(OSError):  # progress is advisory; the result file is what counts
            _write_atomically(path, orjson.dumps(data))

    def finish(self, error: str | None = None) -> BatchResult:
        """Flush (unless ``error``), write the result file, close. Returns the result."""
        if error is None:
            self.flush()
        self._maybe_progress(force=True)
        self.result = BatchResult(
            self.rows_written,
            self.rows_rejected,
            self.rows_skipped,
            self.rows_total,
            self.bytes_read,
            self.config.dataset,
            error,
            self.rows_stored,
        )
        if self._rejects is not None:
            self._rejects.flush()
        _write_atomically(self.config.result, self.result.to_json())
        self.close()
        return self.result

    def summary(self) -> str:
        """One human line about the run."""
        r = self.result
        seconds = time.monotonic() - self._started
        if r is None:
            return f"mysimbdp batch: dataset {self.config.dataset!r}: not finished"
        line = (
            f"mysimbdp batch: {self.config.input_name} -> dataset {r.dataset!r}: {r.rows_written} written, "
            f"{r.rows_rejected} rejected, {r.rows_skipped} skipped of {r.rows_total} rows, "
            f"{r.bytes_read} bytes in {seconds:.2f} s"
        )
        return f"{line}; FAILED: {r.error}" if r.error else line
