"""The platform home on disk: per-tenant inbox, staging, archive, failed and rejected areas.

Files move between areas with ``os.replace`` (atomic on one filesystem), never by copying
and deleting. A file is taken from an inbox only when it is complete: writers either name
it ``*.part`` while writing and rename it when done (preferred, taken at once), or leave
it unchanged (size and mtime) for ``settle_s`` seconds.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

AREAS = ("inbox", "staging", "archive", "failed", "rejected")
PART_SUFFIX = ".part"


@dataclass(frozen=True)
class Home:
    root: Path

    def area(self, name: str, tenant: str) -> Path:
        assert name in AREAS, name
        return self.root / name / tenant

    def bundle(self, tenant: str) -> Path:
        return self.root / "tenants" / tenant

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    @property
    def claims_dir(self) -> Path:
        """The fetchers' lock files (:mod:`mysimbdp.adapters.files.claims`)."""
        return self.root / "claims"

    @property
    def coredms_dir(self) -> Path:
        return self.root / "coredms"

    def ensure_tenant(self, tenant: str) -> None:
        for name in AREAS:
            self.area(name, tenant).mkdir(parents=True, exist_ok=True)

    def remove_tenant_dirs(self, tenant: str) -> None:
        for name in AREAS:
            shutil.rmtree(self.area(name, tenant), ignore_errors=True)
        shutil.rmtree(self.bundle(tenant), ignore_errors=True)

    def tenants_with_inbox(self) -> list[str]:
        inbox = self.root / "inbox"
        if not inbox.is_dir():
            return []
        return sorted(p.name for p in inbox.iterdir() if p.is_dir())


@dataclass(frozen=True)
class Seen:
    size: int
    mtime_ns: int
    at: float


def inbox_candidates(inbox: Path) -> list[Path]:
    """Regular files in an inbox that are not hidden and not still being written (``.part``)."""
    try:
        entries = list(os.scandir(inbox))
    except FileNotFoundError:
        return []
    return sorted(
        Path(e.path)
        for e in entries
        if e.is_file(follow_symlinks=False) and not e.name.startswith(".") and not e.name.endswith(PART_SUFFIX)
    )


def inbox_specials(inbox: Path) -> list[Path]:
    """What an inbox holds that is neither a regular file nor a directory, and not hidden: a
    symbolic link (never followed), a FIFO, a socket, a device. None of it is ever opened; the
    fetcher rejects each at once (rule ``symlink`` or ``not_a_regular_file``)."""
    try:
        entries = list(os.scandir(inbox))
    except FileNotFoundError:
        return []
    return sorted(
        Path(e.path)
        for e in entries
        if not e.name.startswith(".") and not e.is_dir(follow_symlinks=False) and not e.is_file(follow_symlinks=False)
    )


def kind_of(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words ("a regular file", "a FIFO (named pipe)", ...)."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((word for test, word in kinds if test(mode)), "a special file")


def is_settled(path: Path, seen: dict[Path, Seen], now: float, settle_s: float) -> bool:
    """True once ``path`` has kept its size and mtime for ``settle_s`` seconds.

    ``seen`` remembers the last observation per path between calls.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        seen.pop(path, None)
        return False
    before = seen.get(path)
    if before is None or before.size != st.st_size or before.mtime_ns != st.st_mtime_ns:
        seen[path] = Seen(st.st_size, st.st_mtime_ns, now)
        # A file whose mtime is already old enough is complete (e.g. after a restart).
        return now - st.st_mtime_ns / 1e9 >= settle_s
    return now - before.at >= settle_s


def move(src: Path, dst: Path) -> Path:
    """Atomically move ``src`` to ``dst`` (same filesystem), creating parent directories."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    return dst


def drop_into_inbox(src: Path, inbox: Path, name: str) -> Path:
    """Copy ``src`` into ``inbox`` as ``name`` via a hidden ``.part`` file and a rename, so a
    watcher never sees a half-written file."""
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / name
    stem, dot, ext = name.partition(".")
    counter = 1
    while target.exists():  # never overwrite a file not yet fetched
        target = inbox / f"{stem}-{counter}{dot}{ext}"
        counter += 1
    if not stat.S_ISREG(os.stat(src).st_mode):  # copying a FIFO would block, a device never end
        raise ValueError(f"{src}: {kind_of(os.stat(src).st_mode)}, not a regular file")
    part = inbox / f".{target.name}{PART_SUFFIX}"
    # copy2 keeps the source's mtime: a file that has not changed for settle_s is taken at once.
    shutil.copy2(src, part)
    os.replace(part, target)
    return target
