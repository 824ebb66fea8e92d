"""Who may do what on the embedded broker: one platform user, one user per tenant.

The embedded ``nats-server`` runs with an ``authorization`` block rendered from
``HOME/broker/users.json`` (mode 0600, the passwords sealed: :mod:`secretbox`), holding
only bcrypt hashes of the passwords: the platform's user may do everything; a tenant's
user may publish only under ``mysimbdp.<tenant>.>``, use the JetStream API of its own
stream ``MYSIMBDP_<tenant>`` only (pull, ack, consumer info), and receive only on its own
inbox prefix ``_INBOX_<tenant>``. So a tenant's credentials, given to its stream apps and
to its producers (``tenant add --json``), can neither write to nor read from another
tenant's streams. A tenant added while the server runs is live after a config reload
(SIGHUP to the pid in ``HOME/broker/nats.pid``).

An external broker (``MYSIMBDP_BROKER_URL``, e.g. a NATS cluster) keeps its own users; the
operator creates them, with these permissions: :func:`authorization` renders the same block
for a config of theirs (the cluster of ``tests/clusters/nats.py`` uses it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import bcrypt

from mysimbdp.adapters.broker.base import PREFIX, SecretFile
from mysimbdp.adapters.broker.nats.names import inbox_prefix, stream_name, tenant_user
from mysimbdp.adapters.broker.nats.server import free_port
from mysimbdp.adapters.secretbox import SecretBox

PLATFORM_USER = "mysimbdp"
# bcrypt's cost for the hashes in nats.conf. nats-server checks a hash on every connection, so
# the cost is paid per connect; the passwords are 24 random bytes (192 bits) from `secrets`,
# which no cost factor makes stronger or weaker: the hash is there so that the config holds
# no password, and a low cost keeps connecting fast.
BCRYPT_COST = 6


@functools.lru_cache(maxsize=4096)
def _hashed(password: str) -> str:
    """``password``'s bcrypt hash in the form nats-server knows (``$2a$``); the same hash
    for the same password in one process, so a config written again changes only where a
    user changed."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_COST, prefix=b"2a")).decode()


class NatsUsers:
    """``HOME/broker/users.json``: the platform's password, the tenants', the port."""

    def __init__(self, broker_dir: Path, box: SecretBox | None = None) -> None:
        self.dir = broker_dir
        self.secrets = SecretFile(
            broker_dir / "users.json",
            lambda: {"platform": secrets.token_urlsafe(24), "port": free_port()},
            secrets=box,
            sealed=("platform",),
        )

    @property
    def port(self) -> int:
        return int(str(self.secrets.load()["port"]))

    def platform_url(self) -> str:
        data = self.secrets.load()
        return f"nats://{PLATFORM_USER}:{quote(str(data['platform']), safe='')}@127.0.0.1:{data['port']}"

    def tenant_url(self, tenant: str) -> str | None:
        data = self.secrets.load()  # once: every load reads the file and opens every password
        password = SecretFile.tenants_of(data).get(tenant)
        if password is None:
            return None
        user, port = tenant_user(tenant), data["port"]
        return f"nats://{user}:{quote(password, safe='')}@127.0.0.1:{port}?inbox={inbox_prefix(tenant)}"

    def add_tenant(self, tenant: str) -> str:
        """Give ``tenant`` a user (idempotent); reload a running server. Returns its URL."""
        if tenant not in self.secrets.tenants():
            self.secrets.set_tenant(tenant, secrets.token_urlsafe(24))
        self.write_config()
        self.reload()
        url = self.tenant_url(tenant)
        assert url is not None
        return url

    def remove_tenant(self, tenant: str) -> None:
        if self.secrets.remove_tenant(tenant):
            self.write_config()
            self.reload()

    def write_config(self) -> Path:
        """Render ``nats.conf`` (the authorization block) from the users."""
        data = self.secrets.load()
        config = self.dir / "nats.conf"
        self.dir.mkdir(parents=True, exist_ok=True)
        config.write_text(authorization(str(data["platform"]), SecretFile.tenants_of(data)))
        config.chmod(0o600)
        return config

    def reload(self) -> None:
        """Ask a running embedded server to read its config again."""
        pid_file = self.dir / "nats.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)


def authorization(platform_password: str, tenants: Mapping[str, str]) -> str:
    """The ``authorization`` block of a ``nats-server`` config: the platform's user
    (:data:`PLATFORM_USER`) with ``platform_password``, and each tenant's user (``tenants``:
    tenant id -> password) with the permissions above. The embedded server's config; an
    operator running NATS themselves may render theirs with it (only bcrypt hashes in it)."""
    users = [
        f'    {{user: "{PLATFORM_USER}", password: "{_hashed(platform_password)}", '
        'permissions: {publish: ">", subscribe: ">"}}'
    ]
    for tenant, password in sorted(tenants.items()):
        js = stream_name(tenant)
        publish = [
            f"{PREFIX}.{tenant}.>",
            "$JS.API.INFO",
            f"$JS.API.STREAM.INFO.{js}",
            f"$JS.API.CONSUMER.*.{js}",
            f"$JS.API.CONSUMER.*.{js}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{js}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{js}.>",
            f"$JS.ACK.{js}.>",
        ]
        allow = ", ".join(f'"{subject}"' for subject in publish)
        users.append(
            f'    {{user: "{tenant_user(tenant)}", password: "{_hashed(password)}", permissions: '
            f'{{publish: {{allow: [{allow}]}}, subscribe: {{allow: ["{inbox_prefix(tenant)}.>"]}}}}}}'
        )
    return "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"


BrokerUsers = NatsUsers  # its former name, which the managers and the tests still use
