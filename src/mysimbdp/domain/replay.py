"""Quarantine replay, the pure part: what to give a batch app again, what to republish to a
stream, and how to summarise why entries are quarantined. No IO.

A batch replay input holds the original CSV header (CSV) and the quarantined rows' raw
text, one row after another; its line map says which line of the original file each of
its rows is, so the app keys and reports the row as the first time
(``$MYSIMBDP_LINE_MAP``, see ``sdk._linemap``). A JSON-array file's elements are replayed
as JSON Lines (an element's text, made compact). An entry whose raw text cannot stand for
its row (cut short when it was quarantined, empty, or holding a line break the reader
would count differently) is not replayed and says why.

A stream entry (``file_id`` ``stream:<stream>:<instance>``, reason ``message <id>: why``)
is republished as a batch holding its envelope(s) with their original ids.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from mysimbdp.domain.envelope import Envelope, MessageInvalid, batch_id, decode_batch, encode_batch
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.sources import RAW_LIMIT_CHARS, STREAM_PREFIX

MESSAGE_LEVEL = ("message ", "delivered too often")  # the SDK's reasons for a whole broker message
_VALUE_RE = re.compile(r"\bvalue (?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")
_MESSAGE_RE = re.compile(r"^message .+?: ")
_TRAILING_VALUE_RE = re.compile(r": (?:'[^']*'|\"[^\"]*\")$")  # "...: 'n/a'" as Python's errors end


@dataclass(frozen=True)
class BatchPlan:
    """One replay run of a file's quarantined rows."""

    input_format: FileFormat  # of the replay input
    text: str  # the replay input
    line_map: dict[int, int]  # line of a row in ``text`` -> its line in the original file
    skipped: tuple[tuple[int, str], ...]  # (original line, why it is not replayed)

    @property
    def lines(self) -> list[int]:
        """The original lines this input replays, in order."""
        return list(self.line_map.values())

    def line_map_json(self) -> bytes:
        return orjson.dumps({str(line): original for line, original in self.line_map.items()})


def _unreplayable(fmt: FileFormat, line: int, raw: str) -> str | None:
    if line <= 0:
        return "not a row of the file (the app wrote an unreadable reject entry)"
    if not raw.strip():
        return "its raw text is empty"
    if fmt is FileFormat.CSV and len(raw) >= RAW_LIMIT_CHARS:
        return f"its raw text may have been cut at {RAW_LIMIT_CHARS} characters when it was quarantined"
    if "\r" in raw or (fmt is FileFormat.JSONL and "\n" in raw):
        return "its raw text holds a line break that would make it another row"
    return None


def plan_batch(fmt: FileFormat, header: str | None, entries: Iterable[tuple[int, str]]) -> BatchPlan:
    """The replay input of ``entries`` (``(original line, raw text)``) of a ``fmt`` file;
    ``header`` is the CSV header line (None: the CSV file's header is unknown)."""
    # a JSON array's elements and Parquet rows (quarantined as compact JSON) replay as JSON Lines
    out_format = FileFormat.JSONL if fmt in (FileFormat.JSON, FileFormat.PARQUET) else fmt
    parts: list[str] = []
    line_map: dict[int, int] = {}
    skipped: list[tuple[int, str]] = []
    line = 1
    if fmt is FileFormat.CSV and header is not None:
        parts.append(header + "\n")
        line += header.count("\n") + 1
    for original, raw in entries:
        why = _unreplayable(fmt, original, raw)
        if why is None and fmt is FileFormat.CSV and header is None:
            why = "the original file (its CSV header) is no longer in archive/"
        text = raw
        if why is None and fmt is FileFormat.JSON:
            try:
                text = orjson.dumps(orjson.loads(raw)).decode()
            except orjson.JSONDecodeError:
                why = "its raw text is not a JSON value (it can only fail again)"
        if why is not None:
            skipped.append((original, why))
            continue
        parts.append(text + "\n")
        line_map[line] = original
        line += text.count("\n") + 1
    text = "".join(parts) if line_map else ""
    return BatchPlan(out_format, text, line_map, tuple(skipped))


@dataclass(frozen=True)
class StreamMessage:
    """A quarantined stream entry made a broker message again."""

    body: bytes
    msg_id: str  # the broker's message id: one per quarantine entry (see plan_stream)
    ids: tuple[str, ...]  # the envelope ids it carries (the records' keys)


def message_id(reason: str) -> tuple[str, str] | None:
    """``(envelope or message id, why)`` from a stream entry's reason ``message <id>: <why>``."""
    if not reason.startswith("message ") or ": " not in reason:
        return None
    key, why = reason[len("message ") :].split(": ", 1)
    return (key, why) if key else None


def plan_stream(tenant: str, stream: str, entry: tuple[str, int], raw: str, reason: str) -> StreamMessage | str:
    """The message that replays one stream entry (``entry``: its file id and line), or why
    it cannot be replayed. The broker message id is the entry's own: republishing the same
    entry again (after a crash) may be dropped by the broker as a duplicate, while the
    entry the app makes when the message fails again is another entry, with another id."""
    parsed = message_id(reason)
    if parsed is None:
        return f"its reason {reason[:80]!r} names no message id"
    key, why = parsed
    try:
        if why.startswith(MESSAGE_LEVEL):  # the whole broker message was quarantined: raw is its body
            envelopes = decode_batch(raw.encode(), key).envelopes
        else:  # one record: raw is its document
            data = orjson.loads(raw)
            if not isinstance(data, dict):
                return "its raw text is not a JSON object"
            envelopes = [Envelope(key, data)]
    except (MessageInvalid, orjson.JSONDecodeError) as exc:
        return f"the message itself is invalid ({exc}); publish it again, corrected"
    if not envelopes:
        return "the message holds no records"
    body = encode_batch(tenant, stream, envelopes)
    digest = hashlib.sha256(f"{entry[0]}\0{entry[1]}\0{batch_id(envelopes)}".encode()).hexdigest()[:32]
    return StreamMessage(body, f"replay-{digest}", tuple(e.id for e in envelopes))


def reason_kind(reason: str) -> str:
    """A reason without what varies from row to row: the message id, the value shown."""
    kind = _VALUE_RE.sub("value …", _MESSAGE_RE.sub("", reason, count=1))
    return _TRAILING_VALUE_RE.sub(": …", kind)


def summarize_reasons(reasons: Iterable[str], top: int = 3) -> list[tuple[str, int]]:
    """The ``top`` most frequent kinds of reason with their counts, most frequent first."""
    counts = Counter(map(reason_kind, reasons))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]


def stream_of(file_id: str) -> str | None:
    """The stream of a stream app's entry (``stream:<stream>:<instance>``), None for a file's."""
    if not file_id.startswith(STREAM_PREFIX):
        return None
    return file_id.split(":", 2)[1]


def released(replayed: Sequence[int], again: Iterable[int]) -> list[int]:
    """The replayed lines that did not come back as rejects: stored, already stored or
    deliberately skipped by the app, so no longer quarantined."""
    back = set(again)
    return [line for line in replayed if line not in back]
