"""Compressed batch files: which compression a file's first bytes show, and its stream decompression.

A file is compressed when its magic bytes say so, whatever its name: ``readings.csv`` holding
gzip bytes is gzip. Its format comes from its name without the compression suffix
(``readings.csv.gz`` -> ``readings.csv``). gzip (``zlib``) and bzip2 (``bz2``) come from the
standard library, zstd from ``backports.zstd`` (the backport of Python 3.14's
``compression.zstd``: the same ``decompress(data, max_length)`` interface as ``bz2``, so one
loop bounds the output of all three).

:func:`decompress` copies one stream to another in bounded memory and stops *before*
writing past ``max_bytes`` or ``max_ratio`` times the compressed size: a decompression bomb
ends with :class:`DecompressError` (rule ``uncompressed_size`` or ``expansion_ratio``), as do a
corrupt or truncated stream (rule ``compression``). Concatenated members (``cat a.gz b.gz``,
several zstd frames) are read one after another, as ``gunzip`` and ``zstd -d`` do.
"""

from __future__ import annotations

import bz2
import hashlib
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePath
from typing import BinaryIO, Protocol

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

__all__ = [
    "SUFFIXES",
    "SUPPORTED",
    "Compression",
    "DecompressError",
    "Decompressed",
    "decompress",
    "detect",
    "plain_name",
    "unsupported",
]

READ_BYTES = 64 * 1024  # compressed bytes read at a time
PIECE_BYTES = 256 * 1024  # most plain bytes one decompress call may return


class Compression(StrEnum):
    GZIP = "gzip"
    BZIP2 = "bzip2"
    ZSTD = "zstd"


SUPPORTED: tuple[Compression, ...] = tuple(Compression)

_MAGIC: dict[bytes, Compression] = {
    b"\x1f\x8b": Compression.GZIP,
    b"BZh": Compression.BZIP2,
    b"\x28\xb5\x2f\xfd": Compression.ZSTD,
}
# Recognised but not decompressed: a file holding one is rejected with rule "compression".
_UNSUPPORTED: dict[bytes, str] = {
    b"\xfd7zXZ\x00": "xz",
    b"PK\x03\x04": "zip",
    b"7z\xbc\xaf\x27\x1c": "7z",
    b"\x04\x22\x4d\x18": "lz4",
    b"\x5d\x00\x00": "lzma",
}
SUFFIXES: dict[str, str] = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".bz2": "bzip2",
    ".zst": "zstd",
    ".zstd": "zstd",
    ".xz": "xz",
    ".zip": "zip",
    ".7z": "7z",
    ".lz4": "lz4",
}
HEAD_BYTES = 8  # enough for every magic above


def detect(head: bytes) -> Compression | None:
    """The supported compression whose magic ``head`` (a file's first bytes) starts with."""
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def unsupported(head: bytes) -> str | None:
    """The name of a known but unsupported compression or archive ``head`` starts with."""
    return next((kind for magic, kind in _UNSUPPORTED.items() if head.startswith(magic)), None)


def plain_name(name: str) -> str:
    """``name`` without one compression suffix: ``readings.csv.gz`` -> ``readings.csv``."""
    path = PurePath(name)
    return path.stem if path.suffix.lower() in SUFFIXES and path.stem else name


class DecompressError(Exception):
    """Why a stream was not decompressed: the rule and the value, for the rejection."""

    def __init__(self, rule: str, value: str) -> None:
        super().__init__(f"rule {rule}: {value}")
        self.rule = rule
        self.value = value


@dataclass(frozen=True)
class Decompressed:
    compression: Compression
    bytes_in: int  # the compressed bytes read (the file as sent)
    bytes_out: int  # the plain bytes written
    sha256: str  # of the compressed bytes


class _Stream(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


def _pieces(stream: _Stream, data: bytes) -> Iterator[bytes]:
    """Every plain piece ``data`` gives, at most ``PIECE_BYTES`` each (zlib keeps the input
    it did not use in ``unconsumed_tail``; bz2 and zstd keep it inside until asked again)."""
    yield stream.decompress(data, PIECE_BYTES)
    if isinstance(stream, type(zlib.decompressobj())):
        while stream.unconsumed_tail and not stream.eof:
            yield stream.decompress(stream.unconsumed_tail, PIECE_BYTES)
        return
    while not stream.eof and not getattr(stream, "needs_input", True):
        yield stream.decompress(b"", PIECE_BYTES)


_NEW: dict[Compression, Callable[[], _Stream]] = {
    Compression.GZIP: lambda: zlib.decompressobj(wbits=31),
    Compression.BZIP2: bz2.BZ2Decompressor,
    Compression.ZSTD: zstd.ZstdDecompressor,
}
_ERRORS = (zlib.error, OSError, EOFError, ValueError, zstd.ZstdError)


@dataclass
class _Budget:
    """How many plain bytes may still be written, and which limit says so."""

    compressed_size: int
    max_bytes: int
    max_ratio: float
    written: int = 0

    def take(self, piece: int) -> None:
        total = self.written + piece
        ratio_limit = int(self.max_ratio * max(self.compressed_size, 1))
        if total > self.max_bytes:
            raise DecompressError(
                "uncompressed_size",
                f"it decompresses to more than {self.max_bytes} bytes, the limit (stopped after {self.written} bytes "
                f"from {self.compressed_size} compressed bytes)",
            )
        if total > ratio_limit:
            raise DecompressError(
                "expansion_ratio",
                f"{self.compressed_size} compressed bytes decompress to more than {ratio_limit} bytes, over the "
                f"limit of {self.max_ratio:g}x (stopped after {self.written} bytes)",
            )
        self.written = total


def decompress(
    src: BinaryIO, dst: BinaryIO, kind: Compression, *, compressed_size: int, max_bytes: int, max_ratio: float
) -> Decompressed:
    """Decompress ``src`` (a ``kind`` stream of ``compressed_size`` bytes) into ``dst``; see the module doc."""
    digest = hashlib.sha256()
    budget = _Budget(compressed_size, max_bytes, max_ratio)
    stream = _NEW[kind]()
    bytes_in = 0
    started = False  # the current member has had input
    try:
        while block := src.read(READ_BYTES):
            digest.update(block)
            bytes_in += len(block)
            data = block
            while data:
                started = True
                for piece in _pieces(stream, data):
                    budget.take(len(piece))
                    dst.write(piece)
                data = b""
                if stream.eof:
                    data = stream.unused_data
                    stream = _NEW[kind]()
                    started = False
                    if data and detect(data[:HEAD_BYTES]) is None and len(data) >= HEAD_BYTES:
                        raise DecompressError(
                            "compression", f"{len(data)} bytes after the end of the {kind} stream are not {kind}"
                        )
    except _ERRORS as exc:
        raise DecompressError(
            "compression", f"the {kind} stream is corrupt at or before byte {bytes_in} ({exc})"
        ) from exc
    if started or bytes_in == 0:
        raise DecompressError(
            "compression", f"the {kind} stream is truncated: it ends after {bytes_in} bytes, before its end marker"
        )
    return Decompressed(kind, bytes_in, budget.written, digest.hexdigest())
