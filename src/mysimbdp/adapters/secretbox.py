"""Platform secrets at rest: sealed with Fernet, under a key that lives outside the home.

What is sealed: the tenants' broker passwords and the embedded broker's own password
(``HOME/broker/users.json``, ``rabbitmq-users.json``, the ``url`` file), the tenants'
PostgreSQL role passwords (the meta store's ``tenants.coredms_url``) and the webhook secrets
of stored profiles (the meta store's ``profile_yaml`` and the bundle's ``profile.yaml``). Each
is needed again in plain (to connect, to sign), so it is encrypted, not hashed; the embedded
broker's config holds bcrypt hashes only (:mod:`mysimbdp.adapters.broker.nats.users`). API keys are
sha256 hashes (:mod:`mysimbdp.services.tenants`).

Fernet (``cryptography``, the Python Cryptographic Authority's package): AES-128-CBC with an
HMAC-SHA256 over each token, a timestamp, one well-reviewed API; :class:`MultiFernet` gives key
rotation (the first key seals, every key opens). A sealed value reads ``fernet:<token>``; a
value without the prefix (written before sealing existed) is read as it is and sealed the
next time it is written.

The key, first found of:

1. ``MYSIMBDP_SECRET_KEY``: one or more Fernet keys, comma-separated (the first seals);
2. the file ``MYSIMBDP_SECRET_KEY_FILE``;
3. ``$XDG_CONFIG_HOME/mysimbdp/secret.key`` (else ``~/.config/...``), made on first use with
   mode 0600 in a 0700 directory.

A key file inside the platform home, or inside a directory every tenant app may read (the
runtime), is refused: apps never reach it (``docs/architecture.md``, "Sandbox"). Every node
of a multi-host platform needs the same key (give them ``MYSIMBDP_SECRET_KEY``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mysimbdp.domain.notifications import SEALED_PREFIX
from mysimbdp.errors import ConfigError

__all__ = ["SEALED_PREFIX", "SecretBox", "default_key_file", "is_sealed"]


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED_PREFIX)


def default_key_file(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/mysimbdp/secret.key``, else ``$HOME/.config/mysimbdp/secret.key``."""
    config = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(config) / "mysimbdp" / "secret.key"


class SecretBox:
    """Seals and opens platform secrets; reads its key on first use (``Platform`` does no IO
    when it is made).

    ``keys``: the value of ``MYSIMBDP_SECRET_KEY`` ("" for none); ``key_file``: where the key is
    read from (made when missing and ``keys`` is ""); ``forbidden``: directories the key file
    must not lie in (the home, the runtime every app may read)."""

    def __init__(self, keys: str, key_file: Path, forbidden: Callable[[], list[Path]] = list) -> None:
        self._keys = keys
        self.key_file = key_file
        self._forbidden = forbidden
        self._fernet: MultiFernet | None = None
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        """Where the key comes from, for ``doctor`` and the logs (never the key)."""
        return "MYSIMBDP_SECRET_KEY" if self._keys else str(self.key_file)

    def seal(self, plain: str) -> str:
        """``plain`` encrypted: ``fernet:<token>``. A sealed value is returned as it is."""
        if is_sealed(plain):
            return plain
        return SEALED_PREFIX + self._multi().encrypt(plain.encode()).decode("ascii")

    def open(self, value: str, what: str) -> str:
        """The plain text of ``value`` (a value that is not sealed is returned as it is);
        ``what`` names the secret in the error when no key opens it."""
        if not is_sealed(value):
            return value
        try:
            return self._multi().decrypt(value[len(SEALED_PREFIX) :].encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise ConfigError(
                f"{what}: sealed with a key that is not among this platform's keys ({self.source}); "
                "give the key it was sealed with in MYSIMBDP_SECRET_KEY (comma-separated keys: the first seals, "
                "all open)"
            ) from exc

    def derived_keys(self, purpose: bytes) -> list[bytes]:
        """One key per platform key (the sealing one first), HMAC-SHA256-derived for
        ``purpose``, never a key itself: e.g. the read API's cursor signatures."""
        return [hmac.new(key, purpose, hashlib.sha256).digest() for key in self._load_keys()]

    def _multi(self) -> MultiFernet:
        with self._lock:
            if self._fernet is None:
                self._fernet = MultiFernet([Fernet(key) for key in self._load_keys()])
            return self._fernet

    def _load_keys(self) -> list[bytes]:
        if self._keys:
            return [_checked(key.strip().encode(), "MYSIMBDP_SECRET_KEY") for key in self._keys.split(",") if key]
        path = self.key_file.absolute()
        for directory in self._forbidden():
            if path.resolve().is_relative_to(directory.resolve()):
                raise ConfigError(
                    f"MYSIMBDP_SECRET_KEY_FILE={path}: lies inside {directory}, which tenant apps or the home's "
                    "readers may reach; keep the key outside the home and the runtime (default "
                    "~/.config/mysimbdp/secret.key)"
                )
        if not path.exists():
            _make_key_file(path)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                f"MYSIMBDP_SECRET_KEY_FILE={path}: mode {mode:04o} lets others read the key; chmod 600 {path}"
            )
        keys = [line.strip().encode() for line in path.read_text().splitlines() if line.strip()]
        if not keys:
            raise ConfigError(f"MYSIMBDP_SECRET_KEY_FILE={path}: holds no key; remove it to have one made")
        return [_checked(key, f"MYSIMBDP_SECRET_KEY_FILE={path}") for key in keys]


def _checked(key: bytes, where: str) -> bytes:
    try:
        Fernet(key)
    except ValueError as exc:
        raise ConfigError(
            f"{where}: not a Fernet key (32 url-safe base64-encoded bytes); make one with "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        ) from exc
    return key


def _make_key_file(path: Path) -> None:
    """A new key at ``path`` (0600, directory 0700), made whole under another name and linked
    into place: of processes starting at once, one key wins and all read it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    building = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(building, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, Fernet.generate_key() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(building, path)
    except FileExistsError:
        pass  # another process made it first: its key is the key
    finally:
        building.unlink()
