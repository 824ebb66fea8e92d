"""A tenant's bundle: the profile plus exactly the files it declares, copied whole or not at all.

``tenant add/update --profile FILE`` used to copy the whole directory holding FILE; with the
platform home inside that directory it copied the home into itself until the disk was full.
Now the bundle is the profile, the apps' entry points (the ``{bundle}/…`` parts of their
commands) and the profile's ``bundle_files`` globs, all relative to the profile's directory.
Every declared file is checked before anything is copied:

- it lies inside the profile's directory (no ``..``, no absolute path);
- a symlink points inside it too (it is copied as the file it points to);
- it is not the platform home, nor inside it, nor holds it;
- the whole bundle stays under ``MYSIMBDP_BUNDLE_MAX_BYTES``.

The bundle is built in a hidden directory beside the tenant's and renamed into place, so a
refusal or a crash leaves the old bundle (or none) untouched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mysimbdp.domain.profile import Profile
from mysimbdp.errors import TenantError

__all__ = ["declared_files", "install_bundle"]


def declared_files(tenant: str, profile: Profile, profile_path: Path, home: Path, max_bytes: int) -> list[Path]:
    """The files of the bundle, relative to the profile's directory, each checked (see the
    module's docstring); raises :class:`TenantError` naming the tenant, the file and the rule."""
    root = profile_path.resolve().parent
    home = home.resolve()
    found: dict[Path, None] = {}
    for name in profile.entry_points():
        path = root / name
        if not path.is_file():
            raise TenantError(
                f"tenant {tenant!r}: app entry point {name!r} is not a file in {root}; put it beside the profile"
            )
        found[path] = None
    for pattern in profile.bundle_files:
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise TenantError(
                f"tenant {tenant!r}: bundle_files {pattern!r}: must be a glob relative to the profile's directory"
            )
        matches = sorted(root.glob(pattern))
        if not matches:
            raise TenantError(f"tenant {tenant!r}: bundle_files {pattern!r} matches nothing in {root}")
        for match in matches:
            for path in [match] if not match.is_dir() or match.is_symlink() else sorted(match.rglob("*")):
                if not path.is_dir():
                    found[path] = None
    total = 0
    for path in found:
        _check(tenant, path, root, home)
        total += path.stat().st_size
        if total > max_bytes:
            raise TenantError(
                f"tenant {tenant!r}: the bundle is over {max_bytes} bytes (MYSIMBDP_BUNDLE_MAX_BYTES) at "
                f"{path.relative_to(root)}; declare fewer files in bundle_files"
            )
    return [path.relative_to(root) for path in found]


def _check(tenant: str, path: Path, root: Path, home: Path) -> None:
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    real = path.resolve()
    if not real.is_relative_to(root):
        rule = "is a symlink pointing outside" if path.is_symlink() else "lies outside"
        raise TenantError(f"tenant {tenant!r}: bundle file {str(shown)!r} {rule} the profile's directory ({real})")
    if real.is_relative_to(home) or home.is_relative_to(real):
        raise TenantError(
            f"tenant {tenant!r}: bundle file {str(shown)!r} is inside the platform home {home}; "
            "a bundle never holds the home: move the home out of the profile's directory or narrow bundle_files"
        )


def install_bundle(
    tenant: str, profile: Profile, profile_path: Path, profile_yaml: str, target: Path, home: Path, max_bytes: int
) -> None:
    """Replace ``target`` with the bundle of ``profile`` (checked first; one rename)."""
    files = declared_files(tenant, profile, profile_path, home, max_bytes)
    root = profile_path.resolve().parent
    staged, old = target.with_name(f".{target.name}.new"), target.with_name(f".{target.name}.old")
    for leftover in (staged, old):
        shutil.rmtree(leftover, ignore_errors=True)
    staged.mkdir(parents=True, mode=0o755)
    try:
        for rel in files:
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, staged / rel)  # follows a symlink: the bundle holds the file itself
        (staged / "profile.yaml").write_text(profile_yaml, encoding="utf-8")
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    if target.exists():
        target.rename(old)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)
