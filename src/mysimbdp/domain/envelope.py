"""The message envelope (``ingestmessagestructure``) and the batch that carries envelopes
through the broker. Pure: no IO. ``docs/ingestmessage.schema.json`` is its JSON Schema.

A tenant posts one JSON object, a JSON array of them, or NDJSON (one per line). Each item
is a bare document, or an envelope ``{"id": ..., "data": {...}}`` (optionally ``"ts"``,
the event time, and ``"schema"``, a version tag). An item without an ``id`` gets a
time-ordered one; with an ``id``, posting it again stores nothing new (the id is the record
key). The platform sets ``tenant`` and ``stream`` itself, from the credentials and the URL.

On the broker one message holds a whole batch::

    {"v": 1, "tenant": "acme", "stream": "clicks", "sent_at": 1764400000.123,
     "records": [{"id": "...", "ts": "...", "data": {...}}, ...]}

A tenant publishing straight to the broker may send such a batch, one envelope, or one
bare document; :func:`decode_batch` reads all three.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from mysimbdp.domain import exactjson
from mysimbdp.domain.ids import new_id

BATCH_VERSION = 1
ID_MAX_CHARS = 200
ENVELOPE_KEYS = frozenset({"id", "data", "ts", "schema"})


class MessageInvalid(ValueError):
    """A posted body or a broker message that is not a valid message (``line``: 1-based item)."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    data: dict[str, Any]
    ts: str | None = None
    schema: str | None = None

    def to_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.id, "data": self.data}
        if self.ts is not None:
            item["ts"] = self.ts
        if self.schema is not None:
            item["schema"] = self.schema
        return item


def new_message_id() -> str:
    """A time-ordered id for an item posted without one."""
    return new_id("m")


def _envelope(item: Any, line: int, make_id: bool) -> Envelope:
    if not isinstance(item, dict):
        raise MessageInvalid(f"expected a JSON object, got {json_kind(item)}", line)
    if "data" in item and set(item) <= ENVELOPE_KEYS:
        data = item["data"]
        if not isinstance(data, dict):
            raise MessageInvalid(f"envelope 'data' must be a JSON object, got {json_kind(data)}", line)
        raw_id = item.get("id")
        if raw_id is None:
            if not make_id:
                raise MessageInvalid("envelope has no 'id'", line)
            raw_id = new_message_id()
        if not isinstance(raw_id, str | int) or isinstance(raw_id, bool):
            raise MessageInvalid(f"envelope 'id' must be a string or an integer, got {json_kind(raw_id)}", line)
        msg_id = str(raw_id)
        if not msg_id or len(msg_id) > ID_MAX_CHARS:
            raise MessageInvalid(f"envelope 'id' must be 1-{ID_MAX_CHARS} characters, got {len(msg_id)}", line)
        ts, schema = item.get("ts"), item.get("schema")
        return Envelope(msg_id, data, None if ts is None else str(ts), None if schema is None else str(schema))
    if not make_id:
        raise MessageInvalid("a bare document has no id", line)
    return Envelope(new_message_id(), item)


def parse_post(body: bytes, ndjson: bool) -> list[Envelope]:
    """The envelopes of a POST body: NDJSON when ``ndjson``, else one JSON value (an object
    or an array of objects). Raises :class:`MessageInvalid` naming the line (NDJSON) or
    the array position (1-based) of the first bad item."""
    if ndjson:
        items: list[tuple[int, Any]] = []
        for number, line in enumerate(body.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append((number, exactjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise MessageInvalid(f"not valid JSON: {exc}", number) from exc
    else:
        try:
            value = exactjson.loads(body)
        except orjson.JSONDecodeError as exc:
            at_line = body[: exc.pos].count(b"\n") + 1
            raise MessageInvalid(f"not valid JSON: {exc}", at_line) from exc
        items = list(enumerate(value, 1)) if isinstance(value, list) else [(1, value)]
    if not items:
        raise MessageInvalid("no messages: the body holds no JSON object")
    return [_envelope(item, number, make_id=True) for number, item in items]


def encode_batch(tenant: str, stream: str, envelopes: Iterable[Envelope], sent_at: float | None = None) -> bytes:
    """The broker message carrying ``envelopes``."""
    return exactjson.dumps(
        {
            "v": BATCH_VERSION,
            "tenant": tenant,
            "stream": stream,
            "sent_at": time.time() if sent_at is None else sent_at,
            "records": [e.to_json() for e in envelopes],
        }
    )


def batch_id(envelopes: Iterable[Envelope]) -> str:
    """The broker message id of a batch: the same envelopes give the same id."""
    digest = hashlib.sha256()
    for envelope in envelopes:
        digest.update(envelope.id.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Batch:
    """The records of one broker message, column-wise: ``ids[i]`` is record i's id and
    ``data[i]`` its document. No object per record: the stream loop reads the columns."""

    ids: list[str]
    data: list[dict[str, Any]]
    sent_at: float | None  # when the platform (or the tenant) published it, if known
    items: list[Any] | None = None  # the envelopes as published, when they were envelopes

    @property
    def envelopes(self) -> list[Envelope]:
        """One :class:`Envelope` per record, with its ``ts`` and ``schema``."""
        if self.items is None:
            return [Envelope(key, data) for key, data in zip(self.ids, self.data, strict=True)]
        return [_envelope(item, n, make_id=False) for n, item in enumerate(self.items, 1)]


def decode_batch(body: bytes, fallback_id: str) -> Batch:
    """The records of one broker message: a batch, one envelope, or one bare document
    (whose id is ``fallback_id``, e.g. the broker's message id). Raises :class:`MessageInvalid`."""
    try:
        value = exactjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MessageInvalid(f"not valid JSON: {exc}") from exc
    if isinstance(value, dict) and "records" in value and "v" in value:
        records = value["records"]
        if not isinstance(records, list):
            raise MessageInvalid(f"batch 'records' must be an array, got {json_kind(records)}")
        sent_at = value.get("sent_at")
        when = float(sent_at) if isinstance(sent_at, int | float) and not isinstance(sent_at, bool) else None
        return _columns(records, when)
    if isinstance(value, dict) and not ("data" in value and set(value) <= ENVELOPE_KEYS):
        return Batch([fallback_id], [value], None)
    envelope = _envelope(value, 1, make_id=False)
    return Batch([envelope.id], [envelope.data], None, [value])


def _columns(records: list[Any], sent_at: float | None) -> Batch:
    """A batch's records as columns. The usual batch (every record ``{"id": "...", "data":
    {...}}``, maybe with ``ts`` and ``schema``) is checked in a few whole-column passes that
    run in C; any other goes item by item, which names the first bad one."""
    try:
        ids = [item["id"] for item in records]
        data = [item["data"] for item in records]
    except (KeyError, TypeError):
        pass  # not all envelopes with an id: the slow way says which and why
    else:
        if _plain_envelopes(records, ids, data):
            return Batch(ids, data, sent_at, records)
    envelopes = [_envelope(item, n, make_id=False) for n, item in enumerate(records, 1)]
    return Batch([e.id for e in envelopes], [e.data for e in envelopes], sent_at, records)


def _plain_envelopes(records: list[Any], ids: list[Any], data: list[Any]) -> bool:
    """Whether what :func:`_envelope` would accept unchanged: only envelope keys (the
    records are dicts: they were indexed by name), object ``data``, string ids of 1 to
    ``ID_MAX_CHARS`` characters."""
    if not records:
        return True
    # Each record has "id" and "data" (it was indexed by them): with two keys in each on
    # average, none has more (one C pass); else each is checked against the envelope keys.
    only_envelope_keys = sum(map(len, records)) == 2 * len(records) or all(map(ENVELOPE_KEYS.issuperset, records))
    return (
        only_envelope_keys
        and set(map(type, data)) == {dict}
        and set(map(type, ids)) == {str}
        and "" not in ids
        and max(map(len, ids)) <= ID_MAX_CHARS
    )


def json_kind(value: Any) -> str:
    """How an error message names a JSON value's type ("an array", "a number", "null", ...)."""
    kinds: dict[type, str] = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "an object" if isinstance(value, dict) else kinds.get(type(value), "null")
