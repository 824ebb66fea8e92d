"""How a scan's process ended becomes the file's facts or the rule it is rejected by (pure)."""

from __future__ import annotations

import signal

import pytest

from mysimbdp.adapters.files.scanjob import (
    SCAN_CRASHED,
    SCAN_OUT_OF_MEMORY,
    SCAN_TIMEOUT,
    ScanFailure,
    ScanLimits,
    result_of,
)
from mysimbdp.adapters.process.runner import Outcome
from mysimbdp.domain.facts import FileFacts, facts_from_json, facts_to_json
from mysimbdp.domain.formats import FileFormat

LIMITS = ScanLimits(timeout_s=3.0, memory_bytes=256 * 2**20)
FACTS = FileFacts(
    name="a.jsonl",
    size_bytes=10,
    sha256="ab" * 32,
    format=FileFormat.JSONL,
    is_binary=False,
    utf8_error=None,
    has_bom=False,
    max_line_bytes=9,
    longest_line=1,
    columns=["name"],
    rows_total=2,
    rows_bad=1,
    bad_by_rule={"name.pattern": 1},
    samples=("line 2: name: 'x' does not match",),
    unreadable=None,
)


def _outcome(
    exit_code: int | None = 0, sig: int | None = None, timed_out: bool = False, out: str = "", err: str = ""
) -> Outcome:
    return Outcome(exit_code, sig, timed_out, 1.0, 0, out, err, len(out), len(err), LIMITS.timeout_s)


def test_facts_survive_the_trip_through_the_pipe() -> None:
    """What the child prints is what the parent reads back."""
    assert facts_from_json(facts_to_json(FACTS)) == FACTS
    assert result_of(_outcome(out=facts_to_json(FACTS).decode()), LIMITS) == FACTS


@pytest.mark.parametrize(
    ("outcome", "rule", "says"),
    [
        (_outcome(None, signal.SIGTERM, timed_out=True), SCAN_TIMEOUT, "longer than the limit of 3 s"),
        (_outcome(None, signal.SIGXCPU), SCAN_TIMEOUT, "longer than the limit of 3 s"),
        (_outcome(3, err="MemoryError: the scan ran out of its memory limit\n"), SCAN_OUT_OF_MEMORY, "256 MiB"),
        (_outcome(None, signal.SIGABRT, err="terminate called after std::bad_alloc"), SCAN_OUT_OF_MEMORY, "256 MiB"),
        (_outcome(None, signal.SIGSEGV), SCAN_CRASHED, "killed by SIGSEGV"),
        (
            _outcome(1, err="Traceback ...\nRecursionError: maximum recursion depth exceeded\n"),
            SCAN_CRASHED,
            "RecursionError",
        ),
        (_outcome(0, out="not json"), SCAN_CRASHED, "could not be read"),
    ],
)
def test_a_scan_without_facts_names_its_rule_and_what_happened(outcome: Outcome, rule: str, says: str) -> None:
    """Timeout (wall clock or CPU), memory and crash each map to their rule, with the value
    (the limit, the signal, the last error line) and a remedy."""
    failure = result_of(outcome, LIMITS)
    assert isinstance(failure, ScanFailure)
    assert failure.rule == rule and says in failure.value and failure.remedy


def test_the_limits_of_a_scan() -> None:
    """The process gets the wall clock, a CPU limit just after it, the memory, and no file writes."""
    limits = ScanLimits(timeout_s=2.5, memory_bytes=2**30).limits()
    assert (limits.timeout_s, limits.cpu_s, limits.memory_bytes, limits.file_size_bytes) == (2.5, 4, 2**30, 1)


def test_the_scan_child_imports_no_profile_models_runner_or_logging() -> None:
    """The scan child's start is the cost of every fetched file: it loads only the scanner."""
    import subprocess
    import sys

    probe = (
        "import sys, mysimbdp.adapters.files.scanchild as child; "
        "print(sorted(m for m in ('pydantic', 'structlog', 'mysimbdp.domain.profile', "
        "'mysimbdp.adapters.process.runner', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
