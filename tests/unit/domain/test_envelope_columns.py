"""``decode_batch`` reads a batch column-wise: the whole-column fast path gives exactly what
the item-by-item path gives, and any record it does not accept falls back to the latter."""

from __future__ import annotations

import orjson
import pytest

from mysimbdp.domain.envelope import Envelope, MessageInvalid, decode_batch, encode_batch


def _body(records: list[object]) -> bytes:
    return orjson.dumps({"v": 1, "tenant": "acme", "stream": "s", "sent_at": 1.5, "records": records})


def test_plain_envelopes_become_columns_in_order() -> None:
    envelopes = [Envelope(f"e{n}", {"n": n}) for n in range(100)]
    batch = decode_batch(encode_batch("acme", "s", envelopes, sent_at=2.0), "-")
    assert batch.ids == [f"e{n}" for n in range(100)] and batch.data == [{"n": n} for n in range(100)]
    assert batch.envelopes == envelopes and batch.sent_at == 2.0


def test_integer_ids_ts_and_schema_are_kept_as_the_item_by_item_path_keeps_them() -> None:
    batch = decode_batch(_body([{"id": 7, "data": {}}, {"id": "b", "data": {"x": 1}, "ts": "t", "schema": 2}]), "-")
    assert batch.ids == ["7", "b"]
    assert batch.envelopes == [Envelope("7", {}), Envelope("b", {"x": 1}, "t", "2")]


def test_an_empty_batch_has_no_records() -> None:
    batch = decode_batch(_body([]), "-")
    assert batch.ids == [] and batch.data == [] and batch.envelopes == []


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"data": {}}, "envelope has no 'id'"),
        ({"id": "x", "data": {}, "extra": 1}, "a bare document has no id"),
        ({"id": "x", "data": [1]}, "'data' must be a JSON object"),
        ({"id": "", "data": {}}, "'id' must be 1-200 characters"),
        ({"id": "x" * 201, "data": {}}, "'id' must be 1-200 characters"),
        ({"id": True, "data": {}}, "'id' must be a string or an integer"),
        ("text", "expected a JSON object, got a string"),
        ([1], "expected a JSON object, got an array"),
    ],
)
def test_one_bad_record_makes_the_message_invalid_naming_the_item(record: object, reason: str) -> None:
    with pytest.raises(MessageInvalid, match=reason) as caught:
        decode_batch(_body([{"id": "ok", "data": {}}, record]), "-")
    assert caught.value.line == 2


def test_one_envelope_and_one_bare_document_are_one_record_each() -> None:
    single = decode_batch(b'{"id": "e1", "ts": "t", "data": {"v": 1}}', "-")
    assert single.ids == ["e1"] and single.envelopes == [Envelope("e1", {"v": 1}, "t")]
    bare = decode_batch(b'{"v": 1}', "nats-9")
    assert bare.ids == ["nats-9"] and bare.data == [{"v": 1}]
