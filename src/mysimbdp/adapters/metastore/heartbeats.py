"""The meta store's heartbeats: which component (a manager of ``up``) last said it is alive, when.

Reached through the ``MetaStore`` facade (``MetaStore.heartbeats``).
"""

from __future__ import annotations

import time

from mysimbdp.adapters.metastore.sql import SqlConnection

__all__ = ["Heartbeats"]


class Heartbeats:
    """One row per component: its owner and the time of its last beat."""

    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    def beat(self, component: str, owner: str) -> None:
        self._db.execute(
            "INSERT INTO heartbeats (component, owner, at) VALUES (?, ?, ?) "
            "ON CONFLICT (component) DO UPDATE SET owner = excluded.owner, at = excluded.at",
            (component, owner, time.time()),
        )

    def clear(self, component: str, owner: str) -> None:
        self._db.execute("DELETE FROM heartbeats WHERE component = ? AND owner = ?", (component, owner))

    def alive(self, component: str, max_age_s: float) -> bool:
        row = self._db.one("SELECT at FROM heartbeats WHERE component = ?", (component,))
        return row is not None and time.time() - float(row[0]) <= max_age_s
