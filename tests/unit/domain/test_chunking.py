"""The big-file decision: chunk by size or by expected run time; never a JSON array."""

from __future__ import annotations

import pytest

from mysimbdp.domain.chunking import decide_chunking
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.profile import BigFiles

MB = 1024 * 1024
RULES = BigFiles(threshold_bytes=100 * MB, chunk_bytes=10 * MB, bandwidth_bytes_per_s=1 * MB, max_run_s=300)


def test_a_small_quick_file_is_one_run() -> None:
    decision = decide_chunking(50 * MB, FileFormat.CSV, BigFiles())
    assert not decision.chunked
    assert "one run" in decision.reason


def test_a_file_over_the_threshold_is_chunked_and_the_reason_names_the_rule_and_value() -> None:
    decision = decide_chunking(200 * MB, FileFormat.CSV, RULES.model_copy(update={"max_run_s": 10_000}))
    assert decision.chunked
    assert decision.chunk_bytes == 10 * MB
    assert "big_files.threshold_bytes" in decision.reason
    assert "209.7 MB" in decision.reason  # the file's size
    assert "about 20 chunks" in decision.reason


def test_a_file_under_the_threshold_but_too_slow_for_the_bandwidth_is_chunked() -> None:
    decision = decide_chunking(60 * MB, FileFormat.JSONL, RULES)  # about 63 s at 1 MB/s: under 300 s
    assert not decision.chunked
    slow = decide_chunking(80 * MB, FileFormat.JSONL, RULES.model_copy(update={"bandwidth_bytes_per_s": MB // 8}))
    assert slow.chunked
    assert "big_files.max_run_s" in slow.reason
    assert "threshold" not in slow.reason


@pytest.mark.parametrize("fmt", [FileFormat.JSON])
def test_a_json_array_is_never_chunked_and_the_reason_says_why(fmt: FileFormat) -> None:
    decision = decide_chunking(500 * MB, fmt, RULES)
    assert not decision.chunked
    assert "cannot be split" in decision.reason


def test_a_file_that_fits_in_one_chunk_is_not_split() -> None:
    rules = RULES.model_copy(update={"threshold_bytes": MB, "chunk_bytes": 64 * MB})
    decision = decide_chunking(2 * MB, FileFormat.CSV, rules)
    assert not decision.chunked
    assert "fits in one chunk" in decision.reason
