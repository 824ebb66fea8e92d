"""RabbitMQ's management HTTP API: how the platform makes and removes its tenants' users.

The ``rabbitmq_management`` plugin serves it, by default at ``http://<broker host>:15672``
with the broker URL's credentials (``MYSIMBDP_BROKER_ADMIN_URL`` overrides it); the user
must be a RabbitMQ ``administrator``.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

from mysimbdp.errors import BrokerError
from mysimbdp.settings import mask_url

MANAGEMENT_PORT = 15672
TIMEOUT_S = 10.0


def default_admin_url(broker_url: str) -> str:
    """``http://user:pw@host:15672`` from ``amqp://user:pw@host:port/vhost``."""
    parts = urlsplit(broker_url)
    userinfo = f"{parts.username or 'guest'}:{parts.password or 'guest'}@"
    return f"http://{userinfo}{parts.hostname or '127.0.0.1'}:{MANAGEMENT_PORT}"


class ManagementApi:
    """RabbitMQ's management HTTP API at ``admin_url`` (``http://user:password@host:port``)."""

    def __init__(self, admin_url: str) -> None:
        parts = urlsplit(admin_url)
        if parts.scheme not in ("http", "https"):
            raise BrokerError(f"broker admin URL {mask_url(admin_url)}: use http://user:password@host:15672")
        self.url = admin_url
        self._base = urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port or MANAGEMENT_PORT}", "", "", ""))
        credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        self._auth = "Basic " + base64.b64encode(credentials.encode()).decode()

    def call(self, method: str, path: str, body: object = None, *, who: str, missing_ok: bool = False) -> object:
        """``method path`` with a JSON ``body``; the decoded answer (None when empty).
        Errors name ``who`` asked (e.g. ``tenant 'acme'``), the call and the answer."""
        request = urllib.request.Request(  # noqa: S310 (the scheme is http(s), checked in __init__)
            self._base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": self._auth, "Content-Type": "application/json"},
        )
        where = f"{who}: RabbitMQ management API {mask_url(self.url)}: {method} {path}"
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
