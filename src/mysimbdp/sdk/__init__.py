"""What tenant apps import: ``from mysimbdp import sdk``.

A complete clientbatchingestapp::

    from mysimbdp import sdk

    def transform(row):
        if not row["qty"]:
            raise sdk.Reject("qty is empty")
        return {"sku": row["sku"], "qty": int(row["qty"])}

    sdk.run_batch(transform)

See ``docs/tenant-guide.md`` for the contract behind it.
"""

from __future__ import annotations

from typing import Any, NoReturn

from mysimbdp.adapters.coredms import open_store
from mysimbdp.sdk._run import run_batch
from mysimbdp.sdk.batch import BatchContext, Reject


def run_stream(transform: Any) -> NoReturn:
    """A complete clientstreamingestapp around ``transform``; see :mod:`mysimbdp.sdk.stream`."""
    from mysimbdp.sdk.stream import run_stream as run

    run(transform)


__all__ = ["BatchContext", "Reject", "open_store", "run_batch", "run_stream"]
