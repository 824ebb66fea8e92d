"""A big file sent resumably through the platform's tus 1.0 server (``/v1/uploads/``) with
tuspy, the tus protocol's reference Python client (imported here only, when such a file is sent).

Each upload's URL is kept in a small state file (:class:`UploadState`, in the user's cache
directory) under a key made of the API's URL, the tenant and the file's sha256, size and
modification time, from its creation until its last byte is taken. An interrupted ``ingest``
run again finds it there, asks the server for its offset (``HEAD``) and sends only the rest;
an upload the server no longer has (expired, removed) is started afresh. Each PATCH carries a
sha1 ``Upload-Checksum``: the server keeps all of its bytes or none.

The API going away mid-upload (connection refused or reset, a 502/503/504 while it restarts)
is retried up to :data:`API_RETRIES` times with a doubling backoff (``on_retry(n, N)`` says
so, by default on stderr); once it answers again the upload resumes from the server's offset
(``HEAD``), which ``on_resume`` reports.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mysimbdp.adapters.apiclient import ApiClient
from mysimbdp.errors import ApiError

__all__ = ["API_RETRIES", "STATE_KEEP_S", "Resumed", "UploadState", "send_resumable", "state_key"]

STATE_KEEP_S = 2 * 24 * 3600.0  # an entry older than this is dropped (the server's uploads expire after 24 h)
HASH_BLOCK_BYTES = 1024 * 1024
GONE = (404, 410)  # the server no longer has the upload (unknown, removed; expired)
FILE_WAIT_S = 30.0  # a complete upload whose file is still being scanned: how long to ask for its id
API_RETRIES = 8  # the API gone mid-upload: attempts before giving up (backoff 1, 2, 4, 8, 8, … s: ~50 s)
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 8.0
TRANSIENT = (502, 503, 504)  # a proxy or the API itself while it restarts


class UploadState:
    """``{key: {"url", "name", "at"}}`` in a JSON file, changed under an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entries: dict[str, Any] = orjson.loads(self.path.read_bytes()) if self.path.exists() else {}
            except (OSError, orjson.JSONDecodeError):
                entries = {}  # a damaged state file only costs a fresh upload
            before = dict(entries)
            yield entries
            now = time.time()
            entries = {k: v for k, v in entries.items() if now - float(v.get("at", 0)) < STATE_KEEP_S}
            if entries != before:
                partial = self.path.with_suffix(".part")
                partial.write_bytes(orjson.dumps(entries, option=orjson.OPT_INDENT_2))
                os.replace(partial, self.path)

    def get(self, key: str) -> str | None:
        with self._locked() as entries:
            entry = entries.get(key)
            return str(entry["url"]) if entry else None

    def put(self, key: str, url: str, name: str) -> None:
        with self._locked() as entries:
            entries[key] = {"url": url, "name": name, "at": time.time()}

    def remove(self, key: str) -> None:
        with self._locked() as entries:
            entries.pop(key, None)


def state_key(api_url: str, tenant: str, path: Path) -> str:
    """What identifies one upload of this file's content to this tenant on this platform."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            digest.update(block)
    stat = path.stat()
    return f"{api_url.rstrip('/')} {tenant} sha256:{digest.hexdigest()} size:{stat.st_size} mtime:{stat.st_mtime_ns}"


@dataclass(frozen=True)
class Resumed:
    """A finished resumable upload: its URL, where this run started it, and the file it made."""

    url: str
    started_at_bytes: int  # 0: sent from the start; else the server held this much already
    file_id: str
    status: str  # the file's status when the upload ended (staged, rejected; the earlier file's for a duplicate)
    duplicate_file_id: str  # content accepted before: this upload's own record ("" else)


@contextlib.contextmanager
def _ca_bundle(ca_cert: str | None) -> Iterator[None]:
    """tuspy verifies with requests, which reads ``REQUESTS_CA_BUNDLE``: set it while it runs."""
    if not ca_cert:
        yield
        return
    before = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = ca_cert
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = before


def _tus_error(client: ApiClient, exc: Exception, name: str) -> ApiError:
    status = getattr(exc, "status_code", None)
    content = getattr(exc, "response_content", None)
    if not status:  # no answer: the connection failed
        return client.unreachable(exc)
    body: dict[str, Any] = {}
    with contextlib.suppress(ValueError, TypeError):
        loaded = orjson.loads(content or b"")
        body = loaded if isinstance(loaded, dict) else {}
    return client.refused(int(status), body or {"error": str(content or exc)[:500]}, f"the upload of {name!r}")


def send_resumable(
    client: ApiClient,
    path: Path,
    name: str,
    state: UploadState,
    *,
    chunk_bytes: int,
    rate_per_s: int | None = None,
    on_bytes: Callable[[int], None] = lambda n: None,
    on_resume: Callable[[int, int], None] = lambda offset, size: None,
    on_retry: Callable[[int, int], None] | None = None,
) -> Resumed:
    """Send ``path`` as ``name`` through ``/v1/uploads/``, resuming the upload an earlier run of
    this left unfinished; ``on_resume(offset, size)`` says so. At most ``rate_per_s`` bytes a second.
    The API gone mid-upload: ``on_retry(attempt, API_RETRIES)`` (default: a line on stderr), a
    backoff, then the server's offset again and the rest from there."""
    import requests
    from tusclient import client as tus_client
    from tusclient.exceptions import TusCommunicationError

    def retrying(attempt: int, attempts: int) -> None:
        print(f"{name}: the platform's API at {client.url} went away; retrying ({attempt}/{attempts})", file=sys.stderr)

    size = path.stat().st_size
    key = state_key(client.url, client.tenant, path)
    tus = tus_client.TusClient(f"{client.url}/v1/uploads/", headers=dict(client.headers))
    chunk = min(chunk_bytes, rate_per_s) if rate_per_s else chunk_bytes
    options: dict[str, Any] = {
        "chunk_size": chunk,
        "metadata": {"filename": name},
        "upload_checksum": True,
        "retries": 2,
        "retry_delay": 1,
    }
    with _ca_bundle(client.ca_cert):
        try:
            uploader = None
            if stored := state.get(key):
                try:
                    uploader = tus.uploader(str(path), url=stored, **options)  # HEAD: the server's offset
                    on_resume(uploader.offset, size)
                except TusCommunicationError as exc:
                    if exc.status_code not in GONE:
                        raise  # unreachable, or the key refused: keep the URL for the next run
                    state.remove(key)  # expired or removed on the server: start again
            if uploader is None:
                uploader = tus.uploader(str(path), **options)
                uploader.set_url(uploader.create_url())
                state.put(key, str(uploader.url), name)
            started, began = uploader.offset, time.monotonic()
            on_bytes(started)
            failures, lost = 0, False
            while uploader.offset < size:
                try:
                    if lost:  # where the server's copy ends now (a PATCH may have been cut off)
                        uploader.offset = uploader.get_offset()
                        on_resume(uploader.offset, size)
                        lost = False
                    uploader.upload_chunk()  # type: ignore[no-untyped-call]  # tuspy: no annotations
                except (TusCommunicationError, requests.exceptions.RequestException) as exc:
                    status = getattr(exc, "status_code", None)
                    if (status and status not in TRANSIENT) or failures >= API_RETRIES:
                        raise _as_tus(exc) from exc
                    failures, lost = failures + 1, True
                    (on_retry or retrying)(failures, API_RETRIES)
                    time.sleep(min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1)))
                    continue
                failures = 0
                on_bytes(uploader.offset)
                if rate_per_s:
                    time.sleep(max(0.0, (uploader.offset - started) / rate_per_s - (time.monotonic() - began)))
        except TusCommunicationError as exc:
            raise _tus_error(client, exc, name) from exc
    answered: dict[str, str] = uploader.request.response_headers if uploader.request is not None else {}
    file_id, status = answered.get("mysimbdp-file-id", ""), answered.get("mysimbdp-file-status", "")
    if not file_id:  # nothing sent by this run, or its last answer was lost: ask the server
        file_id, status = _file_of(client, str(uploader.url))
    state.remove(key)
    return Resumed(str(uploader.url), started, file_id, status, answered.get("mysimbdp-duplicate-file-id", ""))


def _as_tus(exc: Exception) -> Exception:
    """A requests error (tuspy's HEAD lets them through) as tuspy's own, for :func:`_tus_error`."""
    from tusclient.exceptions import TusCommunicationError

    return exc if isinstance(exc, TusCommunicationError) else TusCommunicationError(str(exc))  # type: ignore[no-untyped-call]


def _file_of(client: ApiClient, url: str) -> tuple[str, str]:
    """The id and status of the file a complete upload made (``GET /v1/uploads/{id}``)."""
    path = "/v1/uploads/" + url.rstrip("/").rsplit("/", 1)[-1]
    deadline = time.monotonic() + FILE_WAIT_S
    while True:
        state = client.get(path)
        if state.get("file_id") and state.get("file_status"):
            return str(state["file_id"]), str(state["file_status"])
        if time.monotonic() > deadline:
            raise ApiError(f"{client.who}: upload {url}: complete, but no file after {FILE_WAIT_S:.0f} s")
        time.sleep(0.2)
