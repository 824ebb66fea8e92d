"""Record keys: the deterministic key under which a document is stored in coredms.

Pure: the same document, key fields, file and line give the same key on every run, so a
replayed file or message lands on the keys it had (writes are insert-if-absent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from mysimbdp.domain import exactjson
from mysimbdp.errors import KeyFieldMissing

__all__ = ["LINE_DIGITS", "record_key", "record_keys"]

LINE_DIGITS = 10  # default keys zero-pad the line so that key order is file order


def record_key(doc: Mapping[str, Any], key_fields: Sequence[str], sha256: str, line: int) -> str:
    """The deterministic key of a document.

    With ``key_fields``: the canonical JSON array of their values (``'["a1",3]'``); a missing
    field raises :class:`KeyFieldMissing`. Without: ``"<sha256>:<line>"``, the line
    zero-padded so that reading back in key order gives file order.
    """
    return record_keys([doc], key_fields, sha256, [line])[0]


def record_keys(
    docs: Sequence[Mapping[str, Any]], key_fields: Sequence[str], sha256: str, lines: Sequence[int]
) -> list[str]:
    """:func:`record_key` of many documents at once (``lines[i]`` is ``docs[i]``'s line)."""
    if not key_fields:
        return [f"{sha256}:{line:0{LINE_DIGITS}d}" for line in lines]
    try:
        try:
            return _keys(orjson.dumps, docs, key_fields)
        except TypeError:  # a Decimal or an integer beyond 64 bits: its exact digits
            return _keys(exactjson.dumps, docs, key_fields)
    except KeyError as exc:
        raise KeyFieldMissing(f"key field {exc.args[0]!r} is missing from the document") from exc
    except TypeError as exc:
        raise KeyFieldMissing(f"key fields {list(key_fields)} hold a value that is not JSON: {exc}") from exc


def _keys(dumps: Callable[[Any], bytes], docs: Sequence[Mapping[str, Any]], key_fields: Sequence[str]) -> list[str]:
    if len(key_fields) == 1:
        (name,) = key_fields
        return [dumps([doc[name]]).decode() for doc in docs]
    return [dumps([doc[name] for name in key_fields]).decode() for doc in docs]
