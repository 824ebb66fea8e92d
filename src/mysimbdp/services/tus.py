"""tus 1.0 resumable uploads of a tenant: core, creation, termination, checksum, expiration.

An upload is a row in the meta store (``tus_uploads``: tenant, name, declared length, expiry)
and a hidden partial file ``HOME/inbox/<tenant>/.tus-<upload id>``; its offset is that file's
size on disk, read under an exclusive ``flock`` of the file, so two PATCHes of one upload
never write at once (the second is refused, rule ``upload_busy``) and a PATCH never trusts an
offset it did not read itself. A PATCH's bytes are fsynced before its answer gives the new
offset; a PATCH cut off midway keeps what arrived (the client resumes from the offset HEAD
gives), except one with ``Upload-Checksum``, which keeps all of its bytes or none.

The last byte hands the file to fetch (:func:`~mysimbdp.services.upload.hand_to_fetch`), as
``POST /v1/files`` does, under a file id recorded in the row first: a crash during that fetch
is finished by reconcile, and the row learns the file's outcome from its record. Unfinished
uploads hold their declared length against the tenant's daily byte quota until they end or
expire; an expired upload's bytes are removed (:func:`expire`), its row kept as a tombstone
(410) for another expiry period, then removed (404).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import hmac
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

from mysimbdp.adapters.metastore.uploads import TusUpload
from mysimbdp.domain.ids import new_id
from mysimbdp.domain.profile import Profile
from mysimbdp.errors import UploadRefused
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.fetch import Received
from mysimbdp.services.upload import (
    PARTIAL_PREFIX,
    Allowance,
    Answer,
    Receiver,
    allowance,
    answer_for,
    check_name,
    hand_to_fetch,
    receive,
    status_code_of,
)

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "TUS_EXTENSIONS",
    "TUS_PREFIX",
    "TUS_VERSION",
    "Patched",
    "Progress",
    "create",
    "expire",
    "find",
    "parse_checksum",
    "parse_metadata",
    "patch",
    "terminate",
]

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination,checksum,expiration"
CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5")
TUS_PREFIX = ".tus-"

log = get_logger("api")


def _where(tenant: str, upload_id: str) -> str:
    return f"tenant {tenant!r}: upload {upload_id!r}"


def parse_metadata(raw: str, where: str) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64(value)`` pairs (a value may be absent)."""
    pairs: dict[str, str] = {}
    for item in raw.split(","):
        key, _, encoded = item.strip().partition(" ")
        if not key:
            continue
        try:
            pairs[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise UploadRefused(
                "metadata", f"{where}: rule metadata: the value of {key[:40]!r} is not base64 of UTF-8 text"
            ) from exc
    return pairs


def parse_checksum(raw: str, where: str) -> tuple[str, bytes]:
    """``Upload-Checksum: <algorithm> <base64 digest>`` as (hashlib name, digest)."""
    algorithm, _, encoded = raw.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise UploadRefused(
            "checksum_algorithm",
            f"{where}: rule checksum_algorithm: {algorithm[:40]!r} is not supported; use one of "
            f"{', '.join(CHECKSUM_ALGORITHMS)}",
            supported=list(CHECKSUM_ALGORITHMS),
        )
    try:
        return algorithm, base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error as exc:
        raise UploadRefused(
            "checksum_algorithm", f"{where}: rule checksum_algorithm: the digest is not base64"
        ) from exc


def create(platform: Platform, tenant: str, profile: Profile, name: str, length_bytes: int) -> TusUpload:
    """A new upload of ``length_bytes`` (blocking). Refused at once for an unsafe name, a length
    over ``max_file_size_bytes`` (rule ``size``) or over what is left of the day's quota, counting
    the other unfinished uploads (``daily_bytes``), or the day's file quota (``daily_files``)."""
    check_name(tenant, name)
    now = time.time()
    expire(platform, now)
    allowance(platform, tenant, profile, name).check(length_bytes, "its Upload-Length")
    upload_id = new_id("u")
    inbox = platform.home.area("inbox", tenant)
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / f"{TUS_PREFIX}{upload_id}"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    upload = TusUpload(upload_id, tenant, name, length_bytes, str(path), now, now + platform.settings.upload_expire_s)
    try:
        platform.meta.uploads.add_tus(upload)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    log.info("upload_created", tenant=tenant, upload_id=upload_id, file=name, length_bytes=length_bytes)
    return upload


@dataclass(frozen=True)
class Progress:
    upload: TusUpload
    offset_bytes: int  # the bytes on disk (the length once complete)

    @property
    def complete(self) -> bool:
        return self.offset_bytes == self.upload.length_bytes


def find(platform: Platform, tenant: str, upload_id: str) -> Progress:
    """``tenant``'s upload and its offset (blocking). Another tenant's, an unknown or a
    terminated one: rule ``not_found``; past its expiry: rule ``expired`` (its bytes removed)."""
    now = time.time()
    upload = platform.meta.uploads.tus(tenant, upload_id)
    if upload is None:
        raise UploadRefused(
            "not_found",
            f"{_where(tenant, upload_id)}: rule not_found: no such upload of this tenant",
            upload_id=upload_id,
        )
    if upload.expires_at <= now:
        Path(upload.path).unlink(missing_ok=True)
        raise UploadRefused(
            "expired",
            f"{_where(tenant, upload_id)}: rule expired: the upload expired at {time.ctime(upload.expires_at)} "
            f"({platform.settings.upload_expire_s:g} s after its creation) and its bytes were removed; "
            "create a new upload",
            upload_id=upload_id,
            expired_at=upload.expires_at,
        )
    if upload.file_id:
        return Progress(_settled(platform, upload), upload.length_bytes)
    return Progress(upload, os.stat(upload.path).st_size)


def _settled(platform: Platform, upload: TusUpload) -> TusUpload:
    """A complete upload with the outcome of its file (learnt from the file's record when a
    crash or a stop cut its fetch short: reconcile records the file)."""
    if upload.status_code:
        return upload
    record = platform.meta.get_file(upload.file_id)
    if record is None:  # its scan is still running
        return upload
    code = status_code_of(record.status)
    platform.meta.uploads.finish_tus(upload.id, upload.file_id, code)
    return replace(upload, status_code=code)


class _Lock:
    """The upload's partial file, open for writing under an exclusive, non-blocking ``flock``."""

    def __init__(self, upload: TusUpload) -> None:
        self.upload = upload
        self.fd = -1

    def __enter__(self) -> int:
        try:
            self.fd = os.open(self.upload.path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:  # completed or terminated meanwhile
            raise UploadRefused(
                "not_found", f"{_where(self.upload.tenant, self.upload.id)}: rule not_found: the upload just ended"
            ) from exc
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self.fd)
            raise UploadRefused(
                "upload_busy",
                f"{_where(self.upload.tenant, self.upload.id)}: rule upload_busy: another request is writing this "
                "upload; wait for it to end, then HEAD for the offset",
            ) from exc
        return self.fd

    def __exit__(self, *exc: object) -> None:
        """Leaves the fd to its :class:`Receiver` when one took it (``fd`` set to -1)."""
        if self.fd >= 0:
            os.close(self.fd)


@dataclass(frozen=True)
class Patched:
    offset_bytes: int
    answer: Answer | None = None  # the fetched file's, when this PATCH completed the upload


async def patch(
    platform: Platform,
    progress: Progress,
    client_offset: int,
    chunks: AsyncIterator[bytes],
    checksum: tuple[str, bytes] | None,
    limits: Allowance,
    declared_bytes: int | None = None,
) -> Patched:
    """Append ``chunks`` at ``client_offset`` (the offset on disk, else rule ``offset``), within
    the upload's length (``declared_bytes``: the Content-Length, checked before reading); with
    ``checksum``, all of this PATCH's bytes or none (rule ``checksum``).
    The last byte hands the file to fetch. Bytes of a PATCH cut off (``disconnected``,
    ``idle_timeout``) or refused midway are kept when it has no checksum."""
    upload = progress.upload
    where = _where(upload.tenant, upload.id)
    if progress.complete:
        raise UploadRefused("offset", f"{where}: rule offset: the upload is complete", offset_bytes=upload.length_bytes)
    lock = _Lock(upload)
    with lock as fd:
        offset = os.fstat(fd).st_size  # read under the lock: the offset no other PATCH is moving
        if client_offset != offset:
            raise UploadRefused(
                "offset",
                f"{where}: rule offset: Upload-Offset {client_offset} is not the upload's offset {offset}; "
                "HEAD the upload and send from its offset",
                offset_bytes=offset,
            )
        if declared_bytes is not None:  # refused before a byte is read
            limits.check(offset + declared_bytes, "the offset + Content-Length")
        # a PATCH from offset 0 hashes the whole file on the way: its fetch does not hash it again
        hashes = ((checksum[0],) if checksum else ()) + (("sha256",) if offset == 0 else ())
        receiver = Receiver(Path(upload.path), limits, offset=offset, fd=fd, hashes=hashes)
        lock.fd = -1  # the receiver closes it, which releases the lock
        try:
            await receive(chunks, receiver, platform.settings.upload_idle_timeout_s, _kept(checksum, offset))
        except BaseException:
            await receiver.close(keep=checksum is None)
            raise
        if checksum and not hmac.compare_digest(receiver.digest(checksum[0]), checksum[1]):
            await receiver.close(keep=False)
            raise UploadRefused(
                "checksum",
                f"{where}: rule checksum: the {checksum[0]} of the {receiver.received_bytes} bytes sent is not the "
                f"Upload-Checksum; nothing of them was kept, send them again from offset {offset}",
                offset_bytes=offset,
            )
        await receiver.close()
        offset += receiver.received_bytes
    if offset < upload.length_bytes:
        return Patched(offset)
    return Patched(offset, await _complete(platform, upload, receiver.received()))


def _kept(checksum: tuple[str, bytes] | None, offset: int) -> str:
    """What a PATCH refused midway keeps, as its refusal says it."""
    if checksum:
        return f"none of this PATCH's bytes were kept, send them again from offset {offset}"
    return "the bytes that arrived were kept; HEAD the upload for its offset and send from there"


async def _complete(platform: Platform, upload: TusUpload, received: Received | None) -> Answer:
    file_id = new_id("f")
    await asyncio.to_thread(platform.meta.uploads.finish_tus, upload.id, file_id, 0)
    try:
        decision = await asyncio.to_thread(
            hand_to_fetch, platform, upload.tenant, Path(upload.path), upload.name, file_id, received
        )
    except BaseException:  # the file went back to the inbox (fetchdata takes it): the upload is over
        await asyncio.to_thread(platform.meta.uploads.remove_tus, upload.id)
        raise
    answer = await asyncio.to_thread(answer_for, platform, decision)
    await asyncio.to_thread(platform.meta.uploads.finish_tus, upload.id, answer.file_id, answer.status_code)
    log.info(
        "upload_completed", tenant=upload.tenant, upload_id=upload.id, file_id=answer.file_id, status=answer.status
    )
    return answer


def terminate(platform: Platform, progress: Progress) -> None:
    """Remove the upload and its bytes (blocking); a complete one's file stays as fetched."""
    upload = progress.upload
    if not progress.complete:
        with _Lock(upload):  # never while a PATCH writes
            Path(upload.path).unlink(missing_ok=True)
    platform.meta.uploads.remove_tus(upload.id)
    log.info("upload_terminated", tenant=upload.tenant, upload_id=upload.id, offset_bytes=progress.offset_bytes)


def expire(platform: Platform, now: float) -> int:
    """Remove the bytes of every tenant's expired uploads, and the rows expired for one more
    period; also partial files nobody owns any more (a crash before their row, or a plain
    upload's ``.upload-*`` file whose request died) once older than the expiry. Returns how
    many uploads' bytes were removed."""
    expire_s = platform.settings.upload_expire_s
    removed = 0
    for upload in platform.meta.uploads.expired_tus(now):
        with contextlib.suppress(FileNotFoundError):
            Path(upload.path).unlink()
            removed += 1
            log.info("upload_expired", tenant=upload.tenant, upload_id=upload.id, file=upload.name)
        if upload.expires_at <= now - expire_s:
            platform.meta.uploads.remove_tus(upload.id)
    for tenant in platform.home.tenants_with_inbox():
        for path in platform.home.area("inbox", tenant).iterdir():
            if not path.name.startswith((TUS_PREFIX, PARTIAL_PREFIX)):
                continue
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < now - expire_s and (
                    path.name.startswith(PARTIAL_PREFIX)
                    or platform.meta.uploads.tus(tenant, path.name.removeprefix(TUS_PREFIX)) is None
                ):
                    path.unlink()
                    removed += 1
    return removed
