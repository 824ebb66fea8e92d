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

from mysimbdp.adapters.secretbox import SecretBox
from mysimbdp.settings import Settings


class TenantUsers(Protocol):
    def tenant_url(self, tenant: str) -> str | None:
        """The broker URL with ``tenant``'s own user, or None when it has none yet."""
        ...

    def add_tenant(self, tenant: str) -> str:
        """Make ``tenant``'s user (idempotent); its URL."""
        ...

    def remove_tenant(self, tenant: str) -> None: ...


def tenant_users(settings: Settings, secrets: SecretBox) -> TenantUsers | None:
    """The tenants' broker users for this platform's broker (their passwords sealed with
    ``secrets``); None for an external NATS."""
    broker_dir = settings.home / "broker"
    if not settings.broker_url:
        from mysimbdp.adapters.broker_auth import BrokerUsers

        return BrokerUsers(broker_dir, secrets)
    if urlsplit(settings.broker_url).scheme in ("amqp", "amqps"):
        from mysimbdp.adapters.broker_users_rabbitmq import RabbitUsers

        return RabbitUsers(settings.broker_url, broker_dir, settings.broker_admin_url, secrets)
    return None


class SecretFile:
    """``{"tenants": {tenant id: password}, ...}`` in a 0600 file; the other keys are the
    owner's, made by ``defaults`` when the file is first written. With ``secrets``, every
    tenant's password and each key in ``sealed`` are sealed on disk and opened when loaded
    (a file written before sealing is read as it is, and sealed when next saved)."""

    def __init__(
        self,
        path: Path,
        defaults: Callable[[], dict[str, object]] = dict,
        secrets: SecretBox | None = None,
        sealed: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        self._defaults = defaults
        self._secrets = secrets
        self._sealed = sealed

    def load(self) -> dict[str, object]:
        if not self.path.exists():
            data = {**self._defaults(), "tenants": {}}
            self.save(data)
            return data
        data = json.loads(self.path.read_text())
        if self._secrets is None:
            return dict(data)
        box, where = self._secrets, str(self.path)
        opened = {k: box.open(v, f"{where}: {k}") if k in self._sealed else v for k, v in data.items()}
        opened["tenants"] = {t: box.open(p, f"{where}: tenant {t!r}") for t, p in _tenants(data).items()}
        return opened

    def save(self, data: dict[str, object]) -> None:
        if self._secrets is not None:
            box = self._secrets
            data = {k: box.seal(str(v)) if k in self._sealed else v for k, v in data.items()}
            data["tenants"] = {t: box.seal(p) for t, p in _tenants(data).items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_CLOEXEC, 0o600)  # never readable by others
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(data, indent=2))
        os.chmod(tmp, 0o600)
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
