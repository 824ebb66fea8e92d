"""Ingest one large file with several processes, each on a line-aligned span (Parquet: a
range of whole row groups).

The app process plans the spans (:func:`plan_spans`), runs ``setup`` once, then forks one
child per extra span: every part reads its span with the same reader, applies the same
rules and ``transform``, and writes through its own store connection. Keys are the same as
in a single-process run (line numbers, and Parquet's row numbers, are absolute), so the
result is identical. Each part
writes its own result and rejects; the first part merges them into the contract's files.
Children die with the app (parent-death signal) and are in its process group, which the
platform kills on timeout.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from mysimbdp._libc import die_with_parent, prctl
from mysimbdp.domain.states import EXIT_DATAERR, EXIT_OK, EXIT_TEMPFAIL
from mysimbdp.formats.readers import Span
from mysimbdp.formats.spans import plan_spans
from mysimbdp.sdk._ingest import run_context
from mysimbdp.sdk._result import write_atomically
from mysimbdp.sdk.batch import BatchContext, BlockTransform, Transform

__all__ = ["plan_spans", "run_parts"]

_COUNTS = ("rows_written", "rows_rejected", "rows_skipped", "rows_total", "bytes_read", "rows_stored")


def _part_path(path: Path, part: int) -> Path:
    return path.with_name(f"{path.name}.part{part}")


def _part_context(ctx: BatchContext, span: Span, part: int, parts: int) -> BatchContext:
    cfg = ctx.config
    progress = cfg.progress if part == 0 else (_part_path(cfg.progress, part) if cfg.progress else None)
    config = dataclasses.replace(
        cfg,
        result=_part_path(cfg.result, part),
        rejects=_part_path(cfg.rejects, part),
        progress=progress,
    )
    part_ctx = BatchContext(config, batch_size=ctx.batch_size, busy_timeout_s=ctx.busy_timeout_s)
    part_ctx.span = span
    if part == 0 and cfg.progress is not None:
        part_ctx.peer_progress = tuple(_part_path(cfg.progress, n) for n in range(1, parts))
    return part_ctx


def _combine(codes: list[int]) -> int:
    if EXIT_TEMPFAIL in codes:
        return EXIT_TEMPFAIL  # a retry of the whole file is safe: writes are idempotent
    if EXIT_DATAERR in codes:
        return EXIT_DATAERR
    return next((code for code in codes if code != EXIT_OK), EXIT_OK)


def _merge(ctx: BatchContext, parts: int) -> dict[str, Any]:
    cfg = ctx.config
    total: dict[str, Any] = dict.fromkeys(_COUNTS, 0)
    total["dataset"] = cfg.dataset
    errors: list[str] = []
    with open(cfg.rejects, "ab") as rejects:
        for part in range(parts):
            result_path = _part_path(cfg.result, part)
            try:
                result = orjson.loads(result_path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                result = {"error": f"part {part} of {parts} wrote no result"}
            for name in _COUNTS:
                total[name] += int(result.get(name, 0))
            if result.get("error"):
                errors.append(f"part {part + 1}/{parts}: {result['error']}")
            part_rejects = _part_path(cfg.rejects, part)
            if part_rejects.exists():
                rejects.write(part_rejects.read_bytes())
                part_rejects.unlink()
            result_path.unlink(missing_ok=True)
    if errors:
        total["error"] = "; ".join(errors)
    total["parts"] = parts
    return total


def run_parts(
    ctx: BatchContext, transform: Transform, spans: list[Span], block_transform: BlockTransform | None = None
) -> int:
    """Run one part per span (this process takes the first); return the combined exit code."""
    parts = len(spans)
    children: list[int] = []
    parent_pid, prctl_fn = os.getpid(), prctl()
    sys.stdout.flush()
    sys.stderr.flush()
    for part, span in enumerate(spans[1:], start=1):
        pid = os.fork()
        if pid == 0:  # the child: ingest its span and leave without running the parent's cleanup
            code = 1
            try:
                die_with_parent(parent_pid, prctl_fn)
                code = run_context(_part_context(ctx, span, part, parts), transform, block_transform)
            except BaseException as exc:
                sys.stderr.write(f"mysimbdp batch: part {part + 1}/{parts} crashed: {exc!r}\n")
            finally:
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    codes = [run_context(_part_context(ctx, spans[0], 0, parts), transform, block_transform)]
    for pid in children:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        codes.append(code if code >= 0 else 1)  # killed by a signal: a failed part
    for part in range(1, parts):
        if ctx.config.progress is not None:
            _part_path(ctx.config.progress, part).unlink(missing_ok=True)
    merged = _merge(ctx, parts)
    write_atomically(ctx.config.result, orjson.dumps(merged))
    sys.stderr.write(
        f"mysimbdp batch: {ctx.config.input_name}: {parts} parts: {merged['rows_written']} written, "
        f"{merged['rows_rejected']} rejected, {merged['rows_skipped']} skipped of {merged['rows_total']} rows\n"
    )
    return _combine(codes)
