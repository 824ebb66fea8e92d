"""The message envelope: what a POST body may hold, and the batch that travels the broker."""

from __future__ import annotations

import orjson
import pytest

from mysimbdp.domain.envelope import Envelope, MessageInvalid, batch_id, decode_batch, encode_batch, parse_post
from tests.helpers import ROOT


def test_one_object_an_array_and_ndjson_give_envelopes() -> None:
    assert [e.data for e in parse_post(b'{"a": 1}', ndjson=False)] == [{"a": 1}]
    assert [e.data for e in parse_post(b'[{"a": 1}, {"a": 2}]', ndjson=False)] == [{"a": 1}, {"a": 2}]
    assert [e.data for e in parse_post(b'{"a": 1}\n\n{"a": 2}\n', ndjson=True)] == [{"a": 1}, {"a": 2}]


def test_envelopes_keep_their_id_and_bare_documents_get_a_time_ordered_one() -> None:
    got = parse_post(
        b'[{"id": "o-1", "ts": "2026-11-29T10:00:00Z", "data": {"x": 1}}, {"x": 2}, {"id": 7, "data": {}}]',
        ndjson=False,
    )
    assert got[0] == Envelope("o-1", {"x": 1}, "2026-11-29T10:00:00Z")
    assert got[1].id.startswith("m") and got[1].data == {"x": 2}
    assert got[2].id == "7"
    first, second = parse_post(b'{"x": 1}\n{"x": 2}', ndjson=True)
    assert first.id < second.id or first.id[:13] == second.id[:13]


def test_a_document_with_a_data_field_and_more_is_a_bare_document() -> None:
    (envelope,) = parse_post(b'{"data": 1, "user": "u"}', ndjson=False)
    assert envelope.data == {"data": 1, "user": "u"}


@pytest.mark.parametrize(
    ("body", "ndjson", "line", "reason"),
    [
        (b'{"a": 1}\n{"a": 2}\n{"a": ', True, 3, "not valid JSON"),
        (b'[{"a": 1},\n {"a": 2},\n oops]', False, 3, "not valid JSON"),
        (b"[1, 2]", False, 1, "expected a JSON object, got a number"),
        (b'{"a": 1}\n"text"', True, 2, "expected a JSON object, got a string"),
        (b'{"id": "x", "data": [1]}', False, 1, "'data' must be a JSON object, got an array"),
        (b'{"id": true, "data": {}}', False, 1, "'id' must be a string or an integer"),
        (b'{"id": "", "data": {}}', False, 1, "'id' must be 1-200 characters"),
    ],
)
def test_bad_bodies_name_the_line_and_the_rule(body: bytes, ndjson: bool, line: int, reason: str) -> None:
    with pytest.raises(MessageInvalid, match=reason) as caught:
        parse_post(body, ndjson=ndjson)
    assert caught.value.line == line


@pytest.mark.parametrize("body", [b"[]", b"", b"\n\n"])
def test_an_empty_batch_is_invalid(body: bytes) -> None:
    with pytest.raises(MessageInvalid):
        parse_post(body, ndjson=body != b"[]")


def test_a_batch_round_trips_through_the_broker_format() -> None:
    envelopes = [Envelope("a", {"x": 1}, "t"), Envelope("b", {"y": [1, 2]})]
    body = encode_batch("acme", "clicks", envelopes, sent_at=12.5)
    assert orjson.loads(body)["tenant"] == "acme"
    batch = decode_batch(body, "unused")
    assert batch.envelopes == envelopes and batch.sent_at == 12.5
    assert batch_id(envelopes) == batch_id(list(envelopes)) != batch_id(envelopes[:1])


def test_a_tenant_may_publish_one_envelope_or_one_bare_document() -> None:
    assert decode_batch(b'{"id": "e1", "data": {"v": 1}}', "fallback").envelopes == [Envelope("e1", {"v": 1})]
    assert decode_batch(b'{"v": 1}', "nats-seq-9").envelopes == [Envelope("nats-seq-9", {"v": 1})]
    with pytest.raises(MessageInvalid, match="not valid JSON"):
        decode_batch(b"{oops", "x")
    with pytest.raises(MessageInvalid, match="envelope has no 'id'"):
        decode_batch(b'{"v": 1, "records": [{"data": {}}]}', "x")


def test_the_documented_json_schema_names_the_envelope_fields_of_the_code() -> None:

    from mysimbdp.domain.envelope import ENVELOPE_KEYS

    schema = orjson.loads((ROOT / "docs" / "ingestmessage.schema.json").read_bytes())
    assert set(schema["$defs"]["envelope"]["properties"]) == ENVELOPE_KEYS
    assert schema["$defs"]["brokerBatch"]["properties"]["v"]["const"] == 1
