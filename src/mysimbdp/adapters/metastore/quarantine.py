"""The quarantine ledger (``quarantine``, ``quarantine_purges``): recording rejected rows and
messages, listing, replaying and purging them, and the purge record.

The one place that reads and writes the quarantine; its rows are
:class:`~mysimbdp.domain.records.QuarantinedRow`. Portable SQL (SQLite and PostgreSQL)
over the meta store's :class:`SqlConnection`, as ``metastore.streams`` and
``metastore.notifications`` are. Every query of the tenant side names the tenant: a
selection is one tenant's entries of one file, of one stream (``file_id``
``stream:<stream>:<instance>``), or all of them; the history API's listing and the
``/metrics`` counts take ``tenant`` None for every tenant. Reached as ``MetaStore.quarantine``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from mysimbdp.adapters.metastore.sql import SqlConnection
from mysimbdp.domain.ids import new_id
from mysimbdp.domain.records import QuarantinedRow
from mysimbdp.domain.sources import STREAM_PREFIX

__all__ = ["PurgeRecord", "QuarantineLedger", "SourceCount"]

REASON_SAMPLE = 1000  # reasons read per source to summarise them


@dataclass(frozen=True)
class SourceCount:
    """How much one file (or one stream app instance) has in the quarantine."""

    file_id: str
    entries: int
    first_at: float
    last_at: float


@dataclass(frozen=True)
class PurgeRecord:
    """Who deleted which quarantined entries, when."""

    id: str
    tenant: str
    selection: str  # "file <id>", "stream <name>" or "all"
    entries: int
    purged_by: str
    via: str  # "cli", "api (tenant key)", "api (operator key)"
    at: float
    reasons: list[tuple[str, int]]  # the most frequent kinds of reason of what was purged


_ROW_COLUMNS = "tenant, file_id, run_id, line, raw, reason, at"
_PURGE_COLUMNS = "id, tenant, selection, entries, purged_by, via, at, reasons"
_IS_STREAM = f"substr(file_id, 1, {len(STREAM_PREFIX)}) = '{STREAM_PREFIX}'"
_KINDS = {"batch": f"NOT ({_IS_STREAM})", "stream": _IS_STREAM}


def _where(tenant: str, file_id: str | None, stream: str | None) -> tuple[str, list[Any]]:
    """``WHERE`` for one tenant's entries: of one file, of one stream, or all."""
    if file_id is not None:
        return "WHERE tenant = ? AND file_id = ?", [tenant, file_id]
    if stream is not None:
        prefix = f"{STREAM_PREFIX}{stream}:"
        return "WHERE tenant = ? AND substr(file_id, 1, ?) = ?", [tenant, len(prefix), prefix]
    return "WHERE tenant = ?", [tenant]


def _row(row: Sequence[Any]) -> QuarantinedRow:
    tenant, file_id, run_id, line, raw, reason, at = row
    return QuarantinedRow(str(tenant), str(file_id), str(run_id), int(line), str(raw), str(reason), float(at))


def _purge(row: Sequence[Any]) -> PurgeRecord:
    pid, tenant, selection, entries, by, via, at, reasons = row
    summary = [(str(kind), int(n)) for kind, n in orjson.loads(reasons)]
    return PurgeRecord(str(pid), str(tenant), str(selection), int(entries), str(by), str(via), float(at), summary)


class QuarantineLedger:
    """Quarantined rows of files and messages of stream apps, and who purged which."""

    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    # -- recording --------------------------------------------------------------------------
    def add(self, rows: Sequence[QuarantinedRow]) -> None:
        """Record rejected rows; a row already recorded for the same file and line is kept."""
        now = time.time()
        self._db.executemany(
            "INSERT INTO quarantine (tenant, file_id, run_id, line, raw, reason, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(r.tenant, r.file_id, r.run_id, r.line, r.raw, r.reason, now) for r in rows],
        )

    # -- reading ----------------------------------------------------------------------------
    def oldest(
        self, tenant: str, limit: int = 100, offset: int = 0, *, file_id: str | None = None
    ) -> list[QuarantinedRow]:
        """A tenant's quarantined rows (of one file if ``file_id``), oldest first."""
        where, params = _where(tenant, file_id, None)
        rows = self._db.query(
            f"SELECT {_ROW_COLUMNS} FROM quarantine {where} ORDER BY at, file_id, line LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_row(row) for row in rows]

    def count_prefixed(self, tenant: str, file_id_prefix: str) -> int:
        """The tenant's quarantined rows of files whose id starts with ``file_id_prefix``
        (``""``: all of them; e.g. ``stream:`` for what stream apps quarantined)."""
        row = self._db.one(
            "SELECT COUNT(*) FROM quarantine WHERE tenant = ? AND substr(file_id, 1, ?) = ?",
            (tenant, len(file_id_prefix), file_id_prefix),
        )
        return int(row[0]) if row else 0

    def sources(self, tenant: str, *, file_id: str | None = None, stream: str | None = None) -> list[SourceCount]:
        """Entries per ``file_id`` of the selection, the oldest source first."""
        where, params = _where(tenant, file_id, stream)
        rows = self._db.query(
            f"SELECT file_id, COUNT(*), MIN(at), MAX(at) FROM quarantine {where} GROUP BY file_id ORDER BY MIN(at)",
            params,
        )
        return [SourceCount(str(f), int(n), float(first), float(last)) for f, n, first, last in rows]

    def reasons(self, tenant: str, *, file_id: str | None = None, stream: str | None = None) -> list[str]:
        """Up to ``REASON_SAMPLE`` reasons of the selection, newest first."""
        where, params = _where(tenant, file_id, stream)
        rows = self._db.query(
            f"SELECT reason FROM quarantine {where} ORDER BY at DESC LIMIT ?", (*params, REASON_SAMPLE)
        )
        return [str(row[0]) for row in rows]

    def count(self, tenant: str, *, file_id: str | None = None, stream: str | None = None) -> int:
        where, params = _where(tenant, file_id, stream)
        row = self._db.one(f"SELECT COUNT(*) FROM quarantine {where}", params)
        return int(row[0]) if row else 0

    def entries(
        self, tenant: str, *, file_id: str | None = None, stream: str | None = None, limit: int, offset: int
    ) -> tuple[list[QuarantinedRow], int]:
        """A page of the selection's entries in file and line order, and how many there are."""
        where, params = _where(tenant, file_id, stream)
        rows = self._db.query(
            f"SELECT {_ROW_COLUMNS} FROM quarantine {where} ORDER BY file_id, line LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_row(row) for row in rows], self.count(tenant, file_id=file_id, stream=stream)

    def after(
        self,
        tenant: str,
        *,
        file_id: str | None = None,
        stream: str | None = None,
        position: tuple[str, int] | None = None,
        limit: int,
    ) -> list[QuarantinedRow]:
        """The next ``limit`` entries of the selection after ``position`` (``(file_id, line)``),
        in file and line order: a replay's pages, stable while entries are removed."""
        where, params = _where(tenant, file_id, stream)
        if position is not None:
            where += " AND (file_id > ? OR (file_id = ? AND line > ?))"
            params += [position[0], position[0], position[1]]
        rows = self._db.query(
            f"SELECT {_ROW_COLUMNS} FROM quarantine {where} ORDER BY file_id, line LIMIT ?", (*params, limit)
        )
        return [_row(row) for row in rows]

    # -- every tenant's (the history API, /metrics) -------------------------------------------
    def newest(
        self,
        tenant: str | None,
        *,
        kind: str | None = None,
        file_id: str | None = None,
        limit: int,
        offset: int,
    ) -> tuple[list[QuarantinedRow], int]:
        """Quarantined rows newest first (of ``tenant``, or of every tenant), and how many
        match; ``kind`` "batch" (files) or "stream" (stream apps)."""
        pairs = [("tenant = ?", tenant), ("file_id = ?", file_id)]
        kept = [(sql, value) for sql, value in pairs if value is not None]
        clauses = [sql for sql, _ in kept] + ([_KINDS[kind]] if kind is not None else [])
        where = "WHERE " + " AND ".join(clauses) if clauses else ""
        params = [value for _, value in kept]
        rows = self._db.query(
            f"SELECT {_ROW_COLUMNS} FROM quarantine {where} ORDER BY at DESC, file_id, line LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        total = self._db.one(f"SELECT COUNT(*) FROM quarantine {where}", params)
        return [_row(row) for row in rows], int(total[0]) if total else 0

    def counts_by_kind(self) -> list[tuple[str, str, int]]:
        """``(tenant, kind, rows)``: quarantined rows of files ("batch") and of stream apps."""
        rows = self._db.query(
            f"SELECT tenant, CASE WHEN {_IS_STREAM} THEN 'stream' ELSE 'batch' END AS kind, COUNT(*) "
            "FROM quarantine GROUP BY tenant, kind ORDER BY tenant, kind"
        )
        return [(str(t), str(k), int(n)) for t, k, n in rows]

    # -- replay -----------------------------------------------------------------------------
    def settle(self, tenant: str, file_id: str, released: Sequence[int], again: Sequence[QuarantinedRow]) -> None:
        """After a replay run: remove the ``released`` lines; give the rows that failed again
        their new reason and run (a row not quarantined before is added). One transaction."""
        now = time.time()
        with self._db.transaction():
            self._db.executemany(
                "DELETE FROM quarantine WHERE tenant = ? AND file_id = ? AND line = ?",
                [(tenant, file_id, line) for line in released],
            )
            self._db.executemany(
                "INSERT INTO quarantine (tenant, file_id, run_id, line, raw, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant, file_id, line) DO UPDATE SET run_id = excluded.run_id, "
                "reason = excluded.reason, raw = excluded.raw, at = excluded.at",
                [(r.tenant, r.file_id, r.run_id, r.line, r.raw, r.reason, now) for r in again],
            )

    def remove(self, tenant: str, keys: Sequence[tuple[str, int]]) -> None:
        """Delete entries by ``(file_id, line)`` (a replayed stream message, once republished)."""
        with self._db.transaction():
            self._db.executemany(
                "DELETE FROM quarantine WHERE tenant = ? AND file_id = ? AND line = ?",
                [(tenant, file_id, line) for file_id, line in keys],
            )

    # -- purge ------------------------------------------------------------------------------
    def purge(
        self,
        tenant: str,
        *,
        file_id: str | None = None,
        stream: str | None = None,
        purged_by: str,
        via: str,
        reasons: list[tuple[str, int]],
    ) -> PurgeRecord:
        """Delete the selection's entries and record who did it, when and how many, in one
        transaction (a purge of nothing is recorded too: someone asked)."""
        where, params = _where(tenant, file_id, stream)
        selection = f"file {file_id}" if file_id is not None else f"stream {stream}" if stream is not None else "all"
        record_id, now = new_id("p"), time.time()
        with self._db.transaction():
            entries = self._db.execute(f"DELETE FROM quarantine {where}", params)
            self._db.execute(
                f"INSERT INTO quarantine_purges ({_PURGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record_id, tenant, selection, entries, purged_by, via, now, orjson.dumps(reasons).decode()),
            )
        return PurgeRecord(record_id, tenant, selection, entries, purged_by, via, now, reasons)

    def purges(self, tenant: str | None, *, limit: int, offset: int) -> tuple[list[PurgeRecord], int]:
        """Purge records newest first (of one tenant, or of every tenant), and how many."""
        where, params = ("WHERE tenant = ?", [tenant]) if tenant is not None else ("", [])
        rows = self._db.query(
            f"SELECT {_PURGE_COLUMNS} FROM quarantine_purges {where} ORDER BY at DESC, id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        total = self._db.one(f"SELECT COUNT(*) FROM quarantine_purges {where}", params)
        return [_purge(row) for row in rows], int(total[0]) if total else 0
