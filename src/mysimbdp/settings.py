"""One Settings object, read once at the entry point and passed down.

Environment variables use the prefix ``MYSIMBDP_``; nothing below this module reads the
environment. ``mask_url`` hides the password of a URL in any message that shows one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import get_origin, get_type_hints
from urllib.parse import urlsplit, urlunsplit

from mysimbdp.adapters.broker.base import BACKENDS, split_urls
from mysimbdp.adapters.coredms import BACKENDS as STORE_BACKENDS
from mysimbdp.domain.egress import parse_allow_list
from mysimbdp.domain.naming import tenant_id_problem
from mysimbdp.errors import ConfigError

DEFAULT_HOME = "mysimbdp-home"


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``: the one of its user part and a
    libpq ``password=`` parameter; a multi-host netloc (``u:p@h1:5432,h2:5432``) keeps its hosts;
    a list of URLs (a broker cluster's ``nats://u:p@h1:4222,nats://u:p@h2:4222``) is masked item by item."""
    items = url.split(",")
    if any("://" in item for item in items[1:]):
        return ",".join(mask_url(item) for item in items)
    parts = urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    if "password=" in query:
        query = "&".join("password=***" if item.startswith("password=") else item for item in query.split("&"))
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _comma_list(raw: str) -> frozenset[str]:
    """A ``frozenset[str]`` variable: comma-separated, blanks around items ignored."""
    return frozenset(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one platform instance.

    ``meta_url`` and ``coredms_url`` are ``sqlite`` (the embedded default, files under
    ``home``) or ``postgresql://user@host:port/db`` URLs.
    """

    home: Path
    meta_url: str = ""
    coredms_url: str = ""
    pg_prefix: str = "mysimbdp"
    max_workers: int = field(default_factory=lambda: max(2, os.cpu_count() or 2))
    poll_interval_s: float = 1.0
    settle_s: float = 1.0
    lease_ttl_s: float = 15.0
    retry_base_s: float = 1.0
    max_attempts: int = 4
    store_timeout_s: float = 30.0  # how long an app waits for a busy or unreachable store
    app_parallelism: int = field(default_factory=lambda: os.cpu_count() or 1)  # processes per large file
    app_part_min_bytes: int = 16 * 1024 * 1024  # the smallest span of a file worth one of those processes
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # chunk-task slots `up` runs itself (0: none)
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    broker_url: str = ""  # "" = the embedded NATS server; nats://host:port or amqp://user:pw@host/vhost
    broker_admin_url: str = ""  # RabbitMQ's management API; "" = http://<broker user:pw@host>:15672
    # copies of each stream the broker keeps: JetStream stream replicas, RabbitMQ quorum-queue members
    # (1: one node, the default; 3 on a 3-node cluster loses nothing when one node dies)
    broker_replicas: int = 1
    api_host: str = "127.0.0.1"
    api_port: int = 8731
    # TLS for the API (`up --tls-cert/--tls-key`): PEM files; both or neither ("": plain http)
    api_tls_cert: str = ""
    api_tls_key: str = ""
    admin_key: str = field(default="", repr=False)  # the operator API's bearer key; "" = operator API off
    # the Fernet key(s) sealing platform secrets at rest (adapters/secretbox.py): comma-separated, the first
    # seals; "" = the key file below
    secret_key: str = field(default="", repr=False)
    secret_key_file: str = ""  # "" = $XDG_CONFIG_HOME/mysimbdp/secret.key (else ~/.config/...), made on first use
    notify_retry_base_s: float = 1.0  # a failed webhook delivery is retried after 1 s, 2 s, 4 s … (at most 300 s)
    notify_max_attempts: int = 10  # then the delivery is recorded dead
    notify_timeout_s: float = 10.0  # one webhook attempt, end to end
    webhook_allow: str = ""  # networks (127.0.0.1/32,...) webhooks may reach though not public; "" = public only
    sandbox: str = "on"  # on: tenant apps run confined (Landlock + seccomp), or not at all; off: unconfined, warned
    # tenants whose apps may ask for `network: any` (MYSIMBDP_APP_NETWORK_ANY=t1,t2); others' are refused
    app_network_any: frozenset[str] = frozenset()
    bundle_max_bytes: int = 64 * 1024 * 1024  # largest tenant bundle `tenant add/update` copies (all its files)
    sandbox_landlock_abi: int = -1  # -1: ask the kernel; a lower number acts as an older kernel (0: none)
    # A file's scan (format, header, quality counts) runs in a process of its own under these limits;
    # over either, the file is rejected (rules scan.timeout, scan.out_of_memory), never retried.
    scan_timeout_s: float = 300.0  # wall clock of one scan (its CPU limit follows it)
    scan_memory_bytes: int = 1024**3  # address space of one scan (RLIMIT_AS)
    # HTTP uploads (POST /v1/files, tus /v1/uploads/): a body that sends nothing for upload_idle_timeout_s is
    # answered 408 and nothing is kept; an unfinished tus upload is removed upload_expire_s after its creation
    upload_idle_timeout_s: float = 30.0
    upload_expire_s: float = 86_400.0

    def __post_init__(self) -> None:
        home = self.home.resolve()
        object.__setattr__(self, "home", home)
        if not self.meta_url:
            object.__setattr__(self, "meta_url", f"sqlite:///{home / 'meta.db'}")
        if not self.coredms_url:
            object.__setattr__(self, "coredms_url", f"sqlite:///{home / 'coredms'}")
        for name in ("meta_url", "coredms_url"):
            scheme = urlsplit(getattr(self, name)).scheme
            if scheme not in STORE_BACKENDS:  # the meta store speaks the same two: SQLite, PostgreSQL
                raise ConfigError(
                    f"{name}: scheme {scheme!r} is not supported; use sqlite:///PATH or postgresql://user@host:port/db"
                )
        # a cluster's nodes are listed with commas (broker.base.split_urls), all of one backend
        schemes = {urlsplit(node).scheme for node in split_urls(self.broker_url)}
        unknown = sorted(schemes - set(BACKENDS))
        if self.broker_url and (unknown or len({BACKENDS[scheme] for scheme in schemes}) != 1):
            why = f"scheme {', '.join(unknown)} is not supported" if unknown else "its nodes mix two backends"
            raise ConfigError(
                f"MYSIMBDP_BROKER_URL={mask_url(self.broker_url)!r}: {why}; use nats://host:port (a cluster: "
                "nats://h1:4222,nats://h2:4222,...) or amqp://user:password@host:port/vhost (or leave it empty: "
                "embedded NATS)"
            )
        parse_allow_list(self.webhook_allow)  # ConfigError at start, not at the first delivery
        if self.sandbox not in ("on", "off"):
            raise ConfigError(f"MYSIMBDP_SANDBOX={self.sandbox!r}: use on (the default) or off")
        if not 1 <= self.broker_replicas <= 5:
            raise ConfigError(
                f"MYSIMBDP_BROKER_REPLICAS={self.broker_replicas}: must be 1 to 5 (copies of each stream; default 1)"
            )
        if self.workers < 0:
            raise ConfigError(f"workers: must be 0 or more, got {self.workers}")
        if self.max_workers < 1:
            raise ConfigError(f"max_workers: must be at least 1, got {self.max_workers}")
        if self.scan_timeout_s <= 0 or self.scan_memory_bytes < 64 * 1024**2:
            raise ConfigError(
                f"MYSIMBDP_SCAN_TIMEOUT_S={self.scan_timeout_s}, MYSIMBDP_SCAN_MEMORY_BYTES="
                f"{self.scan_memory_bytes}: the timeout must be above 0 s, the memory at least 67108864 (64 MiB)"
            )
        if bad := sorted(problem for t in self.app_network_any if (problem := tenant_id_problem(t))):
            raise ConfigError(f"MYSIMBDP_APP_NETWORK_ANY: {'; '.join(bad)}; list tenant ids separated by commas")
        if self.bundle_max_bytes < 1024:
            raise ConfigError(
                f"MYSIMBDP_BUNDLE_MAX_BYTES={self.bundle_max_bytes}: must be at least 1024 (bytes; default 67108864)"
            )
        if self.upload_idle_timeout_s <= 0 or self.upload_expire_s <= 0:
            raise ConfigError(
                f"MYSIMBDP_UPLOAD_IDLE_TIMEOUT_S={self.upload_idle_timeout_s}, MYSIMBDP_UPLOAD_EXPIRE_S="
                f"{self.upload_expire_s}: both must be above 0 (seconds; defaults 30 and 86400)"
            )
        if bool(self.api_tls_cert) != bool(self.api_tls_key):
            raise ConfigError(
                f"MYSIMBDP_API_TLS_CERT={self.api_tls_cert!r}, MYSIMBDP_API_TLS_KEY={self.api_tls_key!r}: give both "
                "the certificate and its key (up --tls-cert FILE --tls-key FILE), or neither for plain http"
            )
        if self.notify_max_attempts < 1:
            raise ConfigError(f"notify_max_attempts: must be at least 1, got {self.notify_max_attempts}")
        if self.notify_retry_base_s <= 0 or self.notify_timeout_s <= 0:
            raise ConfigError(
                f"notify_retry_base_s and notify_timeout_s: must be above 0, got "
                f"{self.notify_retry_base_s} and {self.notify_timeout_s}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: object) -> Settings:
        """Build settings from ``MYSIMBDP_*`` variables; explicit ``overrides`` win."""
        values: dict[str, object] = {}
        # Every field is a variable, typed as the field is (derived, so a new field needs no entry).
        hints = get_type_hints(cls)
        spec: dict[str, type] = {f.name: hints[f.name] for f in fields(cls)}
        for name, kind in spec.items():
            raw = env.get(f"MYSIMBDP_{name.upper()}")
            if raw is None or raw == "":
                continue
            try:
                values[name] = _comma_list(raw) if get_origin(kind) is frozenset else kind(raw)
            except ValueError as exc:
                raise ConfigError(f"MYSIMBDP_{name.upper()}={raw!r}: not a valid {kind.__name__}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        values.setdefault("home", Path(DEFAULT_HOME))
        return cls(**values)  # type: ignore[arg-type]
