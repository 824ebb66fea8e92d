"""The decompress child's confinement, on this machine's kernel: what fetchdata gives it
(``decompress_grant``: read the claimed file, write only its output, connect nowhere, in the
Landlock + seccomp sandbox; ``decompress_limits``: address space, CPU, file size, open files)
refuses every reach beyond that, and the same probe reaches its target with the protection
off, so each refusal is the protection's and not the probe failing anyway.

Two probes. The real child (``python -m mysimbdp.adapters.files.decompresschild``) handed an
output other than the one it was granted. And a probe program in the very same confinement,
standing for a child whose decompressor a crafted file took over (zlib, bzip2 and zstd are C):
it tries to read the meta store, another tenant's staged file and the platform's environment,
to write into staging beside its output, to connect to a port, to map more memory than its
limit and to write its output past the file size limit."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from mysimbdp.adapters.files.decompress import Unpacked, decompress_contained, decompress_grant, decompress_limits
from mysimbdp.adapters.files.scanjob import ScanLimits
from mysimbdp.adapters.process.runner import Limits, Outcome, build_env, run_sync
from mysimbdp.adapters.process.sandbox import Sandbox, probe
from mysimbdp.formats.compression import Compression

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PLAIN = b"id,value\n" + b"".join(b"%d,%d\n" % (n, n * n) for n in range(2000))
MAX_BYTES = 1024 * 1024  # the profile's max_uncompressed_bytes here: the kernel's file size limit is 1 MiB + 1
LIMITS = ScanLimits(timeout_s=30.0, memory_bytes=256 * 2**20)
OVER_MEMORY = 320 * 2**20  # more address space than LIMITS gives

PROBE = r"""
import json, mmap, os, socket, sys

def read(target):
    with open(target, "rb") as fh:
        return f"read {len(fh.read(4096))} bytes"

def write(target):
    with open(target, "ab") as fh:
        fh.write(b"written by the decompress child\n")
    return "written"

def grow(target):  # the output past the file size limit
    path, size = target.rsplit(":", 1)
    with open(path, "r+b") as fh:
        fh.truncate(0)
        fh.write(b"x" * int(size))
    return f"{size} bytes written"

def tcp(target):
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3):
        return "connected"

def memory(target):
    with mmap.mmap(-1, int(target)):
        return f"mapped {target} bytes"

results = []
for kind, target in json.loads(sys.stdin.read()):
    try:
        detail, reached = globals()[kind](target), True
    except (OSError, MemoryError) as exc:
        detail, reached = f"{type(exc).__name__}: {exc}", False
    results.append({"probe": kind, "target": target, "reached": reached, "detail": detail})
print(json.dumps(results))
"""


@pytest.fixture(autouse=True)
def _kernel_sandbox() -> None:
    """These tests need the kernel's sandbox; a machine without it skips them (fails under CI)."""
    status = probe("on")
    if not status.available:
        if IN_CI:
            pytest.fail(f"the CI machine must offer the sandbox: {status.problem}")
        pytest.skip(status.problem)


class Fetch:
    """A home as fetchdata leaves it for the child: tenant acme's claimed ``x.csv.gz`` in its
    inbox and the empty output in staging, beside the meta store and another tenant's file."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        for path, content in {
            "meta.db": b"the meta store",
            "staging/other/f1.csv": b"a\n1\n",  # another tenant's staged file
            "staging/acme/f0.csv": b"id,value\n0,0\n",  # an earlier staged file of this tenant
        }.items():
            (self.home / path).parent.mkdir(parents=True, exist_ok=True)
            (self.home / path).write_bytes(content)
        self.claimed = self.home / "inbox" / "acme" / ".fetching-o1-f1-x.csv.gz"
        self.claimed.parent.mkdir(parents=True)
        self.claimed.write_bytes(gzip.compress(PLAIN))
        self.out = self.home / "staging" / "acme" / self.claimed.name
        self.out.touch()  # fetchdata creates it empty, so that the sandbox can grant it
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)

    def sandbox(self, mode: str) -> Sandbox:
        return Sandbox(probe(mode), decompress_grant("acme", self.home, self.claimed, self.out))

    def forbidden(self) -> list[tuple[str, str]]:
        port = self.listener.getsockname()[1]
        return [
            ("read", str(self.home / "meta.db")),
            ("read", str(self.home / "staging" / "other" / "f1.csv")),
            ("read", f"/proc/{os.getpid()}/environ"),  # the platform's environment: its keys and URLs
            ("write", str(self.home / "staging" / "acme" / "f0.csv")),  # a staged file beside its output
            ("write", str(self.home / "staging" / "acme" / "f9.csv")),  # a new one there
            ("write", str(self.claimed)),  # the file as sent
            ("tcp", f"127.0.0.1:{port}"),
            ("memory", str(OVER_MEMORY)),
            ("grow", f"{self.out}:{MAX_BYTES + 2}"),
        ]

    def granted(self) -> list[tuple[str, str]]:
        return [("read", str(self.claimed)), ("grow", f"{self.out}:{MAX_BYTES}")]


@pytest.fixture
def fetch(tmp_path: Path) -> Iterator[Fetch]:
    made = Fetch(tmp_path)
    try:
        yield made
    finally:
        made.listener.close()


def _run(fetch: Fetch, argv: list[str], stdin: bytes, *, protected: bool) -> Outcome:
    """``argv`` in the decompress child's confinement, or (``protected`` False) with the sandbox
    off and the memory and file size limits lifted."""
    limits: Limits = decompress_limits(LIMITS, MAX_BYTES)
    if not protected:
        limits = dataclasses.replace(limits, memory_bytes=None, file_size_bytes=None)
    return run_sync(
        argv,
        env=build_env({}, os.environ),
        cwd=fetch.out.parent,
        limits=limits,
        sandbox=fetch.sandbox("on" if protected else "off"),
        stdin_bytes=stdin,
    )


def _probe(fetch: Fetch, probes: list[tuple[str, str]], *, protected: bool) -> dict[tuple[str, str], bool]:
    outcome = _run(fetch, [sys.executable, "-c", PROBE], json.dumps(probes).encode(), protected=protected)
    assert outcome.ok, outcome.stderr_tail
    return {(r["probe"], r["target"]): r["reached"] for r in json.loads(outcome.stdout_tail)}


def test_the_real_child_decompresses_inside_its_sandbox(fetch: Fetch) -> None:
    """What it is granted is enough: the claimed file in, the plain bytes out."""
    result = decompress_contained(
        fetch.claimed,
        fetch.out,
        Compression.GZIP,
        max_bytes=MAX_BYTES,
        max_ratio=100.0,
        limits=LIMITS,
        sandbox=fetch.sandbox("on"),
        parent_env=os.environ,
    )
    assert isinstance(result, Unpacked), result
    assert fetch.out.read_bytes() == PLAIN and result.bytes_out == len(PLAIN)


def test_the_real_child_cannot_write_another_file_than_its_output(fetch: Fetch) -> None:
    """The child asked to decompress into an earlier staged file of the tenant, not the output it
    was granted: the kernel refuses the open and the file stays as it was; with the sandbox off
    the same request overwrites it."""
    victim = fetch.home / "staging" / "acme" / "f0.csv"
    before = victim.read_bytes()
    request = {
        "path": str(fetch.claimed),
        "out": str(victim),
        "compression": "gzip",
        "size": fetch.claimed.stat().st_size,
        "max_bytes": MAX_BYTES,
        "max_ratio": 100.0,
    }
    argv = [sys.executable, "-P", "-m", "mysimbdp.adapters.files.decompresschild"]
    refused = _run(fetch, argv, orjson.dumps(request), protected=True)
    assert not refused.ok and "PermissionError" in refused.stderr_tail, refused
    assert victim.read_bytes() == before
    unprotected = _run(fetch, argv, orjson.dumps(request), protected=False)
    assert unprotected.ok and orjson.loads(unprotected.stdout_tail)["ok"] is True, unprotected
    assert victim.read_bytes() == PLAIN


def test_a_taken_over_child_reaches_nothing_beyond_its_grant_and_everything_without_it(fetch: Fetch) -> None:
    """Every forbidden probe is refused in the child's confinement and reaches its target with
    the sandbox off and the memory and file size limits lifted; what it is granted (its input, its
    output up to the limit) works under both."""
    forbidden = fetch.forbidden()
    assert [p for p, reached in _probe(fetch, forbidden, protected=True).items() if reached] == []
    assert [p for p, reached in _probe(fetch, forbidden, protected=False).items() if not reached] == []
    for protected in (True, False):
        assert all(_probe(fetch, fetch.granted(), protected=protected).values()), protected
