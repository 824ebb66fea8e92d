"""Whether a staged file is ingested in one run or split into chunks (micro-batches).

A pure decision from the file's size and format and the profile's ``big_files`` section; the
batch ingest manager records the decision and its reason with the file
(``services.chunked``). Chunk boundaries themselves are found by ``adapters.chunker``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.profile import BigFiles

CHUNKABLE = frozenset({FileFormat.CSV, FileFormat.JSONL, FileFormat.PARQUET})  # Parquet: by row groups


@dataclass(frozen=True, slots=True)
class ChunkDecision:
    chunked: bool
    reason: str
    chunk_bytes: int = 0


def decide_chunking(size_bytes: int, fmt: FileFormat, rules: BigFiles) -> ChunkDecision:
    """Chunk when the file is over ``threshold_bytes`` or would take longer than ``max_run_s``
    at ``bandwidth_bytes_per_s``; never a JSON array (it has no line boundaries)."""
    mb = size_bytes / 1e6
    expected_s = size_bytes / rules.bandwidth_bytes_per_s
    why: list[str] = []
    if size_bytes > rules.threshold_bytes:
        why.append(f"size {mb:.1f} MB is over big_files.threshold_bytes ({rules.threshold_bytes / 1e6:.1f} MB)")
    if expected_s > rules.max_run_s:
        why.append(
            f"expected run {expected_s:.0f} s at big_files.bandwidth_bytes_per_s "
            f"({rules.bandwidth_bytes_per_s / 1e6:.1f} MB/s) is over big_files.max_run_s ({rules.max_run_s:.0f} s)"
        )
    if not why:
        return ChunkDecision(False, f"size {mb:.1f} MB, expected run {expected_s:.0f} s: one run")
    if fmt not in CHUNKABLE:
        return ChunkDecision(False, "; ".join(why) + f", but a {fmt} file cannot be split: one run")
    if size_bytes <= rules.chunk_bytes:
        return ChunkDecision(False, "; ".join(why) + f", but it fits in one chunk of {rules.chunk_bytes} bytes")
    chunks = -(-size_bytes // rules.chunk_bytes)
    reason = "; ".join(why) + f": about {chunks} chunks of {rules.chunk_bytes / 1e6:.1f} MB"
    return ChunkDecision(True, reason, rules.chunk_bytes)
