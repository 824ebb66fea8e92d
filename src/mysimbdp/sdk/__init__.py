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

from mysimbdp.adapters.coredms import open_store
from mysimbdp.sdk._run import run_batch
from mysimbdp.sdk.batch import BatchContext, Reject

__all__ = ["BatchContext", "Reject", "open_store", "run_batch"]
