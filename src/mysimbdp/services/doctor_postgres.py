"""``doctor``'s ``store replication`` check: is the store replicated, and would losing its
primary lose committed data or stop writes?

SQLite is one machine, said plainly. On PostgreSQL (the meta store and coredms, once per set
of hosts), each host of the URL is asked alone for its role (``pg_is_in_recovery()``), then
the URL as the platform uses it (libpq picks the host: ``target_session_attrs=read-write``
the primary) for ``synchronous_standby_names`` and each standby in ``pg_stat_replication``
(application_name, state, sync_state, replay lag in seconds and bytes).

- ok: the URL leads to the primary and a standby streams synchronously (``sync`` or
  ``quorum``): a committed transaction is on two machines.
- warn: no standby, or only asynchronous ones: a primary loss loses committed data (the last
  transactions, or everything since the last backup) and needs a restore or a promotion.
- fail: the URL leads to a standby (writes fail), or ``synchronous_standby_names`` asks for a
  standby that is not connected in sync: every commit waits for it, so writes hang.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import psycopg

from mysimbdp.runtime.platform import Platform
from mysimbdp.services.doctor_net import CONNECT_TIMEOUT_S, Check, endpoints
from mysimbdp.settings import mask_url

__all__ = ["store_replication"]

REPLICATION = """
SELECT application_name, host(client_addr), state, sync_state,
       EXTRACT(EPOCH FROM replay_lag)::float8,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8 END
FROM pg_stat_replication ORDER BY application_name
"""
RANK = {"ok": 0, "warn": 1, "fail": 2}


def _connect(conninfo: str, **overrides: str) -> psycopg.Connection[tuple[Any, ...]]:
    from psycopg.conninfo import make_conninfo

    timeout = {"connect_timeout": str(round(CONNECT_TIMEOUT_S)), "options": "-c statement_timeout=2000"}
    return psycopg.connect(make_conninfo(conninfo, **timeout, **overrides), autocommit=True)


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _role(url: str, host: str, port: int) -> str:
    """``primary``, ``standby`` or why the host cannot be asked (this host alone)."""
    try:
        with _connect(url, host=host, port=str(port), target_session_attrs="any") as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.Error as exc:
        return f"unreachable ({_reason(exc)})"
    return "standby" if row and row[0] else "primary"


def _standby(row: tuple[Any, ...]) -> dict[str, Any]:
    name, address, state, sync_state, lag_s, lag_bytes = row
    return {
        "application_name": name,
        "client_addr": address,
        "state": state,
        "sync_state": sync_state,
        "replay_lag_s": lag_s,
        "replay_lag_bytes": lag_bytes,
    }


def _shown(standby: dict[str, Any]) -> str:
    lag = "" if standby["replay_lag_s"] is None else f", replay lag {standby['replay_lag_s']:.3f} s"
    lag += "" if standby["replay_lag_bytes"] is None else f" ({standby['replay_lag_bytes']} bytes behind)"
    return f"{standby['application_name']!r} {standby['state']} {standby['sync_state']}{lag}"


def _postgres(stores: str, url: str) -> tuple[str, str, dict[str, Any]]:
    """(state, detail, data) of one PostgreSQL server set."""
    addresses = endpoints(url) if len(endpoints(url)) > 1 else []  # one host: the URL's connection says it
    with ThreadPoolExecutor(max(1, len(addresses))) as pool:
        roles = dict(
            zip((f"{h}:{p}" for h, p in addresses), pool.map(lambda a: _role(url, *a), addresses), strict=True)
        )
    data: dict[str, Any] = {"stores": stores, "url": mask_url(url), "hosts": roles}
    where = f"{stores} (PostgreSQL {mask_url(url)}"
    where += f"; {', '.join(f'{h} {r}' for h, r in roles.items())})" if roles else ")"
    try:
        with _connect(url) as conn:
            in_recovery, names, user = conn.execute(
                "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names'), current_user"
            ).fetchone() or (False, "", "?")
            standbys = [_standby(row) for row in conn.execute(REPLICATION).fetchall()]
    except psycopg.Error as exc:
        return "fail", f"{where}: cannot connect: {_reason(exc)}", data
    data.update(primary=not in_recovery, synchronous_standby_names=names, standbys=standbys)
    if in_recovery:
        return "fail", f"{where}: the URL leads to a standby (read-only): add target_session_attrs=read-write", data
    if any(s["state"] is None for s in standbys):
        return "warn", f"{where}: {user} cannot see the standbys' state: GRANT pg_monitor TO {user}", data
    synchronous = [s for s in standbys if s["state"] == "streaming" and s["sync_state"] in ("sync", "quorum")]
    shown = "; ".join(_shown(s) for s in standbys)
    if names and not synchronous:
        connected = f"standbys connected: {shown}" if standbys else "no standby connected"
        return (
            "fail",
            f"{where}: synchronous_standby_names={names!r} but {connected}: every commit waits (writes hang)",
            data,
        )
    if synchronous:
        return "ok", f"{where}: primary, synchronous standby {shown}", data
    if standbys:
        detail = f"{where}: primary with asynchronous standby {shown}: a primary loss loses the last commits"
        return "warn", f"{detail}; set synchronous_standby_names (docs/deployment.md)", data
    detail = f"{where}: primary, no standby: a primary loss loses committed data / needs restore from backup"
    return "warn", f"{detail}; add a synchronous standby (docs/deployment.md)", data


def store_replication(platform: Platform) -> Check:
    """The meta store's and coredms' replication (each PostgreSQL server set once), in the worst state of them."""
    urls = {"meta store": platform.settings.meta_url, "coredms": platform.settings.coredms_url}
    sqlite = [name for name, url in urls.items() if urlsplit(url).scheme == "sqlite"]
    servers: dict[tuple[tuple[str, int], ...], list[str]] = {}
    for name, url in urls.items():
        if name not in sqlite:
            servers.setdefault(tuple(endpoints(url)), []).append(name)
    parts: list[tuple[str, str]] = []
    data: dict[str, Any] = {"sqlite": sqlite, "postgresql": []}
    if sqlite:
        parts.append(("ok", f"{' and '.join(sqlite)} on SQLite: single machine, no replication (back up the home)"))
    for names in servers.values():
        state, detail, facts = _postgres(" and ".join(names), urls[names[0]])
        parts.append((state, detail))
        data["postgresql"].append(facts)
    state = max((s for s, _ in parts), key=RANK.__getitem__)
    return Check("store replication", state, "; ".join(d for _, d in parts), data)
