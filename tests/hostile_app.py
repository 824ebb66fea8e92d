"""A hostile tenant app: it tries what a tenant's code must never reach, and reports what it reached.

One probe is ``(kind, target)``; its result is a document ``{probe, target, reached, detail}``.

- ``python hostile_app.py batch``: a clientbatchingestapp (the SDK's ``run_batch``); each input
  row ``{probe, target}`` is one probe, its result the stored document; a row with
  ``quarantine_first`` is rejected (quarantined) on its first run and probes when replayed;
- ``python hostile_app.py stream``: a clientstreamingestapp; each message's data is one probe;
- ``python hostile_app.py direct PROBES_JSON``: the probes of a JSON list, results printed as JSON.

The target ``parent`` stands for the process that started the app (the platform): its pid for
``signal``, its ``/proc/<pid>/environ`` for ``environ``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any


def _pid(target: str) -> int:
    return os.getppid() if target == "parent" else int(target)


def _read(path: str) -> str:
    with open(path, "rb") as fh:
        return f"read {len(fh.read(65536))} bytes"


def _environ(target: str) -> str:
    return _read(f"/proc/{_pid(target)}/environ")


def _list(path: str) -> str:
    return f"{len(os.listdir(path))} entries"


def _write(path: str) -> str:
    with open(path, "ab") as fh:
        fh.write(b"owned by a hostile app\n")
    return "written"


def _signal(target: str) -> str:
    os.kill(_pid(target), signal.SIGCONT)  # harmless to the receiver, but a signal all the same
    return "signalled"


def _tcp(address: str) -> str:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=3):
        return "connected"


def _unix(path: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(path)
    return "connected"


def _udp(address: str) -> str:
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"exfiltrated", (host, int(port)))
    return "sent"


def _setuid(target: str) -> str:
    """Become another user (needs CAP_SETUID): tried in a child, so the app itself stays as it is."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(int(target))
        except OSError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise PermissionError("setuid refused")
    return "became another user"


PROBES: dict[str, Callable[[str], str]] = {
    "read": _read,
    "environ": _environ,
    "list": _list,
    "write": _write,
    "signal": _signal,
    "tcp": _tcp,
    "unix": _unix,
    "udp": _udp,
    "setuid": _setuid,
}


def probe(kind: str, target: str) -> dict[str, Any]:
    try:
        detail = PROBES[kind](target)
    except OSError as exc:
        return {"probe": kind, "target": target, "reached": False, "detail": f"{type(exc).__name__}: {exc}"}
    return {"probe": kind, "target": target, "reached": True, "detail": detail}


def _from_record(record: dict[str, Any]) -> dict[str, Any]:
    if record.get("quarantine_first") and "MYSIMBDP_LINE_MAP" not in os.environ:  # not a replay yet
        from mysimbdp import sdk

        raise sdk.Reject("held for the quarantine replay, where it probes")
    return probe(str(record["probe"]), str(record["target"]))


def main(argv: list[str]) -> None:
    mode = argv[1] if len(argv) > 1 else "batch"
    if mode == "direct":
        with open(argv[2], encoding="utf-8") as fh:
            probes = json.load(fh)
        print(json.dumps([probe(kind, target) for kind, target in probes]))
        return
    from mysimbdp import sdk

    if mode == "stream":
        sdk.run_stream(_from_record)
    sdk.run_batch(_from_record)


if __name__ == "__main__":
    main(sys.argv)
