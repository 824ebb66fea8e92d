"""The composition root: the one place that turns settings and URLs into backends (the meta
store, coredms, the broker clients, the sandbox, the secret box).

``Platform(settings, env)`` does no IO; ``start()`` opens the meta store and the coredms
admin connection, ``close()`` releases them. Everything else receives a ``Platform``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from mysimbdp.adapters.broker import Broker, TenantUsers, open_broker, tenant_users
from mysimbdp.adapters.coredms import CoreDmsAdmin, DocumentStore, open_admin, open_store
from mysimbdp.adapters.files.claims import ClaimOwner
from mysimbdp.adapters.files.home import Home
from mysimbdp.adapters.metastore import MetaStore
from mysimbdp.adapters.process.sandbox import Grant, Sandbox, Status, probe, readable_by_apps
from mysimbdp.adapters.secretbox import SecretBox, default_key_file
from mysimbdp.domain.cursor import CursorCodec, cursor_key
from mysimbdp.domain.profile import Profile, parse_profile
from mysimbdp.domain.records import TenantRecord
from mysimbdp.errors import ConfigError, SandboxUnavailable
from mysimbdp.logs import get_logger
from mysimbdp.settings import Settings

log = get_logger("platform")


class Platform:
    def __init__(self, settings: Settings, env: Mapping[str, str]) -> None:
        self.settings = settings
        self.env = dict(env)  # the parent environment: only the runner's allow-list reaches apps
        self.home = Home(settings.home)
        key_file = Path(settings.secret_key_file) if settings.secret_key_file else default_key_file(self.env)
        # the key may lie neither in the home nor where every app may read (the runtime)
        self.secrets = SecretBox(settings.secret_key, key_file, lambda: [settings.home, *readable_by_apps()])
        self.meta = MetaStore(settings.meta_url, self.secrets)
        self._admin: CoreDmsAdmin | None = None
        self._cursors: CursorCodec | None = None
        self._sandbox: Status | None = None
        self._claims: ClaimOwner | None = None
        self._claims_lock = threading.Lock()
        self._started = False

    def start(self) -> Platform:
        """Create the home and open the meta store (idempotent)."""
        if not self._started:
            self.settings.home.mkdir(parents=True, exist_ok=True)
            self.meta.start()
            self._started = True
        return self

    @property
    def coredms_admin(self) -> CoreDmsAdmin:
        """Opened on first use: only tenant management needs it."""
        if self._admin is None:
            self._admin = open_admin(self.settings.coredms_url, pg_prefix=self.settings.pg_prefix)
        return self._admin

    @property
    def sandbox_status(self) -> Status:
        """The sandbox tenant apps get here (probed once; ``MYSIMBDP_SANDBOX`` says on or off)."""
        if self._sandbox is None:
            abi = self.settings.sandbox_landlock_abi
            self._sandbox = probe(self.settings.sandbox, abi=None if abi < 0 else abi)
        return self._sandbox

    def require_sandbox(self) -> Status:
        """Log which sandbox tenant apps get; raise :class:`SandboxUnavailable` (naming the
        remedy) when apps could not run here. ``up``, ``worker``, ``demo`` and every command
        that runs an app itself call it before doing anything."""
        status = self.sandbox_status
        if status.enforced:
            log.info("sandbox", mechanism=status.mechanism, landlock_abi=status.landlock_abi)
        elif status.mode == "off":
            log.warning("sandbox_off", mechanism="none", warning=status.warning)
        else:
            raise SandboxUnavailable(status.warning)
        return status

    def sandbox(self, grant: Grant) -> Sandbox:
        """``grant`` under this machine's sandbox: what the runner confines one app with. An app
        asking for ``network: any`` of a tenant the operator no longer lists gets ``store``."""
        if grant.network == "any" and grant.tenant not in self.settings.app_network_any:
            log.warning("network_any_not_allowed", tenant=grant.tenant, given="store")
            grant = replace(grant, network="store")
        return Sandbox(self.sandbox_status, grant)

    @property
    def claim_owner(self) -> ClaimOwner:
        """This platform's owner id for the inbox files it claims, alive while it is open
        (made on first use; see :mod:`mysimbdp.adapters.files.claims`)."""
        with self._claims_lock:
            if self._claims is None:
                self._claims = ClaimOwner(self.home.claims_dir)
            return self._claims

    def close(self) -> None:
        with self._claims_lock:
            if self._claims is not None:
                self._claims.close()
                self._claims = None
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        self.meta.close()
        self._started = False

    def __enter__(self) -> Platform:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def broker(self, url: str, **options: float) -> Broker:
        """A client (not yet connected) of the broker at ``url``: the platform's own
        (:meth:`running_broker_url`, ``BrokerAccess.url``) or a tenant's user's."""
        return open_broker(url, replicas=self.settings.broker_replicas, **options)

    def broker_users(self) -> TenantUsers | None:
        """The tenants' users on this platform's broker (their passwords sealed); None for an
        external NATS, whose users the operator keeps."""
        return tenant_users(self.settings, self.secrets)

    def cursor_codec(self) -> CursorCodec:
        """The read API's cursor signer: its keys derived from the platform's secret keys
        (``MYSIMBDP_SECRET_KEY`` or the key file; the first signs, every one verifies, so a
        rotated key keeps cursors in flight valid)."""
        if self._cursors is None:
            self._cursors = CursorCodec([cursor_key(k) for k in self.secrets.derived_keys(b"mysimbdp cursors")])
        return self._cursors

    def tenant_store(self, tenant: TenantRecord) -> DocumentStore:
        """``tenant``'s own coredms namespace (on PostgreSQL, its own role), opened."""
        return open_store(tenant.coredms_url)

    def running_broker_url(self) -> str:
        """The broker of the running platform, for another process (a worker, a replay):
        ``MYSIMBDP_BROKER_URL``, else the URL the embedded broker of ``mysimbdp up`` wrote
        to ``HOME/broker/url`` (mode 0600, sealed) while it runs."""
        if self.settings.broker_url:
            return self.settings.broker_url
        url_file = self.settings.home / "broker" / "url"
        try:
            return self.secrets.open(url_file.read_text().strip(), str(url_file))
        except OSError as exc:
            raise ConfigError(
                f"no broker: {url_file} is missing ({exc.strerror}); start `mysimbdp up` with this home first, "
                "or set MYSIMBDP_BROKER_URL"
            ) from exc

    def tenant(self, tenant_id: str) -> tuple[TenantRecord, Profile]:
        record = self.meta.get_tenant(tenant_id)
        profile = parse_profile(record.profile_yaml, f"{record.bundle_dir}/profile.yaml")
        where = f"tenant {tenant_id!r}: webhook secret"
        return record, profile.with_secrets(lambda sealed: self.secrets.open(sealed, where))
