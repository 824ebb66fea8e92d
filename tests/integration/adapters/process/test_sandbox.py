"""The sandbox against a hostile app, on this machine's kernel: every forbidden probe is refused
with the sandbox on and reaches its target with the sandbox off (so each assertion can fail),
while what an app is granted works in both."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mysimbdp.adapters.process.runner import Limits, Outcome, build_env, run
from mysimbdp.adapters.process.sandbox import MIN_LANDLOCK_ABI, Sandbox, app_grant, probe, url_ports
from mysimbdp.adapters.secretbox import SecretBox, default_key_file
from mysimbdp.errors import SandboxUnavailable
from tests.helpers import TESTS

HOSTILE_APP = TESTS / "hostile_app.py"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _kernel_sandbox() -> None:
    """These tests need the kernel's sandbox; a machine without it skips them (fails under CI)."""
    status = probe("on")
    if not status.available:
        if IN_CI:
            pytest.fail(f"the CI machine must offer the sandbox: {status.problem}")
        pytest.skip(status.problem)


class Machine:
    """A platform home with two tenants' files, and listeners standing for the platform's ports."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        for path, text in {
            "meta.db": "meta store",
            "broker/nats.conf": 'authorization { users = [ {user: "platform", password: "p"} ] }',
            "broker/users.json": '{"platform": "p"}',
            "coredms/other/other.db": "other's data",
            "coredms/evil/evil.db": "",
            "staging/other/f1.csv": "a\n1\n",
            "archive/other/f0.csv": "a\n0\n",
            "tenants/other/profile.yaml": "id: other",
            "staging/evil/f2.csv": "probe,target\n",
        }.items():
            (self.home / path).parent.mkdir(parents=True, exist_ok=True)
            (self.home / path).write_text(text)
        self.bundle = self.home / "tenants" / "evil"
        self.bundle.mkdir(parents=True)
        shutil.copy(HOSTILE_APP, self.bundle / "hostile_app.py")
        self.run_dir = self.home / "runs" / "r1"
        self.store = _listen_tcp()
        self.broker = _listen_tcp()
        self.unix_path = str(self.home / "broker" / "control.sock")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.unix_path)
        self.unix.listen(8)
        box = SecretBox("", default_key_file(os.environ))
        box.seal("made on first use")  # this user's default key file exists
        self.key_file = box.key_file

    @property
    def store_url(self) -> str:
        return f"postgresql://evil:pw@127.0.0.1:{self.store.getsockname()[1]}/db"

    def close(self) -> None:
        for sock in (self.store, self.broker, self.unix):
            sock.close()

    def forbidden(self) -> list[tuple[str, str]]:
        """Every probe of issue 12 an app must be refused."""
        home = self.home
        probes = [
            ("read", str(home / "coredms" / "other" / "other.db")),  # another tenant's database
            ("read", str(home / "meta.db")),
            ("read", str(home / "broker" / "nats.conf")),  # the platform user's broker password
            ("read", str(home / "broker" / "users.json")),
            ("read", str(home / "staging" / "other" / "f1.csv")),  # another tenant's staged file
            ("read", str(home / "archive" / "other" / "f0.csv")),
            ("read", str(home / "tenants" / "other" / "profile.yaml")),  # another tenant's bundle
            ("list", str(home)),
            ("environ", "parent"),  # the platform's environment: admin key, store URLs
            ("list", "/proc"),  # the platform's processes
            ("signal", "parent"),
            ("write", str(home / "owned.txt")),  # into the home
            ("write", str(home / "coredms" / "other" / "other.db")),
            ("tcp", f"127.0.0.1:{self.broker.getsockname()[1]}"),  # a port other than its store
            ("unix", self.unix_path),  # a named unix socket (PostgreSQL's local socket is one)
            ("udp", f"127.0.0.1:{self.broker.getsockname()[1]}"),
            ("read", "/etc/shadow" if os.path.exists("/etc/shadow") else "/etc/passwd"),
            ("read", str(self.key_file)),  # the key that seals the platform's secrets at rest
        ]
        if os.geteuid() == 0:
            probes.append(("setuid", "4242"))  # root's capabilities are dropped
        return probes

    def granted(self) -> list[tuple[str, str]]:
        """What the app is given, which must work with the sandbox on as well."""
        return [
            ("read", str(self.home / "staging" / "evil" / "f2.csv")),  # its input
            ("read", str(self.bundle / "hostile_app.py")),  # its bundle
            ("write", str(self.run_dir / "scratch.txt")),  # its run directory
            ("write", str(self.home / "coredms" / "evil" / "evil.db-wal")),  # its own SQLite directory
            ("tcp", f"127.0.0.1:{self.store.getsockname()[1]}"),  # its store
        ]


def _listen_tcp() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    made = Machine(tmp_path)
    try:
        yield made
    finally:
        made.close()


def _probe(machine: Machine, probes: list[tuple[str, str]], mode: str, *, network: str = "store") -> list[dict]:
    (machine.bundle / "probes.json").write_text(json.dumps(probes))
    grant = app_grant(
        "evil",
        machine.home,
        bundle=machine.bundle,
        inputs=[machine.home / "staging" / "evil" / "f2.csv"],
        writable=[machine.run_dir],
        coredms_url=f"sqlite:///{machine.home / 'coredms' / 'evil' / 'evil.db'}",
        network=network,
    )
    if network == "store":  # a SQLite tenant has no store port: stand one in, to show it is reachable
        grant = dataclasses.replace(grant, connect_ports=tuple(url_ports(machine.store_url)))
    outcome = _run(machine, Sandbox(probe(mode), grant))
    assert outcome.ok, outcome.stderr_tail
    return list(json.loads(outcome.stdout_tail))


def _run(machine: Machine, sandbox: Sandbox) -> Outcome:
    argv = [sys.executable, str(machine.bundle / "hostile_app.py"), "direct", str(machine.bundle / "probes.json")]
    env = build_env({"MYSIMBDP_TENANT": "evil"}, os.environ)
    return asyncio.run(run(argv, env=env, cwd=machine.run_dir / "work", limits=Limits(timeout_s=60), sandbox=sandbox))


def _reached(results: list[dict]) -> dict[tuple[str, str], bool]:
    return {(r["probe"], r["target"]): r["reached"] for r in results}


def test_every_forbidden_probe_is_refused_inside_and_reaches_its_target_outside(machine: Machine) -> None:
    """With the sandbox on, no probe of the hostile app reaches its target; with it off, every
    one does: the refusals are the sandbox's, not the probes' failing anyway."""
    probes = machine.forbidden()
    confined = _probe(machine, probes, "on")
    assert [r for r in confined if r["reached"]] == [], "reached from inside the sandbox"
    unconfined = _probe(machine, probes, "off")
    assert [r for r in unconfined if not r["reached"]] == [], "failed even without the sandbox"


def test_what_an_app_is_granted_works_inside_the_sandbox(machine: Machine) -> None:
    """Its input, its bundle, its run directory, its own database directory and its store's port."""
    results = _probe(machine, machine.granted(), "on")
    assert [r for r in results if not r["reached"]] == []


def test_network_none_refuses_even_the_store_and_any_reaches_other_ports(machine: Machine) -> None:
    """``network: none`` leaves no TCP port; ``network: any`` (operator-granted) leaves every one."""
    store = ("tcp", f"127.0.0.1:{machine.store.getsockname()[1]}")
    other = ("tcp", f"127.0.0.1:{machine.broker.getsockname()[1]}")
    assert _reached(_probe(machine, [store, other], "on", network="none")) == {store: False, other: False}
    assert _reached(_probe(machine, [store, other], "on", network="any")) == {store: True, other: True}


def test_without_a_sandbox_apps_do_not_run_unless_the_operator_turns_it_off(machine: Machine) -> None:
    """An old kernel (ABI 0, and one below the minimum): the app is not started and the error
    names the remedy; with MYSIMBDP_SANDBOX=off it runs, and its status says it is unconfined."""
    probes = [("write", str(machine.home / "owned.txt"))]
    (machine.bundle / "probes.json").write_text(json.dumps(probes))
    grant = app_grant("evil", machine.home, bundle=machine.bundle, writable=[machine.run_dir], coredms_url="")
    for abi in (0, MIN_LANDLOCK_ABI - 1):
        missing = Sandbox(probe("on", abi=abi), grant)
        with pytest.raises(SandboxUnavailable, match="MYSIMBDP_SANDBOX=off"):
            _run(machine, missing)
        assert not (machine.home / "owned.txt").exists()
    off = Sandbox(probe("off", abi=0), grant)
    assert _run(machine, off).ok and (machine.home / "owned.txt").exists()
    assert not off.status.enforced and "UNCONFINED" in off.status.warning


def test_a_shared_sqlite_directory_is_never_granted(tmp_path: Path) -> None:
    """A database lying beside other tenants' (a home from before the sandbox) is refused, so
    an app is never handed their files."""
    with pytest.raises(SandboxUnavailable, match="shares a directory"):
        app_grant("evil", tmp_path, bundle=tmp_path, coredms_url=f"sqlite:///{tmp_path / 'coredms' / 'evil.db'}")


def test_a_home_inside_the_runtime_is_refused(tmp_path: Path) -> None:
    """A home inside a directory every app may read (here: the virtual environment) is refused."""
    grant = app_grant("evil", Path(sys.prefix) / "home", bundle=tmp_path, coredms_url="")
    with pytest.raises(SandboxUnavailable, match="inside"):
        Sandbox(probe("on"), grant).prepare()


def test_store_and_broker_ports_come_from_their_urls() -> None:
    """Default ports per scheme, explicit ports, and every host of a multi-host URL."""
    assert url_ports("postgresql://u:p@db/x") == [5432]
    assert url_ports("postgresql://u:p@h1:5433,h2:5434/x?target_session_attrs=read-write") == [5433, 5434]
    assert url_ports("nats://u:p@127.0.0.1:4333") == [4333]
    assert url_ports("amqp://guest:guest@127.0.0.1/vh") == [5672]
    assert url_ports("sqlite:///x.db") == [] and url_ports("") == []
