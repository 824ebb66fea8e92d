"""A file's generation of a dataset in write mode ``replace``: staged and written by the app
(the SDK's writer; every chunk's app for a chunked file), swapped in as the whole dataset when
the file's run commits (its run succeeded; a chunked file: its last chunk is done), dropped
when the file fails for good.

The generation is named by the file id, so a retry, a chunk run again or a manager that
died and came back all write into the same one, and a second swap finds nothing to do.
"""

from __future__ import annotations

from contextlib import closing

from mysimbdp.domain.records import FileRecord, TenantRecord
from mysimbdp.domain.writespec import WriteMode, WriteSpec
from mysimbdp.errors import StoreError
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform

__all__ = ["commit_generation", "discard_generation"]

log = get_logger("batchingestmanager")


def _replacing(platform: Platform, record: FileRecord) -> tuple[TenantRecord, WriteSpec] | None:
    tenant, profile = platform.tenant(record.tenant)
    spec = profile.write_for(record.dataset)
    return (tenant, spec) if spec.mode is WriteMode.REPLACE else None


def commit_generation(platform: Platform, record: FileRecord) -> None:
    """Swap ``record``'s generation in as its dataset (mode replace only), in one transaction.
    Raises ``StoreUnavailable`` (try again later) or ``StoreError``."""
    if (replacing := _replacing(platform, record)) is None:
        return
    tenant, spec = replacing
    with closing(platform.tenant_store(tenant)) as store:
        rows = store.replace(record.dataset, record.id, spec)
    if rows is None:  # swapped in already (by a manager that died before recording it)
        log.warning("generation_missing", tenant=record.tenant, file_id=record.id, dataset=record.dataset)
    else:
        log.info("dataset_replaced", tenant=record.tenant, file_id=record.id, dataset=record.dataset, rows=rows)


def discard_generation(platform: Platform, record: FileRecord) -> None:
    """Drop ``record``'s generation (mode replace; the file failed for good): the dataset keeps
    its content. A store error is logged: a leftover generation is never read."""
    try:
        if (replacing := _replacing(platform, record)) is not None:
            with closing(platform.tenant_store(replacing[0])) as store:
                store.discard(record.dataset, record.id)
    except StoreError as exc:
        log.warning("generation_not_discarded", tenant=record.tenant, file_id=record.id, error=str(exc))
