"""mysimbdp-databroker: one asyncio interface over two real brokers.

``open_broker(url)`` (:mod:`mysimbdp.adapters.broker`) picks the backend by scheme, from the
one table :data:`BACKENDS`: ``nats://`` for NATS JetStream (:mod:`.nats`, also the embedded
default), ``amqp://`` for RabbitMQ (:mod:`.rabbitmq`). Both give the same guarantees:

- ``publish`` returns only once the broker confirmed every message durable (JetStream
  PubAck, RabbitMQ publisher confirm), with the confirms pipelined; a failure raises
  :class:`BrokerUnavailable` and the caller must answer "not accepted".
- A tenant's stream is one durable queue shared by all of the tenant's app instances that
  consume it under the same ``group`` (work-queue semantics: each message goes to one of
  them). A message not acked within ``ack_wait_s`` (its consumer died) is delivered again,
  with ``deliveries`` counting the attempts.
- ``backlog`` counts the messages not yet acked (waiting or in flight): what the monitor
  scales on.

Names: a stream ``S`` of tenant ``T`` is the subject / routing key / queue ``mysimbdp.T.S``.
Tenant ids are checked by :func:`mysimbdp.domain.naming.tenant_id_problem`; stream names
by :func:`stream_problem` (tenants' own by :func:`tenant_stream_problem`: the platform keeps
``mysimbdp*`` for itself, e.g. :data:`REPORTS_STREAM`).

This module is the backends' shared leaf: the ``Broker`` and ``TenantUsers`` ports, the
``Message`` value, the names, and the :class:`SecretFile` both backends keep their tenants'
passwords in. It imports no backend (kombu's ``transport/base.py``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urlsplit

from mysimbdp.domain.naming import tenant_id_problem
from mysimbdp.errors import BrokerError, TenantError

if TYPE_CHECKING:
    from mysimbdp.adapters.secretbox import SecretBox

PREFIX = "mysimbdp"
STREAM_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
DEFAULT_ACK_WAIT_S = 30.0
REPORTS_STREAM = f"{PREFIX}_reports"  # each tenant's instance reports to the monitor
CHUNKS_STREAM = f"{PREFIX}_chunks"  # tasks of a tenant's big files for the chunk workers

# The one URL scheme -> backend table (kombu's ``TRANSPORT_ALIASES``): the dotted name of the
# backend package serving each scheme, imported only when a broker of that kind is opened
# (:mod:`mysimbdp.adapters.broker`); ``Settings`` checks ``MYSIMBDP_BROKER_URL`` against it.
BACKENDS: Final[Mapping[str, str]] = {
    "nats": "mysimbdp.adapters.broker.nats",
    "tls": "mysimbdp.adapters.broker.nats",
    "amqp": "mysimbdp.adapters.broker.rabbitmq",
    "amqps": "mysimbdp.adapters.broker.rabbitmq",
}
EMBEDDED_SCHEME = "nats"  # the backend of an empty broker URL: the embedded NATS server


def split_urls(url: str) -> list[str]:
    """The nodes of a broker URL, one complete URL each: a cluster is listed with commas,
    ``nats://u:p@h1:4222,nats://u:p@h2:4222``, or shorter ``nats://u:p@h1:4222,h2:4222`` (an
    item without a scheme takes the previous item's scheme and user). One URL: ``[url]``."""
    out: list[str] = []
    for item in (part.strip() for part in url.split(",")):
        if not item:
            continue
        if "://" not in item and out:
            before = urlsplit(out[-1])
            user = before.netloc.rpartition("@")[0]
            item = f"{before.scheme}://{user + '@' if user else ''}{item}"
        out.append(item)
    return out


def stream_problem(stream: str) -> str | None:
    """Why ``stream`` is no valid stream name, or None."""
    if STREAM_RE.fullmatch(stream):
        return None
    return (
        f"stream name {stream!r} is not valid: use 1-63 characters, lower-case letters, digits and '_', "
        "starting with a letter"
    )


def tenant_stream_problem(stream: str) -> str | None:
    """:func:`stream_problem`, plus: names starting with ``mysimbdp`` are the platform's."""
    if stream.startswith(PREFIX):
        return f"stream name {stream!r} is reserved: names starting with {PREFIX!r} belong to the platform"
    return stream_problem(stream)


def subject(tenant: str, stream: str) -> str:
    """``mysimbdp.<tenant>.<stream>``, after checking both names."""
    if problem := tenant_id_problem(tenant):
        raise TenantError(problem)
    if problem := stream_problem(stream):
        raise BrokerError(problem)
    return f"{PREFIX}.{tenant}.{stream}"


@dataclass(eq=False)
class Message:
    """One delivered message: its body, how many times it has been delivered (1 the first
    time), the id it was published with, the backend's handle for ack/nak, and when the
    broker took it (epoch s; None when the broker does not say)."""

    body: bytes
    deliveries: int
    msg_id: str | None = None
    handle: Any = field(default=None, repr=False)
    published_at: float | None = None


class Broker(Protocol):
    """A connection to the broker; one per process, used from one event loop."""

    url: str

    async def connect(self) -> None:
        """Connect (raises :class:`BrokerUnavailable`)."""
        ...

    async def close(self) -> None: ...

    async def declare(self, tenant: str, stream: str) -> None:
        """Create the tenant's stream durably if it does not exist (idempotent)."""
        ...

    async def publish(self, tenant: str, stream: str, bodies: Sequence[bytes], ids: Sequence[str]) -> None:
        """Publish ``bodies`` (``ids[i]`` is body i's message id, used by the broker to drop
        a re-publication where it can); return once all are confirmed durable."""
        ...

    async def pull(self, tenant: str, stream: str, group: str, *, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages, waiting at most ``timeout_s`` for the first; []
        when none came."""
        ...

    async def ack(self, messages: Sequence[Message]) -> None:
        """Done with these: never deliver them again."""
        ...

    async def nak(self, messages: Sequence[Message]) -> None:
        """Not done: deliver these again (to any consumer of the group)."""
        ...

    async def backlog(self, tenant: str, stream: str, group: str) -> int:
        """Messages of the stream not acked yet by ``group`` (waiting or being processed)."""
        ...

    async def delete(self, tenant: str, stream: str) -> None:
        """Drop the stream and every message in it (tenant removal, tests)."""
        ...


class TenantUsers(Protocol):
    """A broker user per tenant: its stream apps and producers get that user's URL, which
    reaches only the tenant's own streams, never the platform's."""

    def tenant_url(self, tenant: str) -> str | None:
        """The broker URL with ``tenant``'s own user, or None when it has none yet."""
        ...

    def add_tenant(self, tenant: str) -> str:
        """Make ``tenant``'s user (idempotent); its URL."""
        ...

    def remove_tenant(self, tenant: str) -> None: ...


class Backend(Protocol):
    """What a backend package of :data:`BACKENDS` offers (dlt's destination factory)."""

    def open_broker(self, url: str, *, ack_wait_s: float = DEFAULT_ACK_WAIT_S, replicas: int = 1) -> Broker:
        """The broker at ``url`` (one node, or a cluster: :func:`split_urls`), keeping each of
        the streams it creates on ``replicas`` nodes; does no IO."""
        ...

    def tenant_users(self, broker_url: str, broker_dir: Path, admin_url: str, secrets: SecretBox) -> TenantUsers | None:
        """The tenants' users of the broker at ``broker_url`` ("" = the embedded one), their
        passwords kept under ``broker_dir``; None when the broker keeps its own users."""
        ...


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

    @staticmethod
    def tenants_of(data: dict[str, object]) -> dict[str, str]:
        """The tenants' passwords in ``data`` (what :meth:`load` gave: one read, one decryption)."""
        return _tenants(data)

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
