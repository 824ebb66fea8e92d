"""Is an inbox file still being written? A lease probe and a stat snapshot, never a read.

:func:`held_for_writing` asks the kernel whether any process holds the file open for writing:
it takes a read lease (``fcntl F_SETLEASE F_RDLCK``), which Linux refuses with ``EAGAIN``
while any writer has the file open, and drops it at once (no lease is kept, so no writer is
ever held up and no ``SIGIO`` arrives). The kernel grants leases only to the file's owner (or
with ``CAP_LEASE``) and on filesystems that have them; elsewhere the answer is None (unknown)
and the caller relies on the snapshot alone.

:func:`snapshot` is what a file is at one moment (inode, size, mtime, ctime): a file whose
snapshot after its scan differs from the one before it changed while it was read.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Snapshot", "held_for_writing", "snapshot"]


@dataclass(frozen=True)
class Snapshot:
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def snapshot(path: Path) -> Snapshot:
    """The file's state now (``lstat``: a link is never followed)."""
    st = os.lstat(path)
    return Snapshot(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def held_for_writing(path: Path) -> bool | None:
    """True while some process holds ``path`` open for writing, False when none does, None when
    the kernel cannot tell (not the file's owner, no leases on this filesystem)."""
    try:  # O_NONBLOCK: a special file put in its place meanwhile never blocks this open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno in (errno.EAGAIN, errno.EBUSY) else None
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)
