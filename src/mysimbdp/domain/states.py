"""File and run states, and which transitions are allowed."""

from __future__ import annotations

from enum import StrEnum


class FileStatus(StrEnum):
    CHECKING = "checking"  # uploaded and answered 202 (respond-async); its checks have not decided yet
    RECEIVED = "received"  # recorded, being moved into staging
    STAGED = "staged"  # accepted, waiting for a batch app
    RUNNING = "running"  # claimed by a manager (under a lease)
    RETRY = "retry"  # transient failure, waiting for backoff
    INGESTED = "ingested"  # app succeeded; file in archive/
    FAILED = "failed"  # app failed permanently; file in failed/
    REJECTED = "rejected"  # broke the profile; file in rejected/
    DUPLICATE = "duplicate"  # same sha256 already accepted; file in rejected/


FINAL_FILE_STATES = frozenset({FileStatus.INGESTED, FileStatus.FAILED, FileStatus.REJECTED, FileStatus.DUPLICATE})


class RunStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # permanent: data error, crash, timeout
    TRANSIENT = "transient"  # store unavailable: retried


# Exit codes of the app contract (BSD sysexits.h): 0 ok, 65 data error, 75 try again later.
EXIT_OK = 0
EXIT_DATAERR = 65
EXIT_TEMPFAIL = 75
