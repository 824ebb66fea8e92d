"""Claims on inbox files: who is fetching a file, and whether that fetcher still lives.

A fetcher takes a file out of an inbox with one atomic rename to
``.fetching-<owner>-<file id>-<name>``; a second fetcher's rename of the same file fails. The
owner is this process's :class:`ClaimOwner`. For as long as the process lives it holds an
exclusive ``flock`` on ``HOME/claims/<owner>.lock``, and the kernel drops that lock when the
process ends, however it ends (exit, exception, SIGKILL, OOM kill). That lock is the claim's
lease: no heartbeat to miss, no timeout to guess.

So "is the owner of this claim alive" is one non-blocking ``flock`` on its lock file
(:func:`dead_owner`): a lock that cannot be taken belongs to a live fetcher, and its claims are
left alone however long its scan takes; a lock that can be taken belongs to a dead one, and
the caller (``reconcile``) finishes or undoes that owner's claims while holding it, so two
reconcilers never repair the same claim. A claim named before owners existed
(``.fetching-<file id>-<name>``) has no owner and counts as dead.

The lock file is made under a temporary name, locked, then renamed into place, so a lock file
is never seen unlocked while its owner lives. The directory is per home: fetchers of one home
run on one machine (workers elsewhere take chunks from the broker, not files from an inbox).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLAIM_PREFIX", "ClaimName", "ClaimOwner", "claim_name", "dead_owner", "parse_claim", "remove_dead_locks"]

CLAIM_PREFIX = ".fetching-"
_OWNER_PREFIX = "o"  # owner ids: "o" + 12 hex digits; file ids start with "f"
_LOCK_SUFFIX = ".lock"


@dataclass(frozen=True)
class ClaimName:
    owner: str  # "" for a claim named before owners (its owner counts as dead)
    file_id: str
    original: str  # the file's name in the inbox


def claim_name(owner: str, file_id: str, name: str) -> str:
    """The hidden name a claimed file has while ``owner`` fetches it."""
    return f"{CLAIM_PREFIX}{owner}-{file_id}-{name}"


def parse_claim(name: str) -> ClaimName | None:
    """The parts of a claim's file name, or None when ``name`` is not a claim."""
    if not name.startswith(CLAIM_PREFIX):
        return None
    first, _, rest = name[len(CLAIM_PREFIX) :].partition("-")
    if first.startswith(_OWNER_PREFIX):
        file_id, _, original = rest.partition("-")
        return ClaimName(first, file_id, original)
    return ClaimName("", first, rest)


class ClaimOwner:
    """This process's identity as a fetcher of one home, alive while its lock is held.

    Made lazily by the platform on its first claim and released by :meth:`close` (or by the
    kernel, when the process dies). The lock file holds the pid and host, for a person looking."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.id = f"{_OWNER_PREFIX}{secrets.token_hex(6)}"
        self.path = directory / f"{self.id}{_LOCK_SUFFIX}"
        building = directory / f".{self.id}.tmp"
        fd = os.open(building, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows the name yet
            os.write(fd, f"pid {os.getpid()} host {socket.gethostname()}\n".encode())
            os.rename(building, self.path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                building.unlink()
            raise
        self._fd: int | None = fd

    def close(self) -> None:
        """Give up the lease: the file is removed, then unlocked (a claim left meanwhile by a
        crash inside this process is a dead owner's from then on)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


@contextlib.contextmanager
def dead_owner(directory: Path, owner: str) -> Iterator[bool]:
    """Yield True, holding ``owner``'s lock, when that owner is dead (or never had a lock:
    a claim without an owner); yield False, holding nothing, while it lives."""
    if not owner:
        yield True
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{owner}{_LOCK_SUFFIX}"
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def remove_dead_locks(directory: Path) -> int:
    """Remove the lock files of owners that are gone; returns how many (run by reconcile
    after it repaired their claims)."""
    removed = 0
    if not directory.is_dir():
        return 0
    for path in directory.glob(f"{_OWNER_PREFIX}*{_LOCK_SUFFIX}"):
        with dead_owner(directory, path.name.removesuffix(_LOCK_SUFFIX)) as dead:
            if dead:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
    for path in directory.glob(f".{_OWNER_PREFIX}*.tmp"):  # an owner that died while being made
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
        except (BlockingIOError, FileNotFoundError):
            pass
        finally:
            os.close(fd)
    return removed
