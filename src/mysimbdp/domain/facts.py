"""What a file's scan found (:class:`FileFacts`): a leaf module, and its JSON form.

The scan runs in a child process of its own (:mod:`mysimbdp.adapters.files.scanchild`) that
prints these facts as JSON; :mod:`mysimbdp.domain.filecheck` checks them against the profile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import orjson

from mysimbdp.domain.formats import FileFormat

__all__ = ["FileFacts", "facts_from_json", "facts_to_json"]


@dataclass(frozen=True)
class FileFacts:
    """What scanning a file found; the input of ``check_file``."""

    name: str
    size_bytes: int
    sha256: str
    format: FileFormat | None  # from the extension; None if unknown
    is_binary: bool  # NUL bytes or mostly control characters
    utf8_error: str | None  # e.g. "invalid UTF-8 at byte 1234"
    has_bom: bool
    max_line_bytes: int  # the longest line's length in bytes, without its line end
    longest_line: int  # its 1-based line number
    columns: list[str] | None
    rows_total: int
    rows_bad: int
    bad_by_rule: dict[str, int]  # "ragged", "parse", "line_length", "<field>.<check>"
    samples: tuple[str, ...]  # up to 5 bad-row examples "line 12: <reason>"
    unreadable: str | None  # why the row pass failed (FileUnreadable message)


def facts_to_json(facts: FileFacts) -> bytes:
    return orjson.dumps(asdict(facts))


def facts_from_json(text: str | bytes) -> FileFacts:
    """The inverse of :func:`facts_to_json`; ``ValueError``/``KeyError``/``TypeError`` on anything else."""
    doc: dict[str, Any] = orjson.loads(text)
    doc["format"] = FileFormat(doc["format"]) if doc["format"] is not None else None
    doc["samples"] = tuple(doc["samples"])
    return FileFacts(**doc)
