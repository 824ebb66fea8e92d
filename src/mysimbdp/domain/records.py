"""What the meta store records: tenants, files, runs, quarantined rows (plain values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mysimbdp.domain.states import FileStatus, RunStatus


@dataclass(frozen=True)
class TenantRecord:
    id: str
    created_at: float
    profile_yaml: str
    bundle_dir: str  # where the tenant's profile and apps live (a copy owned by the platform)
    coredms_url: str  # scoped to this tenant; given to its apps, never shown to others


@dataclass(frozen=True)
class FileRecord:
    id: str
    tenant: str
    name: str  # the name the tenant gave the file
    sha256: str
    size_bytes: int
    format: str
    status: FileStatus
    received_at: float
    updated_at: float
    path: str  # where the file is now (inbox, staging, archive, failed, rejected)
    app: str = ""
    dataset: str = ""
    attempts: int = 0
    next_attempt_at: float = 0.0
    rows_total: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    rows_skipped: int = 0
    reasons: tuple[str, ...] = ()
    run_id: str = ""  # the latest run
    lease_owner: str = ""


@dataclass(frozen=True)
class RunRecord:
    id: str
    file_id: str
    tenant: str
    app: str
    attempt: int
    started_at: float
    status: RunStatus | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    rows_written: int = 0
    rows_rejected: int = 0
    bytes_read: int = 0
    peak_rss_bytes: int = 0
    error: str = ""
    stderr_tail: str = ""


@dataclass(frozen=True)
class QuarantinedRow:
    tenant: str
    file_id: str
    run_id: str
    line: int
    raw: str
    reason: str
    at: float = 0.0  # when it was quarantined: set by the meta store, read back from it


@dataclass(frozen=True)
class TenantStats:
    tenant: str
    files_by_status: dict[str, int] = field(default_factory=dict)
    bytes_accepted: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    runs: int = 0
    runs_failed: int = 0
    run_seconds: float = 0.0
    first_at: float | None = None
    last_at: float | None = None
    top_reasons: tuple[tuple[str, int], ...] = ()

    @property
    def rows_per_s(self) -> float:
        return self.rows_written / self.run_seconds if self.run_seconds > 0 else 0.0


@dataclass(frozen=True)
class StreamTarget:
    """How many instances of ``app`` should consume ``stream`` of ``tenant``."""

    tenant: str
    stream: str
    app: str
    instances: int


@dataclass(frozen=True)
class ScalingRecord:
    """A scaling decision the monitor carried out: when, from how many to how many, why."""

    at: float
    tenant: str
    stream: str
    app: str
    from_instances: int
    to_instances: int
    reason: str
    inputs: dict[str, Any]


@dataclass(frozen=True)
class StreamInstance:
    """One clientstreamingestapp process as the stream manager last recorded it."""

    id: str
    tenant: str
    stream: str
    app: str
    state: str  # starting | running | backoff | crash_loop | stopped
    pid: int
    started_at: float
    updated_at: float
    restarts: int
    exit_detail: str = ""
    stderr_tail: str = ""
