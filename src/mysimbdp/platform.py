"""The composition root: the one place that chooses and wires the backends.

``Platform(settings, env)`` does no IO; ``start()`` opens the meta store and the coredms
admin connection, ``close()`` releases them. Everything else receives a ``Platform``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

from mysimbdp.adapters.coredms import CoreDmsAdmin, open_admin
from mysimbdp.adapters.filesystem import Home
from mysimbdp.adapters.metastore import MetaStore
from mysimbdp.domain.profile import Profile, parse_profile
from mysimbdp.domain.records import TenantRecord
from mysimbdp.errors import ConfigError
from mysimbdp.settings import Settings


class Platform:
    def __init__(self, settings: Settings, env: Mapping[str, str]) -> None:
        self.settings = settings
        self.env = dict(env)  # the parent environment: only the runner's allow-list reaches apps
        self.home = Home(settings.home)
        self.meta = MetaStore(settings.meta_url)
        self._admin: CoreDmsAdmin | None = None
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

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        self.meta.close()
        self._started = False

    def __enter__(self) -> Platform:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def running_broker_url(self) -> str:
        """The broker of the running platform, for another process (a worker, a replay):
        ``MYSIMBDP_BROKER_URL``, else the URL the embedded broker of ``mysimbdp up`` wrote
        to ``HOME/broker/url`` (mode 0600) while it runs."""
        if self.settings.broker_url:
            return self.settings.broker_url
        url_file = self.settings.home / "broker" / "url"
        try:
            return url_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"no broker: {url_file} is missing ({exc.strerror}); start `mysimbdp up` with this home first, "
                "or set MYSIMBDP_BROKER_URL"
            ) from exc

    def tenant(self, tenant_id: str) -> tuple[TenantRecord, Profile]:
        record = self.meta.get_tenant(tenant_id)
        return record, parse_profile(record.profile_yaml, f"{record.bundle_dir}/profile.yaml")
