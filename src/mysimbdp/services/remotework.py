"""The platform's side of remote chunk workers (``mysimbdp worker --api URL``): what the API's
worker routes (``api.routes.worker``) do.

A remote worker has no platform home. It claims a chunk task through the API: the API pulls
the task from the broker's chunk queue (the group every chunk worker pulls from) and claims the
chunk in the meta store's chunk ledger under the same lease as a local worker, owned by
``api:<token id>:<worker label>``. So a chunk delivered twice runs once at a time, a chunk
given back or whose lease expired (the worker lost the platform) is queued again by the batch
manager, and the record keys of its rows are the same at every run: nothing is stored twice.

The worker then reads the chunk's byte ranges and the tenant's bundle (a deterministic tar
whose sha256 is its version) through the API, renews its lease and reports progress through
the API, and sends the run's outcome, result and rejects at the end, which are recorded here
exactly as a local chunk run's (``services.chunked.conclude_chunk``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import secrets
import shutil
import tarfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson

from mysimbdp.adapters.broker import CHUNKS_STREAM, Broker, Message
from mysimbdp.adapters.metastore.chunks import ChunkCounts, ChunkRecord, ChunkStatus
from mysimbdp.adapters.metastore.workers import WorkerClaim, WorkerToken
from mysimbdp.adapters.process.runner import Outcome
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.ids import new_id
from mysimbdp.domain.records import FileRecord, RunRecord
from mysimbdp.domain.remotetask import LOCAL_ENV, ByteRange, RemoteTask, merge_ranges
from mysimbdp.domain.states import FileStatus, RunStatus
from mysimbdp.errors import BrokerError, ConfigError, MysimbdpError
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.app_run import AppRun, record_quarantine
from mysimbdp.services.chunked import CHUNK_TASK_GROUP, chunk_env, conclude_chunk, start_chunk_run
from mysimbdp.services.tenants import hash_key

__all__ = [
    "CSV_HEAD_BYTES",
    "bundle_archive",
    "claim_next",
    "finish_remote",
    "give_back",
    "issue_token",
    "read_range",
    "record_progress",
    "revoke_token",
    "worker_owner",
]

log = get_logger("remotework")

CSV_HEAD_BYTES = 1 << 20  # a later CSV chunk's worker reads the header from the file's first MiB
TOKEN_PREFIX = "msbw_"  # noqa: S105  # a prefix, not a secret
PULLS_PER_TENANT = 8  # stale tasks (a chunk already running or done) skipped per claim and tenant
_BLOCK_BYTES = 1 << 20
_archives: dict[str, tuple[tuple[tuple[str, int, int, int], ...], str, bytes]] = {}
_archives_lock = threading.Lock()
# one claim at a time per broker client: a consumer's pulls on one connection are not made concurrently
_claiming: weakref.WeakKeyDictionary[Broker, asyncio.Lock] = weakref.WeakKeyDictionary()


def issue_token(platform: Platform, name: str) -> tuple[WorkerToken, str]:
    """A new worker token and its secret (shown once: only its sha256 is kept)."""
    secret = f"{TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
    token = platform.meta.worker_tokens.add(new_id("wt"), hash_key(secret), name)
    log.info("worker_token_issued", token=token.id, name=name)
    return token, secret


def revoke_token(platform: Platform, token_id: str) -> None:
    if not platform.meta.worker_tokens.revoke(token_id):
        raise ConfigError(
            f"worker token {token_id!r}: no token in force has this id; `mysimbdp worker token list` shows them"
        )
    log.info("worker_token_revoked", token=token_id)


def worker_owner(token_id: str, label: str) -> str:
    """The lease owner of a remote worker's chunks in the chunk ledger."""
    return f"api:{token_id}:{label}"


async def claim_next(platform: Platform, broker: Broker, token_id: str, label: str) -> RemoteTask | None:
    """Take the next chunk task of any tenant from the broker and claim its chunk for the worker
    ``label`` of token ``token_id``; None when no chunk is waiting."""
    lock = _claiming.setdefault(broker, asyncio.Lock())
    async with lock:
        return await _claim_next(platform, broker, token_id, label)


async def _claim_next(platform: Platform, broker: Broker, token_id: str, label: str) -> RemoteTask | None:
    tenants = await asyncio.to_thread(platform.meta.chunks.tenants_with_queued)
    if tenants:
        turn = int(time.monotonic() * 1000) % len(tenants)  # no tenant always first
        tenants = tenants[turn:] + tenants[:turn]
    for tenant in tenants:
        for _ in range(PULLS_PER_TENANT):
            messages = await broker.pull(tenant, CHUNKS_STREAM, CHUNK_TASK_GROUP, max_messages=1, timeout_s=0.05)
            if not messages:
                break
            try:
                task = await asyncio.to_thread(_claim, platform, tenant, messages[0], token_id, label)
            except BaseException:
                await _settle(broker, messages[0], ack=False)  # delivered again: the chunk is still queued
                raise
            await _settle(broker, messages[0], ack=True)  # claimed (or stale): the chunk ledger decides now
            if task is not None:
                return task
    return None


async def _settle(broker: Broker, message: Message, *, ack: bool) -> None:
    try:
        await (broker.ack([message]) if ack else broker.nak([message]))
    except BrokerError as exc:  # delivered again later; the chunk's state decides then
        log.warning("chunk_task_settle_failed", error=str(exc))


def _claim(platform: Platform, tenant: str, message: Message, token_id: str, label: str) -> RemoteTask | None:
    try:
        body = orjson.loads(message.body)
        file_id, index = str(body["file_id"]), int(body["index"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("chunk_task_unreadable", tenant=tenant, body=message.body[:200].decode(errors="replace"))
        return None
    record = platform.meta.get_file(file_id)
    if record is None or record.tenant != tenant or record.status is not FileStatus.RUNNING:
        return None
    worker = worker_owner(token_id, label)
    chunk = platform.meta.chunks.claim(file_id, index, worker, platform.settings.lease_ttl_s, new_id("r"))
    if chunk is None:
        return None
    try:
        return _hand_out(platform, record, chunk, token_id, worker)
    except (OSError, MysimbdpError) as exc:  # the staged file or the bundle cannot be read: try later
        error = f"tenant {tenant!r}: file {record.name!r}: chunk {index}: cannot be handed to worker {worker}: {exc}"
        log.error("chunk_hand_out_failed", tenant=tenant, file_id=file_id, chunk=index, error=error)
        retry_at = time.time() + platform.settings.retry_base_s
        platform.meta.chunks.finish(chunk, ChunkStatus.RETRY, ChunkCounts(), error=error, next_attempt_at=retry_at)
        return None


def _hand_out(platform: Platform, record: FileRecord, chunk: ChunkRecord, token_id: str, worker: str) -> RemoteTask:
    tenant, profile = platform.tenant(record.tenant)
    app = profile.batch_app(record.app)
    if app is None:
        raise ConfigError(f"app {record.app!r} is no longer in the profile")
    ranges, size_bytes = _ranges(record, chunk)
    version, _ = bundle_archive(tenant.bundle_dir)
    env = chunk_env(platform, tenant, profile, record, chunk, platform.home.run_dir(chunk.run_id))
    for name in LOCAL_ENV:
        env.pop(name, None)
    task = RemoteTask(
        chunk.run_id, record.tenant, record.id, record.name, chunk.index, len(platform.meta.chunks.of_file(record.id)),
        chunk.attempts, app.name, chunk.start, chunk.end, chunk.first_line, size_bytes, ranges, version,
        platform.settings.lease_ttl_s, env,
    )  # fmt: skip
    start_chunk_run(platform, record, chunk, app.name)
    claim = WorkerClaim(
        chunk.run_id, token_id, worker, record.tenant, record.id, chunk.index,
        tuple((r.start, r.end, r.sha256) for r in ranges), version, time.time(),
    )  # fmt: skip
    platform.meta.worker_claims.add(claim)
    log.info("chunk_handed_out", tenant=record.tenant, file_id=record.id, chunk=chunk.index, worker=worker)
    return task


def _ranges(record: FileRecord, chunk: ChunkRecord) -> tuple[tuple[ByteRange, ...], int]:
    """The byte ranges a worker needs for ``chunk`` (each with its sha256) and the file's size."""
    path = Path(record.path)
    size_bytes = path.stat().st_size
    spans = [(chunk.start, chunk.end)]
    if record.format == FileFormat.CSV and chunk.start > 0:
        spans.append((0, min(chunk.start, CSV_HEAD_BYTES)))
    elif record.format == FileFormat.PARQUET and size_bytes >= 12:
        with path.open("rb") as f:
            f.seek(size_bytes - 8)
            footer_bytes = int.from_bytes(f.read(4), "little")
        spans += [(0, 4), (max(0, size_bytes - 8 - footer_bytes), size_bytes)]
    return tuple(ByteRange(a, b, _sha256(path, a, b)) for a, b in merge_ranges(spans)), size_bytes


def _sha256(path: Path, start: int, end: int) -> str:
    digest = hashlib.sha256()
    for block in read_range(path, start, end):
        digest.update(block)
    return digest.hexdigest()


def read_range(path: Path, start: int, end: int) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of ``path``, in blocks."""
    with path.open("rb") as f:
        f.seek(start)
        left = end - start
        while left > 0 and (block := f.read(min(_BLOCK_BYTES, left))):
            left -= len(block)
            yield block


def bundle_archive(bundle_dir: str) -> tuple[str, bytes]:
    """The tenant bundle as a deterministic tar (sorted names, no times or owners) and its
    version (the tar's sha256); made again only when a file of the bundle changed."""
    root = Path(bundle_dir)
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and "__pycache__" not in p.relative_to(root).parts
    )
    stats = [(p, p.stat()) for p in files]
    signature = tuple((str(p.relative_to(root)), st.st_size, st.st_mtime_ns, st.st_mode) for p, st in stats)
    with _archives_lock:
        cached = _archives.get(bundle_dir)
        if cached is not None and cached[0] == signature:
            return cached[1], cached[2]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path, st in stats:
            info = tarfile.TarInfo(str(path.relative_to(root)))
            info.size, info.mode, info.mtime = st.st_size, 0o755 if st.st_mode & 0o111 else 0o644, 0
            with path.open("rb") as f:
                tar.addfile(info, f)
    data = buffer.getvalue()
    version = hashlib.sha256(data).hexdigest()
    with _archives_lock:
        _archives[bundle_dir] = (signature, version, data)
    return version, data


def record_progress(platform: Platform, claim: WorkerClaim, rows: int, bytes_read: int) -> None:
    """Renew the worker's leases and keep what its app last reported where the batch manager
    reads a running chunk's progress (the run's ``progress.json``)."""
    platform.meta.chunks.renew(claim.worker, platform.settings.lease_ttl_s)
    run_dir = platform.home.run_dir(claim.run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".progress.json.tmp"
    tmp.write_bytes(orjson.dumps({"rows": rows, "bytes": bytes_read}))
    os.replace(tmp, run_dir / "progress.json")


def finish_remote(
    platform: Platform,
    claim: WorkerClaim,
    chunk: ChunkRecord,
    outcome: Outcome,
    result: dict[str, object],
    rejects: bytes,
    started: float,
    ended: float,
) -> str:
    """Record a remote chunk run's end as a local one's; the claim's outcome (the chunk's
    status, or ``taken_over`` when its lease had expired)."""
    record = platform.meta.get_file(claim.file_id)
    if record is None:
        raise ConfigError(f"tenant {claim.tenant!r}: file {claim.file_id!r} is gone")
    run_dir = platform.home.run_dir(claim.run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "rejects.jsonl").write_bytes(rejects)
    quarantined = record_quarantine(platform, run_dir / "rejects.jsonl", record, claim.run_id)
    ran = AppRun(outcome, result, quarantined, started, ended)
    status = conclude_chunk(platform, record, chunk, record.app, ran)
    ended_as = "taken_over" if status is None else str(status)
    platform.meta.worker_claims.end(claim.run_id, ended_as)
    return ended_as


def give_back(platform: Platform, claim: WorkerClaim, chunk: ChunkRecord, reason: str) -> None:
    """The worker could not run the chunk (what it fetched was refused): queue it again now,
    record no rows, and end its run as transient with the reason."""
    error = f"worker {claim.worker} gave the chunk back: {reason}"
    platform.meta.chunks.finish(chunk, ChunkStatus.RETRY, ChunkCounts(), error=error, next_attempt_at=time.time())
    record = platform.meta.get_file(claim.file_id)
    app = record.app if record else ""
    run = RunRecord(claim.run_id, claim.file_id, claim.tenant, app, chunk.attempts, chunk.started_at)
    platform.meta.finish_run(replace(run, status=RunStatus.TRANSIENT, ended_at=time.time(), error=error))
    platform.meta.worker_claims.end(claim.run_id, "given_back")
    shutil.rmtree(platform.home.run_dir(claim.run_id), ignore_errors=True)  # its progress, if any
    log.warning("chunk_given_back", tenant=claim.tenant, file_id=claim.file_id, chunk=claim.index, error=error)
