"""unpack: a compressed claimed file decompressed before its scan (see docs/architecture.md).

Told by its first bytes, whatever its name; decompressed by
:func:`mysimbdp.adapters.files.decompress.decompress_contained` in its limited process (in the
sandbox where the machine has one: it reads the claimed file, writes only its output) into
``staging/<tenant>/<claim name>``, a hidden name that ``reconcile`` removes after a crash.
"""

from __future__ import annotations

import threading
from pathlib import Path

from mysimbdp.adapters.files.decompress import Unpacked, decompress_contained, decompress_grant
from mysimbdp.adapters.files.scanjob import ScanFailure, ScanLimits
from mysimbdp.domain.filecheck import Violation, compression_violation, unsupported_compression
from mysimbdp.domain.profile import Profile
from mysimbdp.domain.records import FileRecord
from mysimbdp.formats.compression import HEAD_BYTES, SUPPORTED, detect, unsupported
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform

__all__ = ["staged_size", "unpack"]

log = get_logger("fetchdata")


def unpack(
    platform: Platform, tenant: str, claimed: Path, name: str, profile: Profile, cancel: threading.Event | None
) -> Unpacked | Violation | None:
    """A compressed claimed file (told by its first bytes, whatever its name) decompressed in
    its limited process into ``staging/<tenant>/<claim name>``; None for a plain file; the
    violation when it is not decompressed (unsupported, corrupt, truncated, over a limit)."""
    with open(claimed, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    kind = detect(head)
    if kind is None:
        other = unsupported(head)
        return None if other is None else unsupported_compression(tenant, name, other, tuple(map(str, SUPPORTED)))
    out = platform.home.area("staging", tenant) / claimed.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.open("xb").close()  # created here, so that the sandbox can grant the child this one file
    try:
        sandbox = None
        if platform.sandbox_status.enforced:
            sandbox = platform.sandbox(decompress_grant(tenant, platform.home.root, claimed, out))
    except BaseException:
        out.unlink()
        raise
    settings = platform.settings
    result = decompress_contained(
        claimed,
        out,
        kind,
        max_bytes=profile.limits.max_uncompressed_bytes,
        max_ratio=profile.limits.max_expansion_ratio,
        limits=ScanLimits(settings.scan_timeout_s, settings.scan_memory_bytes),
        sandbox=sandbox,
        parent_env=platform.env,
        cancel=cancel,
    )
    if isinstance(result, ScanFailure):
        log.warning("file_decompress_failed", tenant=tenant, file=name, rule=result.rule, value=result.value)
        return compression_violation(tenant, name, result.rule, f"{result.value}; {result.remedy}")
    return result


def staged_size(record: FileRecord) -> int:
    """The size of ``record``'s staged file, which the big-file rules judge: the plain copy of
    a compressed file (its record holds the compressed size, as sent); the recorded size when
    the file is not there to tell."""
    try:
        return Path(record.path).stat().st_size
    except OSError:
        return record.size_bytes
