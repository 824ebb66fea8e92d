"""A tenant's bundle: the profile plus exactly the files it declares, copied whole or not at all.

``tenant add/update --profile FILE`` used to copy the whole directory holding FILE; with the
platform home inside that directory it copied the home into itself until the disk was full.
Now the bundle is the profile, the apps' entry points (the ``{bundle}/…`` parts of their
commands) and the files the profile's ``bundle_files`` globs match, all relative to the
profile's directory (:mod:`mysimbdp.domain.bundle`). :func:`plan_bundle` walks only the
directories a glob can reach, never follows a symlinked directory, skips ``__pycache__``, and
checks every file before anything is copied. Its rules, named in every refusal:

- ``bundle.missing``: an entry point is not there, or a glob matches no file;
- ``bundle.outside``: a file resolves outside the profile's directory;
- ``bundle.symlink_outside``: a declared symlink points outside it (one pointing inside is
  copied as the file it points to);
- ``bundle.symlink_dir``: a declared symlink points to a directory (declare the directory);
- ``bundle.home``: the file, a directory a glob enters, or the profile's directory itself is
  the platform home or inside it;
- ``bundle.not_regular``: a FIFO, socket or device;
- ``bundle.unreadable``: a file or directory cannot be read;
- ``bundle.too_large``: the bundle is over ``MYSIMBDP_BUNDLE_MAX_BYTES``.

:func:`install_bundle` copies the plan into a hidden directory beside the tenant's (each file
opened without following links and counted again while copied) and swaps it in with one
atomic exchange, so a refusal or a crash leaves the old bundle (or none) untouched.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mysimbdp._libc import exchange_paths
from mysimbdp.domain.bundle import PROFILE_NAME, could_reach, glob_matches, glob_parts
from mysimbdp.domain.profile import Profile
from mysimbdp.errors import BundleRefused

__all__ = ["BundlePlan", "install_bundle", "plan_bundle"]

_MAX_SHOWN = 20  # problems listed in one refusal
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class BundlePlan:
    """What a bundle holds besides its profile: (name in the bundle, real source) pairs."""

    files: tuple[tuple[str, Path], ...] = ()
    size_bytes: int = 0  # the files' and the profile's


def plan_bundle(who: str, profile: Profile, profile_path: Path, home: Path, max_bytes: int) -> BundlePlan:
    """The files of ``profile``'s bundle, every one checked (see the module's docstring);
    raises :class:`BundleRefused` naming ``who``, each file, its rule and its value."""
    root = profile_path.absolute().parent.resolve()
    home = home.resolve()
    if root.is_relative_to(home):
        raise BundleRefused(
            who,
            [
                f"the profile's directory {root}: rule bundle.home: it lies inside the platform home {home}; "
                "copy the tenant's folder out of the home and give the profile there"
            ],
        )
    walk = _Walk(root, home, profile.bundle_files, len(profile_path.read_bytes()), max_bytes)
    for name in profile.entry_points():
        walk.take(name, root / name, f"entry point {name!r}")
    if profile.bundle_files:
        walk.enter(())
    if walk.size_bytes > max_bytes:  # the walk stopped there
        largest = sorted(walk.sizes.items(), key=lambda item: -item[1])[:3]
        shown = ", ".join(f"{name!r} {size_bytes} bytes" for name, size_bytes in largest)
        walk.problems.append(
            f"rule bundle.too_large: the bundle would be over MYSIMBDP_BUNDLE_MAX_BYTES={max_bytes} bytes "
            f"(at least {walk.size_bytes}; largest: {shown}); declare fewer files in bundle_files, or ask the "
            "operator to raise the limit"
        )
    else:
        walk.problems += [
            f"bundle_files {p!r}: rule bundle.missing: it matches no file in {root}; fix the glob or remove it"
            for p in profile.bundle_files
            if p not in walk.matched
        ]
    if walk.problems:
        more = len(walk.problems) - _MAX_SHOWN
        raise BundleRefused(who, walk.problems[:_MAX_SHOWN] + ([f"... and {more} more"] if more > 0 else []))
    return BundlePlan(tuple(walk.files.items()), walk.size_bytes)


@dataclass
class _Walk:
    """One walk of a profile's directory: the files taken and every problem met."""

    root: Path
    home: Path
    patterns: list[str]
    size_bytes: int  # so far, the profile's included
    max_bytes: int
    files: dict[str, Path] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    matched: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._globs = [(pattern, glob_parts(pattern)) for pattern in self.patterns]

    def enter(self, rel: tuple[str, ...]) -> None:
        """Take what the globs match in the directory ``rel``, and in those below it they reach."""
        try:
            entries = sorted(os.scandir(self.root.joinpath(*rel)), key=lambda entry: entry.name)
        except OSError as exc:
            self._refuse(
                f"directory {'/'.join(rel) or '.'!r}", "bundle.unreadable", str(exc.strerror), "fix its rights"
            )
            return
        for entry in entries:
            if self.size_bytes > self.max_bytes:
                return
            parts = (*rel, entry.name)
            name = "/".join(parts)
            # a glob matching the entry or a directory it lies in takes it
            taking = [p for p, g in self._globs if any(glob_matches(g, parts[:k]) for k in range(1, len(parts) + 1))]
            if entry.is_dir(follow_symlinks=False):
                reaching = taking or [p for p, g in self._globs if could_reach(g, parts)]
                if entry.name == "__pycache__" or not reaching:
                    continue
                if Path(entry.path) == self.home:
                    self.matched.update(reaching)
                    self._refuse(
                        f"directory {name!r} (bundle_files {reaching[0]!r})",
                        "bundle.home",
                        f"it is the platform home {self.home}",
                        "a bundle never holds the home: narrow the glob or move the home out of this directory",
                    )
                    continue
                self.enter(parts)
            elif taking and name != PROFILE_NAME:
                self.matched.update(taking)
                self.take(name, Path(entry.path), f"{name!r} (bundle_files {taking[0]!r})")

    def take(self, name: str, path: Path, label: str) -> None:
        """Check the declared file ``path`` and add it to the bundle as ``name``."""
        if name in self.files or name == PROFILE_NAME:
            return
        linked, real = path.is_symlink(), Path(os.path.realpath(path))
        if not real.is_relative_to(self.root):
            rule, what = ("bundle.symlink_outside", "it is a symlink to") if linked else ("bundle.outside", "it is")
            todo = "copy the file into the folder instead of linking it"
            return self._refuse(label, rule, f"{what} {real}, outside the profile's directory {self.root}", todo)
        if real.is_relative_to(self.home):
            todo = "a bundle never holds the home's files"
            return self._refuse(label, "bundle.home", f"it is {real}, inside the platform home {self.home}", todo)
        try:
            info = real.stat()
        except OSError as exc:
            rule = "bundle.missing" if isinstance(exc, FileNotFoundError) else "bundle.unreadable"
            return self._refuse(label, rule, f"{path}: {exc.strerror}", "put the file beside the profile")
        if stat.S_ISDIR(info.st_mode):
            rule = "bundle.symlink_dir" if linked else "bundle.not_regular"
            return self._refuse(label, rule, f"{real} is a directory", "declare its files (a glob) instead")
        if not stat.S_ISREG(info.st_mode):
            kind = stat.filemode(info.st_mode)
            return self._refuse(label, "bundle.not_regular", f"{real} is not a regular file ({kind})", "remove it")
        self.files[name] = real
        self.sizes[name] = info.st_size
        self.size_bytes += info.st_size

    def _refuse(self, label: str, rule: str, value: str, todo: str) -> None:
        self.problems.append(f"{label}: rule {rule}: {value}; {todo}")


def install_bundle(who: str, plan: BundlePlan, profile_yaml: str, target: Path, max_bytes: int) -> None:
    """Make ``target`` the bundle of ``plan`` plus ``profile_yaml`` as its profile, in one step:
    built beside it, then swapped in (the old bundle, if any, is removed after)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".new", dir=target.parent))
    try:
        staged.chmod(0o755)
        budget = max_bytes - len(profile_yaml.encode())
        for name, source in plan.files:
            budget -= _copy_file(who, name, source, staged / name, budget, max_bytes)
        (staged / PROFILE_NAME).write_text(profile_yaml, encoding="utf-8")
        if not target.exists():
            staged.rename(target)
        elif not exchange_paths(staged, target):  # no atomic exchange here: two renames
            old = staged.with_suffix(".old")
            target.rename(old)
            try:
                staged.rename(target)
            except BaseException:
                old.rename(target)
                raise
            staged = old
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # the new bundle on failure, the old one on success


def _copy_file(who: str, name: str, source: Path, dest: Path, budget: int, max_bytes: int) -> int:
    """Copy one planned file (never through a link, a regular file only, at most ``budget``
    bytes: it may have changed since it was planned); its size."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        problem = f"{name!r}: rule bundle.unreadable: {source}: {exc.strerror}; did it change since it was checked?"
        raise BundleRefused(who, [problem]) from exc
    with os.fdopen(fd, "rb") as src:
        info = os.fstat(src.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise BundleRefused(who, [f"{name!r}: rule bundle.not_regular: {source} is no longer a regular file"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        copied = 0
        with dest.open("xb") as out:
            while chunk := src.read(_CHUNK_BYTES):
                copied += len(chunk)
                if copied > budget:
                    raise BundleRefused(
                        who,
                        [
                            f"{name!r}: rule bundle.too_large: it grew while being copied and the bundle is now over "
                            f"MYSIMBDP_BUNDLE_MAX_BYTES={max_bytes}; copy it again when it no longer changes"
                        ],
                    )
                out.write(chunk)
    dest.chmod(0o755 if info.st_mode & 0o111 else 0o644)
    os.utime(dest, ns=(info.st_atime_ns, info.st_mtime_ns))
    return copied
