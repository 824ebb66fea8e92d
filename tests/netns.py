"""The project's own test hosts: network namespaces on one bridge, each with its own address.

A multi-host test builds a :class:`Network` and adds hosts to it::

    with Network() as net:
        a = net.host("a")            # 10.<n>.0.2, its own network namespace
        b = net.host("b")            # 10.<n>.0.3
        proc = b.popen([...])        # runs inside b's namespace (ip netns exec)
        a.link_down()                # cuts a off the bridge; a.link_up() restores it

The bridge itself holds 10.<n>.0.1, so the test process (in the root namespace) reaches
every host by its address. Only these addresses and loopback are used: the bridge has no
route out, and nothing is forwarded. Each Network takes a /24 of its own under 10.200.0.0 to
10.254.255.0, claimed with a lock file, so parallel test processes never collide. Leaving the
``with`` block kills every process still in the hosts' namespaces, then deletes them and the
bridge; :func:`sweep` removes what a killed test run left behind. A process may have up to
ten networks at once (a session's cluster beside a test's own hosts).

Needs CAP_NET_ADMIN (root) and ``ip`` (Debian's iproute2): :func:`require` skips the test
with the reason on a machine without them, and fails it under CI, where they must be.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

__all__ = ["Host", "Network", "require", "sweep"]

PREFIX = "msb"  # every namespace, bridge and veth this module makes starts with it
LOCKS = Path(os.environ.get("TMPDIR", "/tmp")) / "mysimbdp-netns"
SUBNETS = [(second, third) for second in range(200, 255) for third in range(256)]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def problem() -> str | None:
    """Why network namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN); run the tests as root"
    try:
        _ip("netns", "list")
    except FileNotFoundError:
        return "`ip` not found: install Debian's iproute2 (.ci/run does)"
    except subprocess.CalledProcessError as exc:
        return f"`ip netns list` failed: {exc.stderr.strip()}"
    return None


def require(reason: str | None = None) -> None:
    """Skip the calling test with the reason if namespaces cannot be made (or with ``reason``,
    a cluster's own missing part, when one is given); fail under CI, where nothing may miss."""
    if reason is None and (reason := problem()) is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def sweep() -> None:
    """Delete namespaces and bridges of this module whose owning process is gone."""
    listed = _ip("netns", "list", check=False).stdout.split()
    for name in listed:
        if name.startswith(PREFIX) and not _alive(int(name.split("-")[1])):
            _kill_all(name)
            _ip("netns", "delete", name, check=False)
    for line in _ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        bridge = line.split(":")[1].strip()
        if bridge.startswith(PREFIX) and not _alive(int(bridge[len(PREFIX) :].split("x")[0], 16)):
            _ip("link", "delete", bridge, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_all(namespace: str) -> None:
    """SIGKILL every process in ``namespace`` and wait until none is left (at most ~5 s)."""
    for _ in range(50):
        pids = [int(p) for p in _ip("netns", "pids", namespace, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


@dataclass
class Host:
    """One test host: a network namespace with one veth on the network's bridge."""

    name: str
    namespace: str
    address: str
    veth: str  # the root-namespace end, on the bridge: down cuts the host off

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` on this host (``subprocess.Popen`` keywords pass through)."""
        return subprocess.Popen(self.command(argv), **kwargs)

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` on this host to its end (``subprocess.run`` keywords pass through)."""
        return subprocess.run(self.command(argv), **kwargs)

    def link_down(self) -> None:
        """Cut this host off the network (its processes live on, unreachable)."""
        _ip("link", "set", self.veth, "down")

    def link_up(self) -> None:
        """Put this host back on the network."""
        _ip("link", "set", self.veth, "up")

    def kill_all(self) -> None:
        """SIGKILL every process running on this host."""
        _kill_all(self.namespace)


class Network:
    """A bridge and the hosts on it; a context manager that removes them all at exit."""

    made = itertools.count()  # networks this process made: several may be up at once (a session's cluster)

    def __init__(self) -> None:
        self.number = next(Network.made) % 10
        self.tag = f"{os.getpid():x}x{self.number}"  # the pid in hex, then this process's network number
        self.bridge = f"{PREFIX}{self.tag}"[:15]
        self.hosts: dict[str, Host] = {}
        self._lock: Any = None
        self._subnet = ""

    @property
    def gateway(self) -> str:
        """The bridge's own address: where the test process is seen from the hosts."""
        return f"{self._subnet}.1"

    def __enter__(self) -> Network:
        require()
        sweep()
        LOCKS.mkdir(parents=True, exist_ok=True)
        for second, third in SUBNETS:
            handle = open(LOCKS / f"10.{second}.{third}.lock", "w")  # held until __exit__
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._lock, self._subnet = handle, f"10.{second}.{third}"
            break
        else:
            raise RuntimeError(f"no free /24 left under 10.200.0.0/13 (locks in {LOCKS})")
        _ip("link", "delete", self.bridge, check=False)  # left by an earlier process of this pid
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def host(self, name: str) -> Host:
        """Add a host: its namespace, loopback up, one address on the bridge."""
        index = len(self.hosts) + 2
        namespace = f"{PREFIX}-{os.getpid()}-{self.number}-{name}"
        veth, peer = f"{PREFIX}{self.tag}-{index}"[:15], f"{PREFIX}p{self.tag}-{index}"[:15]
        address = f"{self._subnet}.{index}"
        _ip("netns", "add", namespace)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", namespace)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", peer)
        _ip("-n", namespace, "link", "set", peer, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        self.hosts[name] = host = Host(name, namespace, address, veth)
        return host

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for host in self.hosts.values():
            host.kill_all()
            # the root end first: a cut host's orphaned TCP sockets can keep its namespace (and with
            # it the veth pair) alive for minutes after `ip netns delete`
            _ip("link", "delete", host.veth, check=False)
            _ip("netns", "delete", host.namespace, check=False)
        _ip("link", "delete", self.bridge, check=False)
        if self._lock is not None:
            self._lock.close()
