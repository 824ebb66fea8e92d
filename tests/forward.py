"""A TCP forwarder for multi-host tests and benches: the hosts of ``tests/netns.py`` reach a
service of the root namespace's loopback (the machine's PostgreSQL) through the bridge's address,
the only one of the root namespace they can reach."""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["Forwarder"]


class Forwarder:
    """A TCP forwarder from ``listen`` (the bridge's address) to ``target`` (a loopback service)."""

    def __init__(self, listen: str, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server((listen, 0))
        self.port = int(self.server.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.server.accept()
                far = socket.create_connection(self.target, timeout=10)
            except OSError:
                return
            far.settimeout(None)
            self._sockets += [near, far]
            for src, dst in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
