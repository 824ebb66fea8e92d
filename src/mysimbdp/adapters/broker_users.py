"""A broker user per tenant: who gets which URL, and where the passwords are kept.

With the embedded NATS server (:mod:`broker_auth`) and with RabbitMQ
(:mod:`broker_users_rabbitmq`) the platform makes each tenant a broker user that can reach
only the tenant's own streams; its stream apps get that user's URL, never the platform's.
An external NATS server keeps its own users (:func:`tenant_users` is None): the operator
makes them, and the apps get the platform's URL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from mysimbdp.settings import Settings


class TenantUsers(Protocol):
    def tenant_url(self, tenant: str) -> str | None:
        """The broker URL with ``tenant``'s own user, or None when it has none yet."""
        ...

    def add_tenant(self, tenant: str) -> str:
        """Make ``tenant``'s user (idempotent); its URL."""
        ...

    def remove_tenant(self, tenant: str) -> None: ...


def tenant_users(settings: Settings) -> TenantUsers | None:
    """The tenants' broker users for this platform's broker; None for an external NATS."""
    broker_dir = settings.home / "broker"
    if not settings.broker_url:
        from mysimbdp.adapters.broker_auth import BrokerUsers

        return BrokerUsers(broker_dir)
    if urlsplit(settings.broker_url).scheme in ("amqp", "amqps"):
        from mysimbdp.adapters.broker_users_rabbitmq import RabbitUsers

        return RabbitUsers(settings.broker_url, broker_dir, settings.broker_admin_url)
    return None


class SecretFile:
    """``{"tenants": {tenant id: password}, ...}``; the other keys are the owner's, made by
    ``defaults`` when the file is first written."""

    def __init__(self, path: Path, defaults: Callable[[], dict[str, object]] = dict) -> None:
        self.path = path
        self._defaults = defaults

    def load(self) -> dict[str, object]:
        if self.path.exists():
            data: dict[str, object] = json.loads(self.path.read_text())
            return data
        data = {**self._defaults(), "tenants": {}}
        self.save(data)
        return data

    def save(self, data: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.chmod(0o600)
        os.replace(tmp, self.path)

    def tenants(self) -> dict[str, str]:
        return _tenants(self.load())

    def set_tenant(self, tenant: str, password: str) -> None:
        data = self.load()
        _tenants(data)[tenant] = password
        self.save(data)

    def remove_tenant(self, tenant: str) -> bool:
        """Forget ``tenant``'s password; False when it had none."""
        data = self.load()
        if _tenants(data).pop(tenant, None) is None:
            return False
        self.save(data)
        return True


def _tenants(data: dict[str, object]) -> dict[str, str]:
    tenants = data["tenants"]
    assert isinstance(tenants, dict)
    return tenants
