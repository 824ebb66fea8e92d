"""Tenant management: register (bundle, API key, coredms namespace), update, list, show, remove."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from mysimbdp.adapters.broker import PREFIX
from mysimbdp.adapters.broker.nats import inbox_prefix
from mysimbdp.adapters.broker.rabbitmq import exchange_name
from mysimbdp.domain.naming import tenant_id_problem
from mysimbdp.domain.profile import DEFAULT_PROFILE, Profile, dump_profile, load_profile
from mysimbdp.domain.records import TenantRecord
from mysimbdp.errors import ProfileError, TenantError
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.bundles import BundlePlan, install_bundle, plan_bundle

log = get_logger("tenants")


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class NewTenant:
    record: TenantRecord
    api_key: str  # shown once; only its hash is stored
    broker: dict[str, str] | None = None  # the tenant's own broker user (None: external NATS)


def broker_access(platform: Platform, tenant_id: str) -> dict[str, str] | None:
    """What a tenant's producers need to publish straight to the broker, with the tenant's
    own broker user; None for an external NATS (its users are the operator's)."""
    users = platform.broker_users()
    if users is None:
        return None
    url = users.tenant_url(tenant_id) or users.add_tenant(tenant_id)
    if platform.settings.broker_url:  # RabbitMQ
        return {
            "url": url,
            "exchange": exchange_name(tenant_id),
            "routing_key": f"{PREFIX}.{tenant_id}.<stream>",
            "note": "AMQP publish (aio-pika/pika) to this exchange with the stream's routing key, persistent, "
            "with publisher confirms; the stream must have been declared (first POST, or 'stream start'); "
            "this user can use only this tenant's exchange and queues",
        }
    return {
        "url": url,
        "subject": f"{PREFIX}.{tenant_id}.<stream>",
        "inbox_prefix": inbox_prefix(tenant_id),
        "note": "JetStream publish (nats-py: connect(url, inbox_prefix=...), js.publish(subject, ...)); "
        "this user can use only this tenant's subjects",
    }


def add_tenant(platform: Platform, tenant_id: str, profile_path: Path | None) -> NewTenant:
    """Register ``tenant_id``. With ``profile_path`` its bundle (the profile, its apps' entry
    points and its ``bundle_files``, :mod:`mysimbdp.services.bundles`) is checked, then copied
    into the platform home; without, the default profile. A refusal changes nothing."""
    if problem := tenant_id_problem(tenant_id):
        raise TenantError(problem)
    existing = {t.id for t in platform.meta.list_tenants()}
    if tenant_id in existing:
        raise TenantError(f"tenant {tenant_id!r} already exists; remove it first")
    profile = DEFAULT_PROFILE if profile_path is None else _load(tenant_id, profile_path)
    check_network(platform, tenant_id, profile)
    bundle = platform.home.bundle(tenant_id)
    profile_yaml = _stored(platform, profile)
    if profile_path is None:
        install_bundle(f"tenant {tenant_id!r}", BundlePlan(), profile_yaml, bundle, platform.settings.bundle_max_bytes)
    else:
        _install(platform, tenant_id, profile, profile_path, bundle)
    platform.home.ensure_tenant(tenant_id)
    coredms_url = platform.coredms_admin.provision(tenant_id)
    api_key = new_api_key()
    record = TenantRecord(tenant_id, time.time(), profile_yaml, str(bundle), coredms_url)
    platform.meta.add_tenant(record, hash_key(api_key))
    log.info("tenant_added", tenant=tenant_id, profile=str(profile_path or "default"))
    return NewTenant(record, api_key, broker_access(platform, tenant_id))


def update_tenant(platform: Platform, tenant_id: str, profile_path: Path) -> TenantRecord:
    """Give ``tenant_id`` a new profile and apps (a fixed app, a relaxed rule): the profile
    and its bundle are checked, then the new bundle replaces the old in one rename. Runs that
    started before keep the code they started with; the next run and the next stream app
    instance use the new bundle. The API key, data and history stay."""
    platform.meta.get_tenant(tenant_id)
    profile = _load(tenant_id, profile_path)
    check_network(platform, tenant_id, profile)
    _install(platform, tenant_id, profile, profile_path, platform.home.bundle(tenant_id))
    platform.meta.set_profile(tenant_id, _stored(platform, profile))
    log.info("tenant_updated", tenant=tenant_id, profile=str(profile_path))
    return platform.meta.get_tenant(tenant_id)


def _load(tenant_id: str, profile_path: Path) -> Profile:
    """The profile at ``profile_path``; a :class:`ProfileError` names the tenant too."""
    try:
        return load_profile(profile_path)
    except ProfileError as exc:
        raise ProfileError(f"{exc.path} (tenant {tenant_id!r})", exc.problems) from exc


@dataclass(frozen=True)
class RotatedKey:
    tenant: str
    api_key: str  # shown once; only its hash is stored
    old_keys_expire_at: float  # epoch seconds


MAX_GRACE_S = 30 * 86400.0  # a rotated-out key works at most 30 days more


def rotate_key(platform: Platform, tenant_id: str, grace_s: float) -> RotatedKey:
    """Issue ``tenant_id`` a new API key; its older keys keep working for ``grace_s`` seconds
    (for the tenant's clients to switch), then are refused."""
    if not 0 <= grace_s <= MAX_GRACE_S:
        raise TenantError(
            f"tenant {tenant_id!r}: key rotation grace {grace_s:g} s is outside 0 to {MAX_GRACE_S:g} s (30 days): "
            "give e.g. 1h, or 0 to refuse the old keys at once"
        )
    api_key = new_api_key()
    until = platform.meta.keys.rotate(tenant_id, hash_key(api_key), grace_s)
    log.info("tenant_key_rotated", tenant=tenant_id, grace_s=grace_s, old_keys_expire_at=until)
    return RotatedKey(tenant_id, api_key, until)


def new_api_key() -> str:
    return f"msb_{secrets.token_urlsafe(32)}"


def check_network(platform: Platform, tenant_id: str, profile: Profile) -> None:
    """Refuse a profile whose apps ask for ``network: any`` unless the operator lists the tenant
    in ``MYSIMBDP_APP_NETWORK_ANY``."""
    allowed = platform.settings.app_network_any
    if tenant_id in allowed or not (asking := profile.network_any_apps()):
        return
    listed = ", ".join(sorted(allowed)) or "no tenant"
    raise TenantError(
        f"tenant {tenant_id!r}: {' and '.join(asking)} {'asks' if len(asking) == 1 else 'ask'} for network: any, "
        f"which the operator has not allowed (MYSIMBDP_APP_NETWORK_ANY lists {listed}); use network: store "
        "(its store, and the broker for a stream app) or none, or ask the operator to list the tenant"
    )


def _install(platform: Platform, tenant_id: str, profile: Profile, profile_path: Path, bundle: Path) -> None:
    """Check ``profile``'s bundle, then install it as the tenant's (nothing copied on refusal)."""
    settings, who = platform.settings, f"tenant {tenant_id!r}"
    plan = plan_bundle(who, profile, profile_path, settings.home, settings.bundle_max_bytes)
    # the tenant's own file, comments and all; with webhooks, the stored form (their secrets sealed)
    text = _stored(platform, profile) if profile.notifications.webhooks else profile_path.read_text(encoding="utf-8")
    install_bundle(who, plan, text, bundle, settings.bundle_max_bytes)
    log.info("tenant_bundle_installed", tenant=tenant_id, files=len(plan.files), size_bytes=plan.size_bytes)


def _stored(platform: Platform, profile: Profile) -> str:
    """``profile`` as the meta store and the bundle keep it: its webhook secrets sealed."""
    return dump_profile(profile.with_secrets(platform.secrets.seal))


def remove_tenant(platform: Platform, tenant_id: str) -> None:
    """Remove the tenant, its key, its coredms namespace and its directories."""
    platform.meta.get_tenant(tenant_id)
    platform.coredms_admin.deprovision(tenant_id)
    platform.meta.remove_tenant(tenant_id)
    platform.home.remove_tenant_dirs(tenant_id)
    if (users := platform.broker_users()) is not None:
        users.remove_tenant(tenant_id)
    log.info("tenant_removed", tenant=tenant_id)
