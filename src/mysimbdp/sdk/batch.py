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
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import orjson

from mysimbdp import contract
from mysimbdp.domain import exactjson
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.keys import record_key, record_keys
from mysimbdp.domain.quality import compile_rules
from mysimbdp.errors import AppContractError, FileUnreadable, KeyFieldMissing
from mysimbdp.formats.linemap import load_line_map, remap
from mysimbdp.formats.readers import Record, RecordReader, Span, good_record, raw_text
from mysimbdp.sdk._blocks import BlockRecords
from mysimbdp.sdk._config import BatchConfig
from mysimbdp.sdk._result import BatchResult, write_atomically
from mysimbdp.sdk._writer import StoreWriter

Transform = Callable[[dict[str, Any]], dict[str, Any] | None]
# CSV: (header, a block of rows as field lists) -> one document or None per row, in order
BlockTransform = Callable[[list[str], list[list[str]]], list[dict[str, Any] | None]]
_DICT_OR_NONE = {dict, type(None)}
_T = TypeVar("_T")

EXIT_FAILED = 1
PROGRESS_EVERY_S = 0.5


class Reject(Exception):
    """Raise inside a transform to quarantine the current row with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


DEFAULT_STORE_TIMEOUT_S = 30.0


class BatchContext:
    """One batch run: counters, the store, the rejects sink. The constructor does no IO."""

    def __init__(self, config: BatchConfig, *, batch_size: int = 5000, busy_timeout_s: float = 30.0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.config = config
        self.batch_size = batch_size
        self.busy_timeout_s = busy_timeout_s
        self.rows_total = 0
        self.rows_rejected = 0
        self.rows_skipped = 0
        self._writer = StoreWriter(
            config.coredms_url,
            config.dataset,
            config.source,
            self.reject,
            batch_size=batch_size,
            busy_timeout_s=busy_timeout_s,
            spec=config.write,
            generation=config.file_id,
        )
        self._reader: RecordReader | None = None
        self._rejects: IO[bytes] | None = None
        self._size_bytes = 0
        self._bytes_done = 0
        self._next_progress = 0.0
        self._checker = compile_rules(config.quality_rules) if config.quality_rules else None
        self.span: Span | None = config.span  # read only this part of the input (a chunk, a parallel part)
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
        self._writer.open()
        return self

    def __enter__(self) -> BatchContext:
        return self.open()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._writer.close()
        if self._rejects is not None:
            self._rejects.close()
            self._rejects = None

    @property
    def rows_written(self) -> int:
        """Rows this run inserted into the store."""
        return self._writer.rows_written

    @property
    def rows_stored(self) -> int:
        """Rows now in the store: inserted, or already there (a re-run)."""
        return self._writer.rows_stored

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

    def _original_lines(self, items: Iterator[_T]) -> Iterator[_T]:
        """A replay's rows under their lines in the original file (``$MYSIMBDP_LINE_MAP``)."""
        if self.config.line_map is None:
            return items
        return remap(items, load_line_map(self.config.line_map))

    def records(self) -> Iterator[Record]:
        """Every row that parses and passes the profile's quality rules; the others are
        rejected with their line and reason. Progress is reported on the way."""
        self._reader = reader = self._reader_for_input(self.span)
        checker = self._checker
        for record in self._original_lines(iter(reader)):
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

    def ingest(self, transform: Transform, block_transform: BlockTransform | None = None) -> None:
        """Every good record through ``transform`` into the store (the loop of ``run_batch``).

        A CSV file goes in blocks of rows (:meth:`RecordReader.blocks`): the same outcome
        per row, without a record object and four calls per row. ``block_transform``, when
        given, converts a whole block of field lists at once; if it raises, that block goes
        through ``transform`` row by row."""
        if self.config.input_format is FileFormat.CSV:
            self._ingest_blocks(transform, block_transform)
            return
        if self.config.input_format is FileFormat.PARQUET:  # typed rows: keyed and encoded a block at a time
            records = self.records()
            while block := list(itertools.islice(records, self.batch_size)):
                docs, good = self._apply_block(block, transform, checked=True)
                self._write_block(docs, good, [record.line for record in good])
            return
        process = self.process  # bound once: this loop runs for every row
        for record in self.records():
            process(record, transform)

    def _ingest_blocks(self, transform: Transform, block_transform: BlockTransform | None) -> None:
        self._reader = reader = self._reader_for_input(self.span)
        checker = self._checker
        for item in self._original_lines(reader.blocks(self.batch_size)):
            if type(item) is Record:
                self.rows_total += 1
                self.reject(item, item.problem or "row cannot be parsed")
                continue
            lines, rows = item  # type: ignore[misc]
            self.rows_total += len(rows)
            self._maybe_progress()
            header: list[str] = reader.columns or []
            if block_transform is not None and checker is None:
                try:
                    docs: list[Any] | None = block_transform(header, rows)
                except Exception:
                    docs = None
                if docs is not None and len(docs) == len(rows) and set(map(type, docs)) <= _DICT_OR_NONE:
                    block = BlockRecords(header, lines, rows)
                    if None in docs:  # skipped rows
                        indexes = [i for i, doc in enumerate(docs) if doc is not None]
                        self.rows_skipped += len(docs) - len(indexes)
                        docs, block = [docs[i] for i in indexes], block.subset(indexes)
                    self._write_block(docs, block, block.lines)
                    continue
            records = list(map(good_record, lines, map(dict, map(zip, itertools.repeat(header), rows))))
            docs, good = self._apply_block(records, transform)
            self._write_block(docs, good, [record.line for record in good])
        self._bytes_done = max(reader.bytes_read, self._size_bytes)

    def _apply_block(
        self, records: list[Record], transform: Transform, *, checked: bool = False
    ) -> tuple[list[Any], list[Record]]:
        """``_apply`` over a block after the quality rules (unless ``checked``: already applied):
        the documents and their records."""
        checker = None if checked else self._checker
        apply = self._apply
        docs: list[Any] = []
        kept: list[Record] = []
        for record in records:
            if checker is not None:
                failures = checker.check(record.data)  # type: ignore[arg-type]
                if failures:
                    self.reject(record, "; ".join(f.message for f in failures))
                    continue
            doc = apply(record, transform)
            if doc is not None:
                docs.append(doc)
                kept.append(record)
        return docs, kept

    def _write_block(self, docs: list[Any], records: Sequence[Record], lines: list[int]) -> None:
        """Write a block's documents as batches; any row that cannot be keyed or encoded
        sends the block through :meth:`write`, which rejects that row alone."""
        if not docs:
            return
        cfg = self.config
        if cfg.write.order_by is not None:
            docs, records, lines = self._drop_lacking_order_by(docs, records, lines)
            if not docs:
                return
        try:
            try:
                data = list(map(orjson.dumps, docs))
            except TypeError:  # a Decimal or an integer beyond 64 bits: written digit for digit
                data = list(map(exactjson.dumps, docs))
            keys = record_keys(docs, cfg.key_fields, cfg.sha256, lines)
        except (KeyFieldMissing, TypeError):
            for record, doc in zip(records, docs, strict=True):
                self.write(record, doc)
            return
        self._writer.add_batch(list(zip(keys, data, strict=True)), records)

    def _drop_lacking_order_by(
        self, docs: list[Any], records: Sequence[Record], lines: list[int]
    ) -> tuple[list[Any], Sequence[Record], list[int]]:
        """Merge by ``order_by``: reject the documents without it; the rest, as given."""
        cfg = self.config
        keep = [i for i, doc in enumerate(docs) if not cfg.write.lacks_order_by(doc)]
        if len(keep) < len(docs):
            for i in sorted(set(range(len(docs))).difference(keep)):
                self.reject(records[i], cfg.write.order_by_missing_reason(cfg.tenant, cfg.dataset))
            docs, records, lines = [docs[i] for i in keep], [records[i] for i in keep], [lines[i] for i in keep]
        return docs, records, lines

    def write(self, record: Record, doc: Mapping[str, Any]) -> None:
        """Queue ``doc`` under its deterministic key; the batch is written when full."""
        cfg = self.config
        if cfg.write.lacks_order_by(doc):
            self.reject(record, cfg.write.order_by_missing_reason(cfg.tenant, cfg.dataset))
            return
        try:
            key = record_key(doc, cfg.key_fields, cfg.sha256, record.line)
            data = exactjson.dumps(doc)
        except KeyFieldMissing as exc:
            self.reject(record, str(exc))
            return
        except TypeError as exc:
            self.reject(record, f"document cannot be stored as JSON: {exc}")
            return
        self._writer.add(key, data, record)

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
        """Write the queued documents (one transaction per batch) and wait for the store."""
        self._writer.flush()

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
            write_atomically(path, orjson.dumps(data))

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
        write_atomically(self.config.result, self.result.to_json())
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
