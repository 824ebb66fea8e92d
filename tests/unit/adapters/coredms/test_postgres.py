"""The PostgreSQL COPY text: the one-pass fast path writes exactly what escaping each value does."""

from __future__ import annotations

import pytest

from mysimbdp.adapters.coredms.postgres import _copy_chunks, _escape
from mysimbdp.domain.keys import record_key, record_keys


def _escaped_one_by_one(records: list[tuple[str, bytes]], source: str | None) -> bytes:
    tail = b"" if source is None else b"\t" + _escape(source.encode())
    return b"".join(_escape(key.encode()) + b"\t" + _escape(doc) + tail + b"\n" for key, doc in records)


CASES = {
    "plain": [('["1"]', b'{"a":1}'), ('["2"]', b'{"a":"x"}')],
    "backslashes": [('["a\\\\b"]', b'{"q":"say \\"hi\\"","p":"C:\\\\x"}'), ("k", b"{}")],
    "tab-in-key": [("a\tb", b"{}"), ("c", b"{}")],
    "newline-in-key": [("a\nb", b"{}")],
    "raw-whitespace-in-json": [("k", b'{"a":\t1,\r\n"b":2}')],
    "unicode": [('["ä"]', '{"v":"żółw ✓"}'.encode())],
}


@pytest.mark.parametrize("source", [None, "f_01", "odd\\source\tname"])
@pytest.mark.parametrize("records", list(CASES.values()), ids=list(CASES))
def test_copy_text_equals_escaping_each_value(records: list[tuple[str, bytes]], source: str | None) -> None:
    assert b"".join(_copy_chunks(records, source)) == _escaped_one_by_one(records, source)


@pytest.mark.parametrize("key_fields", [[], ["id"], ["id", "site"]])
def test_keys_of_a_block_are_the_keys_of_each_document(key_fields: list[str]) -> None:
    docs = [{"id": 1, "site": "a"}, {"id": "2", "site": None}, {"id": 3.5, "site": "ü"}]
    lines = [2, 3, 7]
    expected = [record_key(doc, key_fields, "ab" * 32, line) for doc, line in zip(docs, lines, strict=True)]
    assert record_keys(docs, key_fields, "ab" * 32, lines) == expected
