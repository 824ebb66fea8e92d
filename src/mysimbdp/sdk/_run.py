"""The app's main loop: ``run_batch(transform)`` runs a whole clientbatchingestapp.

It reads the contract, runs ``setup`` once, then ingests the input in this process or, for
a large line-splittable file or a large Parquet file of several row groups, in parallel
parts (:mod:`mysimbdp.sdk._parallel`), and maps the outcome to the contract's exit code:
0 done, 65 unusable input, 75 store unavailable (retry later), 1 any other store error.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

from mysimbdp import contract
from mysimbdp._libc import keep_freed_memory
from mysimbdp.domain.states import EXIT_DATAERR
from mysimbdp.errors import AppContractError, FileUnreadable
from mysimbdp.sdk._ingest import run_context
from mysimbdp.sdk._result import BatchResult, write_atomically
from mysimbdp.sdk.batch import BatchContext, BlockTransform, Transform

__all__ = ["run", "run_batch", "run_context"]

GC_GEN0_THRESHOLD = 100_000
SWITCH_INTERVAL_S = 0.001


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole, non-negative number from the contract's environment (``default`` when unset)."""
    raw = env.get(name) or ""
    if not raw:
        return default
    if not raw.isdigit():
        raise AppContractError(f"{name}={raw!r} is not a whole number")
    return int(raw)


def _contract_failure(env: Mapping[str, str], exc: Exception) -> int:
    sys.stderr.write(f"mysimbdp batch: {exc}\n")
    if path := env.get(contract.RESULT):
        result = BatchResult(0, 0, 0, 0, 0, env.get(contract.DATASET, ""), str(exc))
        try:
            write_atomically(Path(path), result.to_json())
        except OSError as os_exc:
            sys.stderr.write(f"mysimbdp batch: cannot write the result to {path}: {os_exc}\n")
    return EXIT_DATAERR


def run(
    env: Mapping[str, str],
    transform: Transform,
    *,
    batch_size: int = 5000,
    setup: Callable[[BatchContext], None] | None = None,
    block_transform: BlockTransform | None = None,
) -> int:
    """The whole batch loop; returns the contract's exit code instead of exiting.

    A large CSV or JSON Lines file is ingested by up to ``$MYSIMBDP_PARALLELISM`` processes
    at once, each on a line-aligned span, a large Parquet file of several row groups each on
    a range of whole groups (see :mod:`mysimbdp.sdk._parallel`)."""
    keep_freed_memory()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 100)  # rows come and go by the thousand; few cycles
    # The store writer thread wakes at each answer of the database; by default it could wait
    # 5 ms for the GIL each time while this thread converts rows (see sdk._writer).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        ctx = BatchContext.from_env(env, batch_size=batch_size)
        parallelism = _whole(env, contract.PARALLELISM, 1)
        part_min_bytes = _whole(env, contract.PART_MIN_BYTES, 0) or None  # None: the SDK's default
    except AppContractError as exc:
        return _contract_failure(env, exc)
    if setup is not None:
        try:
            setup(ctx)
        except (FileUnreadable, AppContractError) as exc:
            ctx.finish(error=str(exc))
            sys.stderr.write(ctx.summary() + "\n")
            return EXIT_DATAERR
    if parallelism > 1 and ctx.span is None:  # a chunk of a big file is one part of a parallel whole
        from mysimbdp.sdk._parallel import plan_spans, run_parts

        spans = plan_spans(ctx.config.input, ctx.config.input_format, parallelism, min_span_bytes=part_min_bytes)
        if len(spans) > 1:
            return run_parts(ctx, transform, spans, block_transform)
    return run_context(ctx, transform, block_transform)


def run_batch(
    transform: Transform,
    *,
    batch_size: int = 5000,
    setup: Callable[[BatchContext], None] | None = None,
    block_transform: BlockTransform | None = None,
) -> NoReturn:
    """Run a complete clientbatchingestapp around ``transform`` and exit with the contract's code.

    ``transform(row)`` returns the document to store, ``None`` to skip the row, or raises
    :class:`Reject` (or any exception) to quarantine it. ``setup(ctx)`` runs once before
    the first row (e.g. to look at ``ctx.sample(n)``). ``block_transform(header, rows)``, optional,
    does ``transform``'s work for a whole block of CSV rows (lists of fields in header order)
    at once, returning one document or None per row; when it raises, the block goes through
    ``transform`` row by row. It is skipped when the profile has quality rules.
    """
    sys.exit(run(os.environ, transform, batch_size=batch_size, setup=setup, block_transform=block_transform))
