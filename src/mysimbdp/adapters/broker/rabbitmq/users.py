"""A RabbitMQ user per tenant, made through the broker's management HTTP API.

Every resource of tenant ``T``'s streams is named ``mysimbdp.T`` or ``mysimbdp.T.<...>``
(:mod:`.client`), so the user ``mysimbdp.T`` gets configure, write and read permissions on
exactly ``^mysimbdp\\.T(\\..*)?$`` in the platform's vhost: it can declare, publish to and
consume its own exchange and queues, and is refused (``ACCESS_REFUSED``) on any other
tenant's, on the default exchange and on everything else. The platform's own user
(the one in ``MYSIMBDP_BROKER_URL``) must be a RabbitMQ ``administrator`` to manage users;
the API (:mod:`.management`) is at ``MYSIMBDP_BROKER_ADMIN_URL``, by default
``http://<broker host>:15672`` with the broker URL's credentials (the ``rabbitmq_management``
plugin). Passwords are kept in ``HOME/broker/rabbitmq-users.json`` (mode 0600), so the
platform can hand a tenant's URL to its stream apps and to ``tenant add --json``.

One platform per vhost: two platforms sharing a vhost would reset each other's tenant
passwords.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from mysimbdp.adapters.broker.base import PREFIX, SecretFile
from mysimbdp.adapters.broker.rabbitmq.management import ManagementApi, default_admin_url
from mysimbdp.adapters.broker.rabbitmq.nodes import node_urls
from mysimbdp.adapters.secretbox import SecretBox


def rabbit_user(tenant: str) -> str:
    return f"{PREFIX}.{tenant}"


def tenant_permission(tenant: str) -> str:
    """The regex of the resources ``tenant``'s user may configure, write and read."""
    return rf"^{PREFIX}\.{tenant}(\..*)?$"


class RabbitUsers:
    """The tenants' users on the RabbitMQ broker at ``broker_url`` (the platform's URL)."""

    def __init__(self, broker_url: str, broker_dir: Path, admin_url: str = "", box: SecretBox | None = None) -> None:
        self.broker_url = broker_url
        self.api = ManagementApi(admin_url or default_admin_url(broker_url))
        # the passwords are sealed with ``box``; RabbitMQ keeps only its own hash of each
        self.secrets = SecretFile(broker_dir / "rabbitmq-users.json", secrets=box)
        path = urlsplit(node_urls(broker_url)[0]).path
        self.vhost = unquote(path[1:]) if len(path) > 1 else "/"

    def tenant_url(self, tenant: str) -> str | None:
        """The broker URL with ``tenant``'s user, or None when it has none yet (a cluster's
        nodes: every one, comma-separated, so the tenant's clients move on when one dies)."""
        password = self.secrets.tenants().get(tenant)
        if password is None:
            return None
        userinfo = f"{quote(rabbit_user(tenant), safe='')}:{quote(password, safe='')}"
        nodes = []
        for node in node_urls(self.broker_url):
            parts = urlsplit(node)
            netloc = f"{userinfo}@{parts.hostname or '127.0.0.1'}"
            if parts.port:
                netloc += f":{parts.port}"
            nodes.append(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")))
        return ",".join(nodes)

    def add_tenant(self, tenant: str) -> str:
        """Create (or reset) ``tenant``'s user and its permissions; returns its URL."""
        password = self.secrets.tenants().get(tenant) or secrets.token_urlsafe(24)
        user, vhost, who = quote(rabbit_user(tenant), safe=""), quote(self.vhost, safe=""), f"tenant {tenant!r}"
        self.api.call("PUT", f"/api/users/{user}", {"password": password, "tags": ""}, who=who)
        rule = tenant_permission(tenant)
        permissions = {"configure": rule, "write": rule, "read": rule}
        self.api.call("PUT", f"/api/permissions/{vhost}/{user}", permissions, who=who)
        self.secrets.set_tenant(tenant, password)
        url = self.tenant_url(tenant)
        assert url is not None
        return url

    def remove_tenant(self, tenant: str) -> None:
        """Delete ``tenant``'s user (RabbitMQ closes its open connections)."""
        if self.secrets.tenants().get(tenant) is None:
            return
        user = quote(rabbit_user(tenant), safe="")
        self.api.call("DELETE", f"/api/users/{user}", who=f"tenant {tenant!r}", missing_ok=True)
        self.secrets.remove_tenant(tenant)
