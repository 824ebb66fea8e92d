"""formats/compression: magic bytes, names, and the bounded stream decompression."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from collections.abc import Callable

import pytest
from backports import zstd

from mysimbdp.formats.compression import (
    Compression,
    Decompressed,
    DecompressError,
    decompress,
    detect,
    plain_name,
    unsupported,
)

DATA = b"id,v\n" + b"".join(b"%d,%d\n" % (n, n % 7) for n in range(50_000))
PACK: dict[Compression, Callable[[bytes], bytes]] = {
    Compression.GZIP: gzip.compress,
    Compression.BZIP2: bz2.compress,
    Compression.ZSTD: zstd.compress,
}


def _run(
    sent: bytes, kind: Compression, *, max_bytes: int = 10**9, max_ratio: float = 1000.0
) -> tuple[Decompressed, bytes]:
    out = io.BytesIO()
    done = decompress(io.BytesIO(sent), out, kind, compressed_size=len(sent), max_bytes=max_bytes, max_ratio=max_ratio)
    return done, out.getvalue()


@pytest.mark.parametrize("kind", list(Compression))
def test_each_compression_is_told_by_its_magic_and_round_trips(kind: Compression) -> None:
    sent = PACK[kind](DATA)
    assert detect(sent[:8]) is kind
    done, plain = _run(sent, kind)
    assert plain == DATA and (done.bytes_in, done.bytes_out) == (len(sent), len(DATA))


@pytest.mark.parametrize("kind", list(Compression))
def test_concatenated_members_are_read_one_after_another(kind: Compression) -> None:
    _, plain = _run(PACK[kind](DATA) + PACK[kind](b"last,1\n"), kind)
    assert plain == DATA + b"last,1\n"


def test_plain_text_and_unsupported_magic() -> None:
    assert detect(b"id,v\n1,2") is None and unsupported(b"id,v\n1,2") is None
    assert unsupported(lzma.compress(b"x")[:8]) == "xz" and unsupported(b"PK\x03\x04rest") == "zip"


@pytest.mark.parametrize(
    ("name", "plain"),
    [("r.csv.gz", "r.csv"), ("r.jsonl.ZST", "r.jsonl"), ("r.json.bz2", "r.json"), ("r.csv", "r.csv"), (".gz", ".gz")],
)
def test_plain_name_drops_one_compression_suffix(name: str, plain: str) -> None:
    assert plain_name(name) == plain


@pytest.mark.parametrize("kind", list(Compression))
def test_a_bomb_stops_at_the_ratio_before_writing_past_it(kind: Compression) -> None:
    sent = PACK[kind](b"\0" * 30_000_000)
    out = io.BytesIO()
    with pytest.raises(DecompressError) as caught:
        decompress(io.BytesIO(sent), out, kind, compressed_size=len(sent), max_bytes=10**9, max_ratio=100.0)
    assert caught.value.rule == "expansion_ratio" and f"{len(sent)} compressed bytes" in caught.value.value
    assert len(out.getvalue()) <= 100 * len(sent)


def test_the_uncompressed_size_limit_stops_first_when_lower() -> None:
    with pytest.raises(DecompressError) as caught:
        _run(gzip.compress(DATA), Compression.GZIP, max_bytes=1000)
    assert caught.value.rule == "uncompressed_size" and "1000 bytes" in caught.value.value


@pytest.mark.parametrize("kind", list(Compression))
def test_a_truncated_stream_is_rejected(kind: Compression) -> None:
    sent = PACK[kind](DATA)
    with pytest.raises(DecompressError) as caught:
        _run(sent[: len(sent) // 2], kind)
    assert caught.value.rule == "compression" and "truncated" in caught.value.value


@pytest.mark.parametrize("kind", list(Compression))
def test_a_corrupt_stream_is_rejected(kind: Compression) -> None:
    sent = bytearray(PACK[kind](DATA))
    sent[20:60] = b"\xa5" * 40
    with pytest.raises(DecompressError) as caught:
        _run(bytes(sent), kind)
    assert caught.value.rule == "compression"


def test_garbage_after_the_end_is_rejected() -> None:
    with pytest.raises(DecompressError) as caught:
        _run(gzip.compress(DATA) + b"not gzip at all", Compression.GZIP)
    assert caught.value.rule == "compression" and "after the end" in caught.value.value
