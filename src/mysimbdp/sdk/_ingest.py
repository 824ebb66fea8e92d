"""One part of a batch run end to end: :func:`run_context` ingests a :class:`BatchContext`'s
input (or its span), writes its result and maps the outcome to the contract's exit code.

Both the single-process loop (:mod:`mysimbdp.sdk._run`) and each parallel part
(:mod:`mysimbdp.sdk._parallel`) end here, so neither needs the other."""

from __future__ import annotations

import sys

from mysimbdp.domain.states import EXIT_DATAERR, EXIT_OK, EXIT_TEMPFAIL
from mysimbdp.errors import AppContractError, FileUnreadable, StoreError, StoreUnavailable
from mysimbdp.sdk.batch import EXIT_FAILED, BatchContext, BlockTransform, Transform

__all__ = ["run_context"]


def run_context(ctx: BatchContext, transform: Transform, block_transform: BlockTransform | None = None) -> int:
    """Ingest ``ctx``'s input (or its span), write its result; return the exit code."""
    code = EXIT_OK
    try:
        with ctx:
            ctx.ingest(transform, block_transform)
            ctx.finish()
    except StoreUnavailable as exc:
        code = EXIT_TEMPFAIL
        ctx.finish(error=f"store unavailable, retry later: {exc}")
    except (FileUnreadable, AppContractError) as exc:
        code = EXIT_DATAERR
        ctx.finish(error=str(exc))
    except StoreError as exc:
        code = EXIT_FAILED
        ctx.finish(error=str(exc))
    except Exception as exc:
        ctx.finish(error=f"{type(exc).__name__}: {exc}")
        sys.stderr.write(ctx.summary() + "\n")
        raise
    sys.stderr.write(ctx.summary() + "\n")
    return code
