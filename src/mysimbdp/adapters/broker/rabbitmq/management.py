"""RabbitMQ's management HTTP API: how the platform makes and removes its tenants' users.

The ``rabbitmq_management`` plugin serves it, by default at ``http://<broker host>:15672``
with the broker URL's credentials (``MYSIMBDP_BROKER_ADMIN_URL`` overrides it); the user
must be a RabbitMQ ``administrator``. On a cluster every node serves the same API: a
comma-separated list of admin URLs (by default one per node of the broker URL) is tried in
turn, the next node when one does not answer.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

from mysimbdp.adapters.broker.base import split_urls
from mysimbdp.errors import BrokerError
from mysimbdp.settings import mask_url

MANAGEMENT_PORT = 15672
TIMEOUT_S = 10.0


def default_admin_url(broker_url: str) -> str:
    """``http://user:pw@host:15672`` from ``amqp://user:pw@host:port/vhost``; for a cluster's
    comma-separated nodes, one such URL per node, comma-separated."""
    admins = []
    for node in split_urls(broker_url) or [broker_url]:
        parts = urlsplit(node)
        userinfo = f"{parts.username or 'guest'}:{parts.password or 'guest'}@"
        admins.append(f"http://{userinfo}{parts.hostname or '127.0.0.1'}:{MANAGEMENT_PORT}")
    return ",".join(admins)


class ManagementApi:
    """RabbitMQ's management HTTP API at ``admin_url`` (``http://user:password@host:port``, or
    several comma-separated: the nodes of a cluster, tried in turn)."""

    def __init__(self, admin_url: str) -> None:
        self.url = admin_url
        self._nodes: list[tuple[str, str]] = []  # (base URL, Authorization header) per node
        for node in split_urls(admin_url) or [admin_url]:
            parts = urlsplit(node)
            if parts.scheme not in ("http", "https"):
                raise BrokerError(f"broker admin URL {mask_url(node)}: use http://user:password@host:15672")
            base = urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port or MANAGEMENT_PORT}", "", "", ""))
            credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            self._nodes.append((base, "Basic " + base64.b64encode(credentials.encode()).decode()))

    def call(self, method: str, path: str, body: object = None, *, who: str, missing_ok: bool = False) -> object:
        """``method path`` with a JSON ``body``; the decoded answer (None when empty), from the
        first node that answers. Errors name ``who`` asked (e.g. ``tenant 'acme'``), the call
        and the answer."""
        unreachable: BrokerError | None = None
        for base, auth in self._nodes:
            try:
                return self._call(base, auth, method, path, body, who=who, missing_ok=missing_ok)
            except BrokerError as exc:
                if not isinstance(exc.__cause__, urllib.error.HTTPError):  # the node did not answer: the next
                    unreachable = exc
                    continue
                raise
        assert unreachable is not None
        raise unreachable

    def _call(
        self, base: str, auth: str, method: str, path: str, body: object, *, who: str, missing_ok: bool
    ) -> object:
        request = urllib.request.Request(  # noqa: S310 (the scheme is http(s), checked in __init__)
            base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": auth, "Content-Type": "application/json"},
        )
        where = f"{who}: RabbitMQ management API {base}: {method} {path}"
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:  # noqa: S310 (as above)
                raw = answer.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and missing_ok:
                return None
            detail = exc.read().decode(errors="replace")[:200]
            hint = "; the broker URL's user must be a RabbitMQ administrator" if exc.code in (401, 403) else ""
            raise BrokerError(f"{where}: HTTP {exc.code} {detail}{hint}") from exc
        except (OSError, TimeoutError) as exc:
            raise BrokerError(
                f"{where}: unreachable ({exc}); enable the rabbitmq_management plugin "
                "or set MYSIMBDP_BROKER_ADMIN_URL=http://user:password@host:15672"
            ) from exc
