"""A replicated PostgreSQL for fault tests: a primary and a synchronous standby, each on its
own test host (``tests/netns.py``), built from Debian's PostgreSQL 15 binaries.

    with Network() as net, PostgresCluster(net) as pg:
        url = pg.url()                 # postgresql://postgres@h1:5432,h2:5432/postgres?target_session_attrs=read-write
        pg.kill_primary()              # SIGKILL every process of the primary's host (or cut_primary())
        pg.promote()                   # the operator's step: pg_ctl promote of the standby

``PostgresCluster(net, databases=("meta", "coredms"))`` starts with those databases (empty) made.

The primary runs with ``wal_level = replica``, ``synchronous_standby_names = 'FIRST 1
(standby1)'`` and ``synchronous_commit = on``: a commit returns once the standby has its WAL,
so no acknowledged write is lost with the primary. Both nodes start from copies of one
cleanly shut-down data directory (a cold base backup: the same system, the same checkpoint),
the standby's with ``standby.signal`` and a ``primary_conninfo`` of ``application_name=standby1``;
that directory is made once per test process (``initdb``, then ``databases`` created in it) and
copied for every cluster, which spares each cluster an ``initdb``, a ``pg_basebackup`` and its
``CREATE DATABASE`` s (each ~1-2 s on a loaded machine). The standby runs with
``synchronous_standby_names = ''`` (meaningless while it is a standby), so that once promoted
it accepts writes alone until a new standby is attached. The failover is a documented
promotion, done by the test as the operator would (``docs/deployment.md``): fence the old
primary (here it is dead), ``pg_ctl promote``.

The nodes run as the ``postgres`` OS user (initdb refuses root), their data directories under a
temporary directory of their own (pytest's ``tmp_path`` is not reachable by that user; in
``/dev/shm`` where there is one: :data:`SCRATCH`), with ``fsync = off``: a test kills
processes, never the machine, so the page cache keeps every write.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from tests import netns
from tests.netns import Host, Network
from tests.netns import problem as netns_problem

__all__ = ["PG_BIN", "PgNode", "PostgresCluster", "require"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PORT = 5432
OS_USER = "postgres"
STANDBY_NAME = "standby1"
READY_TIMEOUT_S = 60.0  # a safety net under load, not an expectation
# where the data directories live: in memory when the machine has a tmpfs for it (a copy of
# a data directory there takes ~0.2 s, on a busy disk 1-2.5 s), else the temporary directory
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def problem() -> str | None:
    """Why a cluster cannot be made here, or None."""
    if (reason := netns_problem()) is not None:
        return reason
    missing = [name for name in ("initdb", "postgres", "pg_ctl", "pg_basebackup") if not (PG_BIN / name).exists()]
    if missing:
        return f"{', '.join(missing)} not in {PG_BIN}: install Debian's postgresql-15"
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        return f"no OS user {OS_USER!r} to run PostgreSQL as (Debian's postgresql-common makes it)"
    return None


def require() -> None:
    """Skip the calling test with the reason if a cluster cannot be made; fail under CI."""
    if (reason := problem()) is not None:
        netns.require(reason)


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", OS_USER, "--", *argv]


CONFIG = (
    f"port = {PORT}\nwal_level = replica\n"
    f"max_wal_senders = 5\nhot_standby = on\nsynchronous_commit = on\n"
    f"synchronous_standby_names = 'FIRST 1 ({STANDBY_NAME})'\nfsync = off\n"
    "max_connections = 200\nshared_buffers = 64MB\n"
)
_TEMPLATES: dict[tuple[str, ...], Path] = {}  # databases -> a data directory, shut down cleanly


def _template(databases: tuple[str, ...]) -> Path:
    """A data directory with :data:`CONFIG` and ``databases``, cleanly shut down: made once per
    test process (removed at its exit), copied for each cluster."""
    if (made := _TEMPLATES.get(databases)) is not None:
        return made
    root = Path(tempfile.mkdtemp(prefix="mysimbdp-pg-template-", dir=SCRATCH))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    os.chmod(root, 0o755)
    shutil.chown(root, OS_USER, OS_USER)
    data = root / "data"
    initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]
    subprocess.run(_as_postgres(initdb), check=True, capture_output=True)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(CONFIG)
    # started once on a socket of its own (no standby to wait for): its control file then holds
    # CONFIG's settings, which a standby started from a copy checks against its own
    options = f"-c listen_addresses='' -c unix_socket_directories={root} -c synchronous_standby_names=''"
    pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-t", str(int(READY_TIMEOUT_S))]
    start = [*pg_ctl, "-o", options, "-l", str(root / "log"), "start"]
    subprocess.run(_as_postgres(start), check=True, capture_output=True)
    try:
        with psycopg.connect(host=str(root), port=PORT, user="postgres", autocommit=True) as conn:
            for name in databases:
                conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        subprocess.run(_as_postgres([*pg_ctl, "-m", "fast", "stop"]), check=True, capture_output=True)
    _TEMPLATES[databases] = data
    return data


@dataclass
class PgNode:
    """One PostgreSQL server on its own host."""

    name: str
    host: Host
    data: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return self.host.address

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.address} port={PORT} user=postgres dbname={dbname} connect_timeout=3"

    def start(self, *settings: str) -> None:
        """Start the postmaster on this node's host (``settings``: ``name=value`` overrides)."""
        argv = [str(PG_BIN / "postgres"), "-D", str(self.data), "-c", f"listen_addresses={self.address}"]
        sockets = self.data.with_name(f"{self.name}-sockets")  # its own: the nodes share one file system
        sockets.mkdir(exist_ok=True)
        shutil.chown(sockets, OS_USER, OS_USER)
        argv += ["-c", f"unix_socket_directories={sockets}"]
        for setting in settings:
            argv += ["-c", setting]
        with open(self.log, "ab") as log:
            self.proc = self.host.popen(_as_postgres(argv), stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.conninfo(), autocommit=True) as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError as exc:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(f"PostgreSQL node {self.name} exited: {self.tail()}") from exc
                if time.monotonic() >= deadline:
                    raise AssertionError(f"PostgreSQL node {self.name} not ready: {exc}\n{self.tail()}") from exc
                time.sleep(0.1)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    def kill(self) -> None:
        """SIGKILL every process of this node's host: the postmaster and all its backends."""
        self.host.kill_all()
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


class PostgresCluster:
    """A primary and one synchronous standby on hosts of ``net``; a context manager."""

    def __init__(self, net: Network, names: tuple[str, str] = ("pg1", "pg2"), databases: tuple[str, ...] = ()) -> None:
        self.net = net
        self.names = names
        self.databases = databases
        self.root = Path()
        self.nodes: list[PgNode] = []
        self.primary: PgNode | None = None
        self.standby: PgNode | None = None

    def __enter__(self) -> PostgresCluster:
        require()
        self.root = Path(tempfile.mkdtemp(prefix="mysimbdp-pg-", dir=SCRATCH))
        try:
            self._build()
        except BaseException:
            self._teardown()
            raise
        return self

    def _build(self) -> None:
        os.chmod(self.root, 0o755)
        shutil.chown(self.root, OS_USER, OS_USER)
        first, second = (self._node(name) for name in self.names)
        template = _template(self.databases)
        network = self.net.gateway.rpartition(".")[0] + ".0/24"
        for node in (first, second):  # cp -a: the postgres user's files, the directory's 0700 kept
            subprocess.run(["cp", "-a", str(template), str(node.data)], check=True, capture_output=True)
            with open(node.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {network} trust\nhost replication all {network} trust\n")
        source = f"host={first.address} port={PORT} user=postgres application_name={STANDBY_NAME}"
        with open(second.data / "postgresql.auto.conf", "a") as auto:
            auto.write(f"primary_conninfo = '{source}'\n")
        (second.data / "standby.signal").touch()
        shutil.chown(second.data / "standby.signal", OS_USER, OS_USER)
        first.start()
        second.start("synchronous_standby_names=")
        first.wait_ready()
        second.wait_ready()
        self.primary, self.standby = first, second
        self.wait_sync()

    def _node(self, name: str) -> PgNode:
        node = PgNode(name, self.net.host(name), self.root / name, self.root / f"{name}.log")
        self.nodes.append(node)
        return node

    def wait_sync(self) -> None:
        """Until the primary sees the standby ``streaming`` and ``sync``."""
        assert self.primary is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        query = "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = %s"
        while (rows := self.primary.sql(query, (STANDBY_NAME,))) != [("streaming", "sync")]:
            if time.monotonic() >= deadline:
                raise AssertionError(f"the standby is not a streaming sync standby: {rows}")
            time.sleep(0.1)

    def url(self, dbname: str = "postgres", **params: str) -> str:
        """The platform's multi-host URL: both nodes, the read-write one chosen by libpq
        (``params``: more libpq parameters, e.g. ``connect_timeout``, keepalives)."""
        hosts = ",".join(f"{node.address}:{PORT}" for node in self.nodes)
        query = "&".join(f"{k}={v}" for k, v in {"target_session_attrs": "read-write", **params}.items())
        return f"postgresql://postgres@{hosts}/{dbname}?{query}"

    def kill_primary(self) -> PgNode:
        """SIGKILL every process of the primary's host: connections to it are refused at once."""
        assert self.primary is not None
        killed = self.primary
        killed.kill()
        return killed

    def cut_primary(self) -> PgNode:
        """Cut the primary's host off the network: it lives on, still a primary (its commits
        wait for the standby it lost, so none is acknowledged), and answers nobody. The
        operator must fence it (stop it for good) before it may come back: here it never does."""
        assert self.primary is not None
        self.primary.host.link_down()
        return self.primary

    def promote(self) -> None:
        """The operator's failover: ``pg_ctl promote -w`` of the standby (the old primary fenced)."""
        assert self.standby is not None
        promote = [str(PG_BIN / "pg_ctl"), "promote", "-w", "-t", "60", "-D", str(self.standby.data)]
        self.standby.host.run(_as_postgres(promote), check=True, capture_output=True)
        self.primary, self.standby = self.standby, None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._teardown()

    def _teardown(self) -> None:
        for node in self.nodes:
            node.host.kill_all()
            if node.proc is not None:
                node.proc.wait(timeout=10)
            # A cut host's orphaned TCP sockets (their FIN unanswered) hold its namespace, and so
            # both ends of its veth, for minutes after ``ip netns delete``: the next Network of
            # this process could not make a veth of that name. Deleting our end deletes the pair.
            subprocess.run(["ip", "link", "delete", node.host.veth], check=False, capture_output=True)
        if self.root != Path():
            shutil.rmtree(self.root, ignore_errors=True)
