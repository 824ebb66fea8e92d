"""Opaque, signed cursors of the read API's paging (``next``) and incremental reads (``since``).

A cursor is ``1.<payload>.<mac>``, both parts base64url without padding: the payload is
JSON ``{"d": dataset, "s": sort, "f": filter digest, "p": position}``, the MAC is
HMAC-SHA256 (first 16 bytes) under a platform secret over a domain tag, the **tenant** and
the payload. So a client can read a cursor but not make or change one; a cursor of another
tenant fails the MAC (its tenant is in no payload: nothing about it shows), and one of
another dataset, sort or filter fails its binding, each with a :class:`FilterError`
(``rule="cursor"``; the API answers 400).

The position is what coredms seeks after: ``(sort value, key)``, ``(key,)`` for
``sort=key``, or (for ``since``, once coredms has a write-order column) ``(sequence,)``;
JSON scalars only. Several keys may verify (the first signs), so the secret can be rotated
without breaking cursors in flight.

Pure: no IO.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from mysimbdp.errors import FilterError

__all__ = ["MAX_CURSOR_CHARS", "CursorCodec", "CursorScope", "cursor_key"]

MAX_CURSOR_CHARS = 4096  # fits a query string; a sort value that makes it longer cannot be paged
VERSION = "1"
MAC_BYTES = 16
_TAG = b"mysimbdp.cursor.v1\0"


@dataclass(frozen=True, slots=True)
class CursorScope:
    """What a cursor is valid for: one tenant's dataset, read in one sort under one filter
    (``domain.docfilter.filter_digest``; ``SortSpec.text``)."""

    tenant: str
    dataset: str
    sort: str
    filter_digest: str


def cursor_key(platform_secret: str | bytes) -> bytes:
    """The cursors' HMAC key derived from a platform secret (never the secret itself)."""
    secret = platform_secret.encode() if isinstance(platform_secret, str) else platform_secret
    if not secret:
        raise ValueError("cursor_key: the platform secret is empty")
    return hmac.new(secret, b"mysimbdp read-api cursor key", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _forged() -> FilterError:
    return FilterError(
        "cursor",
        "cursor is not valid here: it was altered, forged, or issued for another tenant; start again without a cursor",
    )


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


class CursorCodec:
    """Signs and checks cursors with ``keys`` (the first signs; any verifies)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or any(len(key) < 16 for key in keys):
            raise ValueError("CursorCodec: give at least one key of 16 bytes or more (see cursor_key)")
        self._keys = tuple(keys)

    def _mac(self, key: bytes, tenant: str, payload: bytes) -> bytes:
        return hmac.new(key, _TAG + tenant.encode() + b"\0" + payload, hashlib.sha256).digest()[:MAC_BYTES]

    def encode(self, scope: CursorScope, position: Sequence[Any]) -> str:
        """The cursor of ``position`` in ``scope``. Raises :class:`FilterError` when a
        position value is no JSON scalar, or the cursor would pass :data:`MAX_CURSOR_CHARS`
        (a sort value of several KB)."""
        if not position or not all(_is_scalar(v) for v in position):
            raise FilterError("cursor", f"a cursor position holds JSON scalars only, got {list(position)!r:.200}")
        body = {"d": scope.dataset, "s": scope.sort, "f": scope.filter_digest, "p": list(position)}
        payload = orjson.dumps(body)
        token = f"{VERSION}.{_b64(payload)}.{_b64(self._mac(self._keys[0], scope.tenant, payload))}"
        if len(token) > MAX_CURSOR_CHARS:
            raise FilterError(
                "cursor",
                f"dataset {scope.dataset!r}: sort {scope.sort!r}: a sort value too long for a cursor"
                f" ({len(token)} characters, limit {MAX_CURSOR_CHARS}); sort by key or a shorter field",
                limit=MAX_CURSOR_CHARS,
            )
        return token

    def decode(self, token: str, scope: CursorScope) -> tuple[Any, ...]:
        """The position of a cursor issued by :meth:`encode` for ``scope``; raises
        :class:`FilterError` for anything else, saying which binding failed."""
        if not isinstance(token, str) or len(token) > MAX_CURSOR_CHARS:
            raise FilterError("cursor", f"cursor is longer than {MAX_CURSOR_CHARS} characters", limit=MAX_CURSOR_CHARS)
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise FilterError("cursor", "cursor is not one this platform issued (expected '1.<payload>.<signature>')")
        try:
            payload, mac = _unb64(parts[1]), _unb64(parts[2])
        except (binascii.Error, ValueError):
            raise _forged() from None
        if not any(hmac.compare_digest(mac, self._mac(key, scope.tenant, payload)) for key in self._keys):
            raise _forged()
        body = orjson.loads(payload)  # signed by us: well-formed
        bindings = (("d", scope.dataset, "dataset"), ("s", scope.sort, "sort"), ("f", scope.filter_digest, "filter"))
        for field, want, name in bindings:
            if body.get(field) != want:
                what = "another filter than this request's" if field == "f" else f"{name} {body.get(field)!r}"
                now = "" if field == "f" else f", not {want!r}"
                raise FilterError(
                    "cursor",
                    f"cursor was issued for {what}{now}: send the same {name} as the request that gave"
                    " the cursor, or start again without one",
                    binding=name,
                )
        return tuple(body["p"])
