"""The meta store's remote chunk workers: their tokens (``worker_tokens``) and the chunks they
claimed through the API (``worker_claims``).

A worker token is shown once when issued; only its sha256 is kept, as tenants' API keys are
(``metastore.tenants``). A revoked token keeps its row (``revoked_at`` > 0) so that ``worker
token list`` still shows it, and stops working at the next request.

A claim row is written when the API hands a chunk to a remote worker (the chunk itself is
claimed in ``file_chunks``, the ledger every worker goes through) and says which token and
which worker process ran it, the byte ranges the worker may read with their sha256, and how
it ended: ``done``/``retry``/``failed`` (the app's run), ``given_back`` (the worker refused
what it fetched), ``lease_expired`` (the worker asked after its lease had expired and the chunk
had been queued again; also a claim whose worker died or never came back, ended when its
chunk is queued again) or ``taken_over`` (the lease expired while its end was being recorded).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from mysimbdp.adapters.metastore.chunks import ChunkStatus
from mysimbdp.adapters.metastore.sql import SqlConnection

__all__ = ["WorkerClaim", "WorkerClaims", "WorkerToken", "WorkerTokens"]


@dataclass(frozen=True, slots=True)
class WorkerToken:
    id: str
    name: str
    created_at: float
    revoked_at: float = 0.0  # 0: in force

    @property
    def revoked(self) -> bool:
        return self.revoked_at > 0


class WorkerTokens:
    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    def add(self, token_id: str, token_hash: str, name: str) -> WorkerToken:
        now = time.time()
        self._db.execute(
            "INSERT INTO worker_tokens (id, token_hash, name, created_at) VALUES (?, ?, ?, ?)",
            (token_id, token_hash, name, now),
        )
        return WorkerToken(token_id, name, now)

    def active(self, token_hash: str) -> str | None:
        """The id of the token with this hash if it is in force, else None."""
        row = self._db.one("SELECT id FROM worker_tokens WHERE token_hash = ? AND revoked_at = 0", (token_hash,))
        return str(row[0]) if row else None

    def revoke(self, token_id: str) -> bool:
        """Revoke the token; False if there is no token in force with this id."""
        changed = self._db.execute(
            "UPDATE worker_tokens SET revoked_at = ? WHERE id = ? AND revoked_at = 0", (time.time(), token_id)
        )
        return changed > 0

    def all(self) -> list[WorkerToken]:
        rows = self._db.query("SELECT id, name, created_at, revoked_at FROM worker_tokens ORDER BY created_at")
        return [WorkerToken(str(r[0]), str(r[1]), float(r[2]), float(r[3])) for r in rows]


@dataclass(frozen=True, slots=True)
class WorkerClaim:
    run_id: str  # the chunk run's id, and the task's id in the worker routes
    token_id: str
    worker: str  # the chunk's lease owner in ``file_chunks``
    tenant: str
    file_id: str
    index: int
    ranges: tuple[tuple[int, int, str], ...]  # (start, end, sha256) the worker may read
    bundle_version: str
    claimed_at: float
    ended_at: float = 0.0
    outcome: str = ""  # "" while it runs


_COLUMNS = "run_id, token_id, worker, tenant, file_id, idx, ranges, bundle_version, claimed_at, ended_at, outcome"


def _claim(row: Sequence[Any]) -> WorkerClaim:
    ranges = tuple((int(a), int(b), str(h)) for a, b, h in orjson.loads(row[6]))
    return WorkerClaim(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), int(row[5]), ranges, str(row[7]),
        float(row[8]), float(row[9]), str(row[10]),
    )  # fmt: skip


class WorkerClaims:
    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    def add(self, claim: WorkerClaim) -> None:
        self._db.execute(
            f"INSERT INTO worker_claims ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                claim.run_id,
                claim.token_id,
                claim.worker,
                claim.tenant,
                claim.file_id,
                claim.index,
                orjson.dumps([list(r) for r in claim.ranges]).decode(),
                claim.bundle_version,
                claim.claimed_at,
                claim.ended_at,
                claim.outcome,
            ),
        )

    def get(self, run_id: str) -> WorkerClaim | None:
        row = self._db.one(f"SELECT {_COLUMNS} FROM worker_claims WHERE run_id = ?", (run_id,))
        return _claim(row) if row else None

    def end(self, run_id: str, outcome: str) -> bool:
        """Record how the claim ended; False if it had ended already."""
        changed = self._db.execute(
            "UPDATE worker_claims SET ended_at = ?, outcome = ? WHERE run_id = ? AND ended_at = 0",
            (time.time(), outcome, run_id),
        )
        return changed > 0

    def open_of_tenant(self, token_id: str, tenant: str) -> bool:
        """Whether the token holds one of ``tenant``'s chunks now: an unfinished claim whose
        chunk is still running under it (not one whose lease expired when its worker died)."""
        row = self._db.one(
            "SELECT 1 FROM worker_claims w JOIN file_chunks c ON c.file_id = w.file_id AND c.idx = w.idx "
            "AND c.run_id = w.run_id WHERE w.token_id = ? AND w.tenant = ? AND w.ended_at = 0 AND c.status = ?",
            (token_id, tenant, ChunkStatus.RUNNING),
        )
        return row is not None

    def of_file(self, file_id: str) -> list[WorkerClaim]:
        rows = self._db.query(f"SELECT {_COLUMNS} FROM worker_claims WHERE file_id = ? ORDER BY claimed_at", (file_id,))
        return [_claim(row) for row in rows]
