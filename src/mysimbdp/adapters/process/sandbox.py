"""The tenant-app sandbox: what an app may reach, enforced by the kernel, never by convention.

Every app run (whole-file, chunk, replay, stream instance) gets a :class:`Sandbox` from its
caller and the one runner (:mod:`mysimbdp.adapters.process.runner`) applies it between ``fork`` and
``exec``. Inside, the app may reach only:

* read and execute: the runtime (``/usr``, ``/lib*``, ``/bin``, the Python installation and
  virtual environment, the ``mysimbdp`` package), a few files of ``/etc`` that name
  resolution, time zones and TLS need, ``/dev/null``, ``/dev/*random``, CPU topology;
* read: its own bundle and its input (the file, or the chunk's file);
* read and write: its run directory (scratch space, result, rejects, progress) and, on
  SQLite, its own tenant's database directory — nothing else of the platform home;
* TCP connect: its store's port(s) and, for stream apps, the broker's, as the profile's
  ``network`` says (``store``, the default; ``none``; ``any``, granted by the operator).

The layering (``docs/architecture.md``, "Sandbox"): Landlock for files, TCP ports, signals and
abstract unix sockets (and, by its ptrace rule, other processes' ``/proc`` entries); a seccomp
filter for the sockets Landlock does not cover yet (UDP, raw, named unix sockets); no
capabilities and ``no_new_privs``. ``/proc`` is not granted at all, so an app cannot list the
platform's processes. All three are unprivileged and need nothing installed: Linux 6.12+
(Landlock ABI 6) is required, and where it is missing apps do not run unless the operator
sets ``MYSIMBDP_SANDBOX=off``, which is then shown in the logs, ``doctor``, ``report`` and the
dashboard. bubblewrap's namespaces would add a private ``/proc`` and mount view; they are not
needed for any of the rules above and are not used (see the architecture page).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import mysimbdp
from mysimbdp.adapters.process._confine import (
    FS_EXEC,
    FS_WRITE,
    Confinement,
    build_ruleset,
    landlock_abi,
    seccomp_filter,
)
from mysimbdp.errors import SandboxUnavailable

__all__ = ["MIN_LANDLOCK_ABI", "Grant", "Sandbox", "Status", "app_grant", "probe", "readable_by_apps"]

MIN_LANDLOCK_ABI = 6  # TCP ports (4) and signal scoping (6): every rule above holds
MECHANISM = "landlock+seccomp"

RUNTIME_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin")
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/mime.types",
    "/etc/os-release",
)
DEVICES_READ = ("/dev/urandom", "/dev/random", "/dev/zero", "/sys/devices/system/cpu")
DEVICES_WRITE = ("/dev/null",)
DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "nats": 4222, "tls": 4222, "amqp": 5672, "amqps": 5671}


@dataclass(frozen=True)
class Status:
    """Which sandbox tenant apps get on this machine (``probe``)."""

    mode: str  # on | off (MYSIMBDP_SANDBOX)
    landlock_abi: int  # 0: none
    problem: str  # why the kernel cannot confine apps here; "" when it can

    @property
    def available(self) -> bool:
        return not self.problem

    @property
    def enforced(self) -> bool:
        """Apps run confined."""
        return self.mode == "on" and self.available

    @property
    def mechanism(self) -> str:
        return MECHANISM if self.enforced else "none"

    @property
    def warning(self) -> str:
        """What an operator must be told: apps run unconfined, or do not run; "" when confined."""
        if self.enforced:
            return ""
        if self.mode == "off":
            return "MYSIMBDP_SANDBOX=off: tenant apps run UNCONFINED, with the platform's own access"
        return f"no sandbox ({self.problem}): tenant apps will not run; set MYSIMBDP_SANDBOX=off to run them unconfined"

    def summary(self) -> str:
        """One line for logs, ``doctor`` and the demo."""
        if self.enforced:
            return (
                f"sandbox: Landlock ABI {self.landlock_abi} (files, TCP ports, signals, /proc) "
                "+ seccomp (sockets) + no capabilities"
            )
        return f"sandbox: {self.warning}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "enforced": self.enforced,
            "mechanism": self.mechanism,
            "landlock_abi": self.landlock_abi,
            "problem": self.problem,
            "warning": self.warning,
        }


def probe(mode: str, *, abi: int | None = None) -> Status:
    """The sandbox this kernel offers under ``mode``; ``abi`` overrides the kernel's answer
    (tests force a missing sandbox with ``abi=0``)."""
    found = landlock_abi() if abi is None else abi
    problem = ""
    if sys.platform != "linux":
        problem = f"Landlock is a Linux feature; this is {sys.platform}"
    elif found == 0:
        problem = "the kernel has no Landlock (Linux 5.13+ with landlock in its lsm= list)"
    elif found < MIN_LANDLOCK_ABI:
        problem = f"Landlock ABI {found} cannot restrict TCP ports and signals (ABI {MIN_LANDLOCK_ABI}+, Linux 6.12+)"
    elif seccomp_filter() is None:
        problem = "no seccomp filter for this CPU architecture"
    return Status(mode, found, problem)


@dataclass(frozen=True)
class Grant:
    """What one app run may reach beyond the runtime."""

    tenant: str
    home: Path  # the platform home: nothing under it is granted but the paths below
    read: tuple[Path, ...] = ()
    write: tuple[Path, ...] = ()
    connect_ports: tuple[int, ...] = ()
    network: str = "store"  # store | none | any

    def rules(self) -> list[tuple[str, int]]:
        """(path, rights) for Landlock: the runtime, then this run's own paths."""
        runtime = [*RUNTIME_DIRS, *sorted(_python_dirs()), *ETC_FILES, *DEVICES_READ]
        rules = [(path, FS_EXEC) for path in runtime]
        rules += [(path, FS_WRITE) for path in DEVICES_WRITE]
        rules += [(str(path), FS_EXEC) for path in self.read]
        rules += [(str(path), FS_WRITE) for path in self.write]
        return rules

    def check(self) -> None:
        """Refuse a grant that would hand an app the platform home (a runtime directory that
        contains it, e.g. a home inside the virtual environment)."""
        home = self.home.resolve()
        for path in readable_by_apps():
            if home.is_relative_to(path.resolve()):
                raise SandboxUnavailable(
                    f"tenant {self.tenant!r}: the platform home {home} lies inside {path}, which every app may "
                    "read; move the home (--home) out of the runtime's directories"
                )


@dataclass(frozen=True)
class Sandbox:
    """A grant under this machine's sandbox status: what the runner applies to one app."""

    status: Status
    grant: Grant

    def prepare(self) -> Confinement | None:
        """The confinement for one child (None when the operator turned the sandbox off).
        Raises :class:`SandboxUnavailable` when the kernel cannot confine the app."""
        if self.status.mode == "off":
            return None
        if not self.status.available:
            raise SandboxUnavailable(f"tenant {self.grant.tenant!r}: app not started: {self.status.warning}")
        self.grant.check()
        ports = None if self.grant.network == "any" else self.grant.connect_ports
        try:
            fd = build_ruleset(self.status.landlock_abi, self.grant.rules(), ports)
        except OSError as exc:
            raise SandboxUnavailable(
                f"tenant {self.grant.tenant!r}: app not started: the kernel refused its Landlock rules: {exc}"
            ) from exc
        return Confinement(fd, None if self.grant.network == "any" else seccomp_filter())


def app_grant(
    tenant: str,
    home: Path,
    *,
    bundle: str | Path,
    inputs: Iterable[str | Path] = (),
    writable: Iterable[str | Path] = (),
    coredms_url: str,
    broker_url: str = "",
    network: str = "store",
) -> Grant:
    """The grant of one app: its bundle and inputs to read, its run directory to write, its
    SQLite database directory (or its PostgreSQL port) and, for a stream app, the broker port."""
    write = [Path(path) for path in writable]
    db_dir = sqlite_dir(coredms_url)
    if db_dir is not None:
        if db_dir.name != Path(urlsplit(coredms_url).path).stem:
            raise SandboxUnavailable(
                f"tenant {tenant!r}: its SQLite database {unquote(urlsplit(coredms_url).path)} shares a directory "
                "with other tenants' (a home made before the sandbox); an app may only be given a directory of "
                "its own tenant: remove and add the tenant again, or use a new home"
            )
        write.append(db_dir)
    ports: list[int] = []
    if network == "store":
        ports = [*url_ports(coredms_url), *url_ports(broker_url)]
    return Grant(
        tenant,
        home,
        read=(Path(bundle), *(Path(path) for path in inputs)),
        write=tuple(write),
        connect_ports=tuple(dict.fromkeys(ports)),
        network=network,
    )


def sqlite_dir(coredms_url: str) -> Path | None:
    """The directory of a tenant's SQLite database (``sqlite:///PATH``); None for other URLs."""
    parts = urlsplit(coredms_url)
    if parts.scheme != "sqlite":
        return None
    return Path(unquote(parts.path)).parent


def url_ports(url: str) -> list[int]:
    """Every TCP port a store or broker URL names (multi-host URLs too, ``h1:5432,h2:5433``, and
    a broker cluster's list of URLs, ``nats://h1:4222,nats://h2:4223``)."""
    if not url:
        return []
    items = url.split(",")
    if any("://" in item for item in items[1:]):
        return [port for item in items for port in url_ports(item)]
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme)
    if default is None:
        return []
    hosts = parts.netloc.rpartition("@")[2]
    ports = []
    for host in hosts.split(","):
        _, colon, port = host.rpartition(":") if not host.endswith("]") else ("", "", "")
        ports.append(int(port) if colon and port.isdigit() else default)
    return ports


def readable_by_apps() -> list[Path]:
    """The directories every tenant app may read (the runtime): nothing secret may lie in them."""
    return [Path(path) for path in [*RUNTIME_DIRS, *sorted(_python_dirs()), *ETC_FILES]]


def _python_dirs() -> set[str]:
    """The interpreter's installation, the virtual environment and the ``mysimbdp`` package's
    import root (``src/`` of an editable install, else site-packages)."""
    package_root = Path(mysimbdp.__file__).resolve().parent.parent
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, str(package_root)}
    dirs.add(str(Path(sys.executable).resolve().parent.parent))
    return dirs
