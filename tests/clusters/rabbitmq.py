"""A RabbitMQ cluster of the test's own: ``size`` nodes of Debian's ``rabbitmq-server``, each on
its own test host (:mod:`tests.netns`), clustered with ``rabbitmqctl join_cluster``.

Each node runs in its own network namespace, so it has its own ``epmd`` (port 4369 of its
namespace) and the long node name ``rabbit@<address>``; AMQP on ``<address>:5672`` and the
management API (the platform makes its tenants' users with it) on ``<address>:15672``. Its data,
logs, config, enabled-plugins file and Erlang cookie live under the test's directory: the
machine's RabbitMQ (its ``/etc/rabbitmq`` env file, its cookie in ``/var/lib/rabbitmq``, its data
and its epmd) is never read nor touched. ``guest`` may log in from anywhere (``loopback_users =
none``): the nodes are reachable only on the test network.

The nodes start in parallel (~5 s each on an idle machine), then the 2nd and later ones join the
first; :attr:`RabbitCluster.start_s` is the time all of it took. Leaving :func:`rabbitmq_cluster`
kills every node (the namespaces go with the network), also when the test failed. The tests
share one cluster per test process (the ``rabbit_cluster`` fixture of tests/conftest.py, in the
xdist group :data:`GROUP`, so one process runs them all): a cluster costs 20-40 s to start, and
:meth:`RabbitCluster.heal` gives each test a whole one again.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mysimbdp.adapters.broker.rabbitmq import ManagementApi
from tests import netns
from tests.netns import Host, Network

__all__ = ["GROUP", "RabbitCluster", "RabbitNode", "rabbitmq_cluster", "require"]

GROUP = "rabbitmq-cluster"  # the xdist group of the tests on the shared cluster

SBIN = Path("/usr/lib/rabbitmq/bin")  # the scripts themselves, not /usr/sbin's wrapper (it su's to rabbitmq)
SERVER, CTL = SBIN / "rabbitmq-server", SBIN / "rabbitmqctl"
AMQP_PORT, MANAGEMENT_PORT = 5672, 15672
START_TIMEOUT_S = 120


def require() -> None:
    """Skip the calling test with the reason if the cluster cannot be made; fail under CI."""
    netns.require()
    if not SERVER.exists():
        netns.require(f"{SERVER} not found: install Debian's rabbitmq-server (3.10)")


@dataclass
class RabbitNode:
    """One node: its host, its directory and its server process (None once killed)."""

    host: Host
    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"rabbit@{self.host.address}"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host.address}:{AMQP_PORT}"

    @property
    def admin_url(self) -> str:
        return f"http://guest:guest@{self.host.address}:{MANAGEMENT_PORT}"

    def env(self) -> dict[str, str]:
        """The environment of this node's server and of the CLI tools run against it."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.root / "home"),  # its .erlang.cookie: the test's own
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),  # not /etc/rabbitmq's
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_USE_LONGNAME": "true",
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbit.pid"),
        }

    def prepare(self, cookie: str) -> None:
        home = self.root / "home"
        home.mkdir(parents=True)
        (home / ".erlang.cookie").write_text(cookie)
        (home / ".erlang.cookie").chmod(0o400)
        (self.root / "rabbitmq-env.conf").write_text("")
        (self.root / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.host.address}:{AMQP_PORT}\n"
            f"management.tcp.ip = {self.host.address}\n"
            f"management.tcp.port = {MANAGEMENT_PORT}\n"
            "loopback_users = none\n"
            "disk_free_limit.absolute = 10MB\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )

    def start(self) -> None:
        """Start the server (again, after :meth:`kill`: it rejoins its cluster) and wait until it
        runs (its applications started)."""
        (self.root / "rabbit.pid").unlink(missing_ok=True)  # a killed node's: `wait` would read it
        with (self.root / "server.out").open("ab") as out:
            self.process = self.host.popen([str(SERVER)], env=self.env(), stdout=out, stderr=subprocess.STDOUT)
        self.ctl("wait", str(self.root / "rabbit.pid"), "--timeout", str(START_TIMEOUT_S))

    def ctl(self, *args: str, timeout_s: float = START_TIMEOUT_S) -> str:
        """``rabbitmqctl -n <this node> args`` on this node's host; its output (fails on an error)."""
        argv = [str(CTL), "--longnames", "-n", self.name, *args]
        done = self.host.run(argv, env=self.env(), capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            log = (self.root / "server.out").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"node {self.name}: rabbitmqctl {' '.join(args)}: {done.stderr or done.stdout}\n{log}")
        return str(done.stdout)

    def kill(self) -> None:
        """SIGKILL the node (its epmd too): no goodbye to the cluster, as when a machine dies."""
        self.host.kill_all()
        if self.process is not None:
            self.process.wait(timeout=30)
        self.process = None


@dataclass
class RabbitCluster:
    nodes: list[RabbitNode]
    start_s: float = 0.0  # from the first node's start to all of them clustered
    boot_s: float = 0.0  # of which: until every node ran on its own (they start in parallel)

    def url(self, vhost: str = "/") -> str:
        """The platform's broker URL: every node's URL, comma-separated, with ``vhost``."""
        path = "/" + quote(vhost, safe="")
        return ",".join(node.url + path for node in self.nodes)

    def alive(self) -> list[RabbitNode]:
        return [node for node in self.nodes if node.process is not None]

    def heal(self) -> RabbitCluster:
        """Start every node a test killed (it rejoins the cluster) and wait until the cluster
        says all of them run: the next test of a shared cluster starts on a whole one."""
        for node in self.nodes:
            if node.process is None:
                node.start()
        names = {node.name for node in self.nodes}
        deadline = time.monotonic() + START_TIMEOUT_S
        while {n["name"] for n in self.api("GET", "/api/nodes") if n.get("running")} != names:
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ cluster: not all of {sorted(names)} running after {START_TIMEOUT_S} s")
            time.sleep(0.2)
        return self

    def node(self, name: str) -> RabbitNode:
        """The node named ``rabbit@<address>``."""
        return next(node for node in self.nodes if node.name == name)

    def api(self, method: str, path: str, body: object = None, *, missing_ok: bool = False) -> Any:
        """The management API of the first live node."""
        return ManagementApi(self.alive()[0].admin_url).call(method, path, body, who="test", missing_ok=missing_ok)

    def add_vhost(self, vhost: str) -> None:
        name = quote(vhost, safe="")
        self.api("PUT", f"/api/vhosts/{name}")
        full = {"configure": ".*", "write": ".*", "read": ".*"}
        self.api("PUT", f"/api/permissions/{name}/guest", full)

    def queue(self, vhost: str, name: str) -> dict[str, Any]:
        """The management API's view of queue ``name``: ``type``, ``leader``, ``members``, ..."""
        found = self.api("GET", f"/api/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")
        assert isinstance(found, dict)
        return found

    def consumers(self, vhost: str, queue: str) -> list[dict[str, Any]]:
        """Queue ``queue``'s consumers now (channel, tag, active): ``rabbitmqctl list_consumers`` on
        the first live node (the cluster's own list, not the management API's statistics, which lag)."""
        columns = ("queue_name", "channel_pid", "consumer_tag", "active")
        out = self.alive()[0].ctl("list_consumers", "--quiet", "--formatter", "json", "-p", vhost, *columns)
        return [consumer for consumer in json.loads(out) if consumer["queue_name"] == queue]


def _cookie() -> str:
    return secrets.token_hex(16).upper()


@contextmanager
def rabbitmq_cluster(root: Path, size: int = 3) -> Iterator[RabbitCluster]:
    """``size`` clustered nodes under ``root``, killed at exit."""
    require()
    with Network() as net:
        cookie = _cookie()
        nodes = [RabbitNode(net.host(f"rmq{i}"), root / f"rmq{i}") for i in range(1, size + 1)]
        for node in nodes:
            if node.root.exists():
                shutil.rmtree(node.root)
            node.prepare(cookie)
        try:
            started = time.monotonic()
            with ThreadPoolExecutor(size) as pool:
                list(pool.map(RabbitNode.start, nodes))
            booted = time.monotonic()
            for node in nodes[1:]:  # one at a time: two nodes joining at once can fail mnesia's start
                _join(node, nodes[0])  # ({badmatch, {error, {normal, {mnesia_app, start, ...}}}}, seen once)
            cluster = RabbitCluster(nodes, time.monotonic() - started, booted - started)
            yield cluster
        finally:
            for node in nodes:
                node.kill()


def _join(node: RabbitNode, first: RabbitNode) -> None:
    node.ctl("stop_app")
    node.ctl("join_cluster", first.name)
    node.ctl("start_app")
