"""A tenant's client of the platform's HTTP API (httpx), for the remote CLI (``--api URL``).

Every call is made with the tenant's key (``Authorization: Bearer``); every failure is an
:class:`~mysimbdp.errors.ApiError` whose message names the tenant, the URL and, for an API's
refusal, what the API said (its ``error`` names the file, the rule and the value). The key is
never part of a message. A constructor does no IO; :meth:`ApiClient.close` releases the
connections.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from mysimbdp.errors import ApiError

__all__ = ["READ_BLOCK_BYTES", "ApiClient", "Uploaded", "tls_context"]

READ_BLOCK_BYTES = 256 * 1024  # a file is sent in blocks of this size, never read whole
TIMEOUT_S = 60.0  # connect / read / write: the answer of the upload's last byte waits for its scan
POST_ATTEMPTS = 3  # a POST cut off before its answer is sent again (same Idempotency-Key: safe)
BUSY_WAIT_S = 1.0  # 409 "a request with this key is still running": wait, then ask again

Uploaded = dict[str, Any]
"""The answer of ``POST /v1/files`` (``file_id``, ``status``, ``reasons``, ...; ``status_code``)."""


def tls_context(ca_cert: str | None) -> ssl.SSLContext | bool:
    """What httpx verifies the server's certificate with: the system's (and certifi's), or one
    CA bundle (``--ca-cert``, ``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``)."""
    if not ca_cert:
        return True
    try:
        return ssl.create_default_context(cafile=ca_cert)
    except (OSError, ssl.SSLError) as exc:
        raise ApiError(f"the CA certificate {ca_cert!r} cannot be loaded: {exc}") from exc


def _throttled(path: Path, start: int, on_bytes: Callable[[int], None], rate_per_s: int | None) -> Iterator[bytes]:
    """The bytes of ``path`` from ``start``, in blocks, at most ``rate_per_s`` bytes a second."""
    began, sent = time.monotonic(), 0
    with path.open("rb") as f:
        f.seek(start)
        while block := f.read(READ_BLOCK_BYTES if rate_per_s is None else min(READ_BLOCK_BYTES, rate_per_s)):
            yield block
            sent += len(block)
            on_bytes(start + sent)
            if rate_per_s:
                time.sleep(max(0.0, sent / rate_per_s - (time.monotonic() - began)))


class ApiClient:
    """The API at ``url`` as tenant ``tenant`` (whose key ``key`` is; "": the key's, whichever)."""

    def __init__(self, url: str, key: str, tenant: str, *, ca_cert: str | None = None) -> None:
        self.url, self.tenant, self.ca_cert = url.rstrip("/"), tenant, ca_cert
        self.who = f"tenant {tenant!r}" if tenant else "the key's tenant"
        self.headers = {"Authorization": f"Bearer {key}"}
        self._http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.url, headers=self.headers, timeout=TIMEOUT_S, verify=tls_context(self.ca_cert)
            )
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- errors ------------------------------------------------------------------------------
    def unreachable(self, exc: Exception) -> ApiError:
        text = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return ApiError(
                f"{self.who}: the platform's API at {self.url} has a TLS certificate this machine does "
                f"not trust ({text}); give its CA with --ca-cert FILE (or REQUESTS_CA_BUNDLE / SSL_CERT_FILE)"
            )
        return ApiError(f"{self.who}: cannot reach the platform's API at {self.url}: {text}")

    def refused(self, status: int, body: dict[str, Any], what: str) -> ApiError:
        """The error of an API's answer ``status`` (JSON ``body``) to ``what`` (e.g. ``GET /v1/files``)."""
        said = str(body.get("error") or body.get("detail") or "(no error message)")
        if status == 401:
            message = (
                f"the API key (MYSIMBDP_API_KEY / --api-key) was refused for {self.who} at {self.url}: "
                f"{said}; use the key `mysimbdp tenant add TENANT --json` printed (or rotate it)"
            )
        elif status == 403:
            message = f"the API key is not {self.who}'s at {self.url}: {said}"
        else:
            who = "" if said.startswith(self.who) else f"{self.who}: "  # the API's errors name the tenant
            message = f"{who}{what} at {self.url} answered {status}: {said}"
        return ApiError(message, status, body)

    @staticmethod
    def body_of(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {"error": response.text[:500]}
        return body if isinstance(body, dict) else {"items": body}

    # -- reads -------------------------------------------------------------------------------
    def get(self, path: str, **params: Any) -> Any:
        """The JSON answer of ``GET path`` (None parameters left out); an error status raises."""
        query = {k: v for k, v in params.items() if v is not None}
        try:
            response = self.http.get(path, params=query)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc
        if response.status_code >= 400:
            raise self.refused(response.status_code, self.body_of(response), f"GET {path}")
        return response.json()

    def download(self, path: str, accept: str, **params: Any) -> Iterator[bytes]:
        """The body of ``GET path`` as ``accept``, chunk by chunk as it comes (None parameters
        left out); an error status raises before the first chunk."""
        query = {k: v for k, v in params.items() if v is not None}
        try:
            with self.http.stream("GET", path, params=query, headers={"Accept": accept}) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self.refused(response.status_code, self.body_of(response), f"GET {path}")
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc

    def check_tenant(self) -> None:
        """Fail early (before a file is sent): the URL answers and the key is the tenant's."""
        self.get("/v1/files", tenant=self.tenant or None, limit=1)

    def pages(self, path: str, wanted: int, page_size: int = 1000, **params: Any) -> list[Any]:
        """Up to ``wanted`` items (0: all) of a paged listing (``{"items", "total"}``), in its order."""
        items: list[Any] = []
        while not wanted or len(items) < wanted:
            limit = page_size if not wanted else min(page_size, wanted - len(items))
            page = self.get(path, limit=limit, offset=len(items), **params)
            found = page["items"] if isinstance(page, dict) else page
            items.extend(found)
            if len(found) < limit or (isinstance(page, dict) and len(items) >= page["total"]):
                break
        return items

    # -- the upload of a small file ------------------------------------------------------------
    def post_file(
        self,
        path: Path,
        name: str,
        *,
        idempotency_key: str,
        on_bytes: Callable[[int], None],
        rate_per_s: int | None = None,
        respond_async: bool = False,
    ) -> Uploaded:
        """``POST /v1/files?name=`` with the file's bytes streamed from disk. A POST cut off before
        its answer is sent again under the same ``Idempotency-Key`` (the server answers it once).
        201, 200 and 422 (a rejected file) are answers, and 202 with ``respond_async`` (``Prefer:
        respond-async``: answered once the file is on disk, its checks after); anything else raises."""
        size = path.stat().st_size
        headers = {
            "Idempotency-Key": idempotency_key,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            **({"Prefer": "respond-async"} if respond_async else {}),
        }
        where = f"POST /v1/files (file {name!r}, {size} bytes)"
        for attempt in range(1, POST_ATTEMPTS + 1):
            try:
                response = self.http.post(
                    "/v1/files",
                    params={"name": name},
                    headers=headers,
                    content=_throttled(path, 0, on_bytes, rate_per_s),
                )
            except httpx.TransportError as exc:
                if attempt == POST_ATTEMPTS or isinstance(exc, httpx.ConnectError):
                    raise self.unreachable(exc) from exc
                continue
            body = self.body_of(response)
            if response.status_code == 409 and body.get("rule") == "idempotency_key" and attempt < POST_ATTEMPTS:
                time.sleep(BUSY_WAIT_S)
                continue
            if response.status_code in (200, 201, 202) or (response.status_code == 422 and body.get("file_id")):
                return {**body, "status_code": response.status_code}
            raise self.refused(response.status_code, body, where)
        raise ApiError(f"{self.who}: {where} at {self.url}: no answer after {POST_ATTEMPTS} attempts")
