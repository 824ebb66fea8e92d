"""Files sent over HTTP: streamed into the tenant's inbox, then fetched as an inbox file is.

An upload (``POST /v1/files``, a finished tus upload) is written to a hidden partial file in
``HOME/inbox/<tenant>/`` (``.upload-<token>``: the inbox ignores hidden names, and a rename
from there to a claim is atomic, one filesystem). :class:`Receiver` counts its bytes against
:class:`Allowance` (the profile's ``max_file_size_bytes`` and what is left of the daily byte
quota) while they arrive, and computes the sha256 on the way; a body over either stops at
once (:class:`~mysimbdp.errors.UploadRefused`, rule ``size`` or ``daily_bytes``) and the partial
file is removed. :func:`hand_to_fetch` renames the complete file to a claim of this platform
and runs :func:`~mysimbdp.services.fetch.fetch_claimed` on it: the same checks as the inbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from mysimbdp.adapters.files.claims import claim_name
from mysimbdp.domain.ids import new_id
from mysimbdp.domain.naming import MAX_FILENAME_BYTES, file_name_problems
from mysimbdp.domain.profile import Profile
from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.states import FileStatus
from mysimbdp.errors import UploadRefused
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.fetch import (
    DAY_S,
    FetchDecision,
    Received,
    fetch_claimed,
    received_name,
)

__all__ = [
    "MAX_UPLOAD_NAME_BYTES",
    "PARTIAL_PREFIX",
    "Allowance",
    "Answer",
    "Receiver",
    "allowance",
    "answer_for",
    "check_name",
    "hand_to_fetch",
    "partial_path",
    "receive",
    "replayed_answer",
    "status_code_of",
]

PARTIAL_PREFIX = ".upload-"
# a claim's name is the file's name after a prefix (owner and file id): the whole must fit a name
_CLAIM_ROOM = len(claim_name("o" + "0" * 12, new_id("f"), "").encode())
MAX_UPLOAD_NAME_BYTES = MAX_FILENAME_BYTES - _CLAIM_ROOM
_WRITE_BYTES = 1024 * 1024  # bytes held before one write to disk: the memory an upload may take


def check_name(tenant: str, name: str) -> None:
    """Refuse an unsafe file name (rule ``file_name``) before any byte is read: a path
    separator, ``..``, NUL or another control character, a leading dot (a hidden name), or over
    :data:`MAX_UPLOAD_NAME_BYTES` bytes (what is left of 255 after the claim's prefix)."""
    problems = file_name_problems(name)
    if name.startswith(".") and name not in (".", ".."):
        problems.append(f"file name {name!r} starts with '.' (a hidden name)")
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_UPLOAD_NAME_BYTES and not any("longer than" in p for p in problems):
        problems.append(f"file name is {size} bytes, longer than {MAX_UPLOAD_NAME_BYTES} bytes")
    if problems:
        shown = name if len(name) <= 80 else name[:80] + "…"
        raise UploadRefused(
            "file_name",
            f"tenant {tenant!r}: file {shown!r}: rule file_name: {'; '.join(problems)}; "
            f"use a plain file name of at most {MAX_UPLOAD_NAME_BYTES} bytes without folders",
            problems=problems,
        )


@dataclass(frozen=True)
class Allowance:
    """How many bytes one upload may take: the size limit and what is left of the day's quota."""

    tenant: str
    name: str
    size_limit_bytes: int  # the profile's max_file_size_bytes
    daily_limit_bytes: int  # the profile's max_bytes_per_day
    used_today_bytes: int  # accepted in the last 24 h + held by unfinished tus uploads
    upload_length_bytes: int | None = None  # a tus upload's declared Upload-Length

    def check(self, total_bytes: int, what: str) -> None:
        """Refuse ``total_bytes`` (``what``: 'the body read so far', 'Content-Length', …) over a limit."""
        where = f"tenant {self.tenant!r}: file {self.name!r}"
        if self.upload_length_bytes is not None and total_bytes > self.upload_length_bytes:
            raise UploadRefused(
                "upload_length",
                f"{where}: rule upload_length: {what} reaches {total_bytes} bytes, over its Upload-Length of "
                f"{self.upload_length_bytes} bytes",
                value_bytes=total_bytes,
                limit_bytes=self.upload_length_bytes,
            )
        if total_bytes > self.size_limit_bytes:
            raise UploadRefused(
                "size",
                f"{where}: rule size: {what} is {total_bytes} bytes, over the limit of {self.size_limit_bytes} bytes",
                value_bytes=total_bytes,
                limit_bytes=self.size_limit_bytes,
            )
        if self.used_today_bytes + total_bytes > self.daily_limit_bytes:
            raise UploadRefused(
                "daily_bytes",
                f"{where}: rule daily_bytes: {self.used_today_bytes} bytes taken in the last 24 h (accepted files "
                f"and unfinished uploads) + {what} {total_bytes} bytes is over the limit of "
                f"{self.daily_limit_bytes} bytes per day",
                value_bytes=self.used_today_bytes + total_bytes,
                limit_bytes=self.daily_limit_bytes,
            )


def allowance(
    platform: Platform, tenant: str, profile: Profile, name: str, *, held_by_self_bytes: int = 0
) -> Allowance:
    """The :class:`Allowance` of a new upload now (blocking: meta store queries). Refuses at once
    when the day's file quota is used up (rule ``daily_files``). ``held_by_self_bytes``: the
    declared length of the tus upload asking, not counted twice."""
    now = time.time()
    files_today, bytes_today = platform.meta.quota_usage(tenant, now - DAY_S)
    limits = profile.limits
    if files_today + 1 > limits.max_files_per_day:
        raise UploadRefused(
            "daily_files",
            f"tenant {tenant!r}: file {name!r}: rule daily_files: this would be file {files_today + 1} in the last "
            f"24 h, over the limit of {limits.max_files_per_day} files per day",
            value_files=files_today + 1,
            limit_files=limits.max_files_per_day,
        )
    # uploads answered 202 and not yet checked count in quota_usage (their `checking` records)
    held = platform.meta.uploads.unfinished_tus_bytes(tenant, now) - held_by_self_bytes
    return Allowance(tenant, name, limits.max_file_size_bytes, limits.max_bytes_per_day, bytes_today + held)


def keep_received(
    platform: Platform, tenant: str, partial: Path, name: str, received: Received
) -> tuple[FileRecord, Path]:
    """Rename the complete, fsynced ``partial`` file to its received name under a new file id,
    fsync the inbox and record the file ``checking`` (blocking): from here on a crash loses
    nothing, the checks run when the platform starts again, under this id, and
    ``GET /v1/files/{id}`` answers at once. A crash between the rename and the record leaves
    a file with no record: fetchdata takes it as an inbox file (the client got no 202)."""
    file_id = new_id("f")
    path = partial.with_name(received_name(file_id, name))
    os.rename(partial, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    now = time.time()
    record = FileRecord(
        file_id, tenant, name, received.sha256, received.size_bytes, "", FileStatus.CHECKING, now, now, str(path)
    )
    platform.meta.insert_file(record)
    return record, path


def partial_path(platform: Platform, tenant: str) -> Path:
    """A new hidden partial file's path in ``tenant``'s inbox (not created)."""
    inbox = platform.home.area("inbox", tenant)
    inbox.mkdir(parents=True, exist_ok=True)
    return inbox / f"{PARTIAL_PREFIX}{secrets.token_hex(8)}"


class Receiver:
    """Bytes of one upload going to ``path`` from ``offset`` on, counted against ``limits``
    and hashed on the way (``hashes``: hashlib names; sha256 for a whole file, a tus checksum's
    algorithm for one PATCH). At most :data:`_WRITE_BYTES` are held in memory; writes happen in
    a worker thread. ``fd``: the file already open (and locked) by the caller, else :meth:`open`."""

    def __init__(
        self,
        path: Path,
        limits: Allowance,
        *,
        offset: int = 0,
        fd: int | None = None,
        hashes: tuple[str, ...] = ("sha256",),
    ) -> None:
        self.path, self.limits, self.offset = path, limits, offset
        self.received_bytes = 0  # by this receiver
        self._hashes = {name: hashlib.new(name, usedforsecurity=False) for name in hashes}
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._fd = fd

    async def open(self) -> None:
        """Create the partial file (it must not exist)."""
        self._fd = await asyncio.to_thread(
            os.open, self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )

    def digest(self, name: str) -> bytes:
        return self._hashes[name].digest()

    def hexdigest(self, name: str) -> str:
        return self._hashes[name].hexdigest()

    def received(self) -> Received | None:
        """The whole file's sha256 and size, when this receiver hashed it from its first byte."""
        if self.offset != 0 or "sha256" not in self._hashes:
            return None
        return Received(self.hexdigest("sha256"), self.received_bytes)

    async def write(self, chunk: bytes) -> None:
        """Take ``chunk``, or refuse it (:class:`UploadRefused`) when it goes over a limit."""
        if not chunk:
            return
        self.limits.check(self.offset + self.received_bytes + len(chunk), "the body read so far")
        self.received_bytes += len(chunk)
        for hashed in self._hashes.values():
            hashed.update(chunk)
        self._held.append(chunk)
        self._held_bytes += len(chunk)
        if self._held_bytes >= _WRITE_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        if not self._held:
            return
        data, self._held, self._held_bytes = b"".join(self._held), [], 0
        assert self._fd is not None
        await asyncio.to_thread(_write_all, self._fd, self.offset + self.received_bytes - len(data), data)

    async def close(self, *, keep: bool = True) -> None:
        """Write what is held (or, ``keep=False``, cut the file back to ``offset``: a tus chunk
        whose checksum failed), fsync and close: every byte counted is on disk."""
        if keep:
            await self._flush()
        else:
            self._held, self._held_bytes, self.received_bytes = [], 0, 0
        if self._fd is not None:
            fd, self._fd = self._fd, None
            await asyncio.to_thread(_sync_close, fd, None if keep else self.offset)

    async def discard(self) -> None:
        """Close and remove the partial file (an upload refused or cut off: nothing kept)."""
        self._held, self._held_bytes = [], 0
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        await asyncio.to_thread(self.path.unlink, missing_ok=True)


def _write_all(fd: int, at: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, at)
        view, at = view[written:], at + written


def _sync_close(fd: int, truncate_to: int | None) -> None:
    try:
        if truncate_to is not None:
            os.ftruncate(fd, truncate_to)
        os.fsync(fd)
    finally:
        os.close(fd)


async def receive(
    chunks: AsyncIterator[bytes], receiver: Receiver, idle_timeout_s: float, kept: str = "nothing was kept"
) -> None:
    """Feed ``chunks`` to ``receiver``; a gap over ``idle_timeout_s`` between two chunks is
    refused (rule ``idle_timeout``; ``kept``: what the refusal says became of the bytes)."""
    iterator = aiter(chunks)
    while True:
        try:
            chunk = await asyncio.wait_for(anext(iterator), idle_timeout_s)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            limits = receiver.limits
            raise UploadRefused(
                "idle_timeout",
                f"tenant {limits.tenant!r}: file {limits.name!r}: rule idle_timeout: no byte for {idle_timeout_s} s "
                f"after {receiver.offset + receiver.received_bytes} bytes; {kept}",
                timeout_s=idle_timeout_s,
                received_bytes=receiver.offset + receiver.received_bytes,
            ) from exc
        await receiver.write(chunk)


def hand_to_fetch(
    platform: Platform, tenant: str, partial: Path, name: str, file_id: str = "", received: Received | None = None
) -> FetchDecision:
    """Claim the complete ``partial`` file under ``name`` (as file ``file_id``, a new id by
    default) and fetch it (blocking: the scan runs in its own process). ``received``: the
    sha256 and size the receiver computed, so the scan does not hash the bytes again. A
    platform stopping meanwhile gives the file back to the inbox under ``name``, where
    fetchdata takes it."""
    claimed = partial.with_name(claim_name(platform.claim_owner.id, file_id or new_id("f"), name))
    os.rename(partial, claimed)
    return fetch_claimed(platform, tenant, claimed, received=received)


@dataclass(frozen=True)
class Answer:
    """What an upload answers: the HTTP status and the JSON body's fields."""

    status_code: int
    file_id: str
    status: str
    reasons: tuple[str, ...]
    name: str
    size_bytes: int
    sha256: str
    duplicate_file_id: str = ""  # for a duplicate: the record of this upload (file_id is the earlier file)

    @property
    def location(self) -> str:
        return f"/v1/files/{self.file_id}"

    def body(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "file_id": self.file_id,
            "status": self.status,
            "reasons": list(self.reasons),
            "name": self.name,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "location": self.location,
        }
        if self.duplicate_file_id:
            fields["duplicate_file_id"] = self.duplicate_file_id
        if self.status_code >= 400:  # a rejected file: its reasons in one line, as every refusal has
            fields["error"] = f"file {self.file_id} ({self.name!r}) {self.status}: " + "; ".join(self.reasons)
        return fields


def answer_for(platform: Platform, decision: FetchDecision) -> Answer:
    """The answer of a fetched upload (blocking): 201 staged, 422 rejected (the file id and its
    reasons), 200 for content already accepted (the earlier file's id and status)."""
    facts = decision.facts
    sha256 = facts.sha256 if facts else ""
    size = facts.size_bytes if facts else 0
    if decision.status is FileStatus.DUPLICATE and sha256:
        earlier = platform.meta.accepted_with_sha(decision.tenant, sha256)
        if earlier is not None:
            return Answer(
                200, earlier.id, str(earlier.status), decision.reasons, decision.name, size, sha256, decision.file_id
            )
    code = 201 if decision.status is FileStatus.STAGED else 422
    return Answer(code, decision.file_id, str(decision.status), decision.reasons, decision.name, size, sha256)


def status_code_of(status: FileStatus) -> int:
    """The upload answer of a file in ``status``: 422 rejected, 200 duplicate, else 201."""
    return {FileStatus.REJECTED: 422, FileStatus.DUPLICATE: 200}.get(status, 201)


def replayed_answer(platform: Platform, file_id: str, status_code: int, tenant: str = "") -> Answer | None:
    """The answer of an earlier request (``Idempotency-Key``), with the file's status now (a
    202 whose file still waits for its checks: ``checking``)."""
    record = platform.meta.get_file(file_id)
    if record is None or (tenant and record.tenant != tenant):
        return None
    return Answer(
        status_code, record.id, str(record.status), record.reasons, record.name, record.size_bytes, record.sha256
    )
