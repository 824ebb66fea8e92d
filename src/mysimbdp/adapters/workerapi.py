"""A remote chunk worker's client of the platform API's worker routes (``/v1/worker/``, httpx).

Every call carries the worker token (``Authorization: Bearer``; never part of a message). A
failure to reach the API, or an answer that is an error, is an :class:`ApiError` naming the
URL, the task and what the API said; bytes whose size or sha256 is not the one the task
announced are a :class:`ChunkFetchRefused`. The constructor does no IO; :meth:`close`
releases the connections.
"""

from __future__ import annotations

import hashlib
from typing import Any, BinaryIO

import httpx

from mysimbdp.adapters.apiclient import tls_context
from mysimbdp.domain.remotetask import ByteRange, RemoteTask, check_bytes
from mysimbdp.errors import ApiError

__all__ = ["WorkerApi"]

TIMEOUT_S = 30.0


class WorkerApi:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        ca_cert: str | None = None,
        timeout_s: float = TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,  # another way to the API (an ASGI app in tests)
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ca_cert, self._timeout_s, self._transport = ca_cert, timeout_s, transport
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.url,
                headers=self._headers,
                timeout=self._timeout_s,
                verify=tls_context(self._ca_cert),
                transport=self._transport,
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"{what}: the platform API {self.url} cannot be reached: {exc!r}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": response.text[:500]}
            body = body if isinstance(body, dict) else {"error": str(body)}
            said = body.get("error", "")
            message = f"{what}: {method} {self.url}{path} answered {response.status_code}: {said}"
            raise ApiError(message, response.status_code, body)
        return response

    async def claim(self, label: str) -> RemoteTask | None:
        """The next chunk claimed for this worker, or None when none is waiting."""
        response = await self._call(
            "POST", "/v1/worker/claims", f"worker {label}: claiming a chunk", json={"worker": label}
        )
        return None if response.status_code == 204 else RemoteTask.from_json(response.json())

    async def fetch_range(self, task: RemoteTask, piece: ByteRange, out: BinaryIO) -> None:
        """Write the bytes of ``piece`` at their offset of ``out``, checked against its sha256."""
        what = f"{task.describe()}: bytes {piece.start}-{piece.end} of the staged file"
        path = f"/v1/worker/chunks/{task.task}/bytes"
        headers = {"Range": f"bytes={piece.start}-{piece.end - 1}"}
        digest, got = hashlib.sha256(), 0
        out.seek(piece.start)
        try:
            async with self.http.stream("GET", path, headers=headers) as response:
                if response.status_code != 206:
                    await response.aread()
                    said = response.text[:500]
                    raise ApiError(
                        f"{what}: GET {self.url}{path} answered {response.status_code}: {said}", response.status_code
                    )
                async for block in response.aiter_bytes():
                    got += len(block)
                    if got > piece.size_bytes:
                        break  # more than announced: refused below without reading the rest
                    digest.update(block)
                    out.write(block)
        except httpx.HTTPError as exc:
            raise ApiError(f"{what}: the platform API {self.url} cannot be reached: {exc!r}") from exc
        check_bytes(what, digest.hexdigest(), got, piece.sha256, piece.size_bytes)

    async def bundle(self, task: RemoteTask) -> bytes:
        """The tenant's bundle (a tar) of the task's version, checked against it (its sha256)."""
        what = f"{task.describe()}: the bundle of tenant {task.tenant!r}, version {task.bundle_version}"
        response = await self._call("GET", f"/v1/worker/bundles/{task.tenant}/{task.bundle_version}", what)
        data = response.content
        check_bytes(what, hashlib.sha256(data).hexdigest(), len(data), task.bundle_version, len(data))
        return data

    async def progress(self, task: RemoteTask, rows: int, bytes_read: int) -> bool:
        """Renew the lease (and report progress); False when the task no longer holds the chunk."""
        try:
            path, body = f"/v1/worker/chunks/{task.task}/progress", {"rows": rows, "bytes": bytes_read}
            await self._call("POST", path, f"{task.describe()}: renewing its lease", json=body)
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def finish(self, task: RemoteTask, report: dict[str, Any]) -> str:
        """Record the run's end; the chunk's new status (``done``, ``retry``, ``failed``, ``taken_over``)."""
        path = f"/v1/worker/chunks/{task.task}/finish"
        response = await self._call("POST", path, f"{task.describe()}: recording its run", json=report)
        return str(response.json().get("outcome", ""))

    async def give_back(self, task: RemoteTask, reason: str) -> None:
        path = f"/v1/worker/chunks/{task.task}/give-back"
        await self._call("POST", path, f"{task.describe()}: giving it back", json={"reason": reason[:4000]})
