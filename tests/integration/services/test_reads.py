"""services.reads' exports on real SQLite and PostgreSQL: JSON Lines of whole documents are
the stored documents, each line the stored JSON text passed through (exact numbers digit for
digit), paged by keyset like every other export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mysimbdp.adapters.coredms import CoreDmsAdmin, DocumentStore, open_admin, open_store
from mysimbdp.domain import exactjson
from mysimbdp.domain.docfilter import MATCH_ALL, parse_filter
from mysimbdp.domain.readparams import BY_KEY, parse_fields, parse_sort
from mysimbdp.domain.writespec import WriteSpec
from mysimbdp.services.reads import ExportFormat, ReadQuery, export_query, iter_documents
from tests.conftest import POSTGRES_URL

BIG = "123456789012345678901234567890"  # beyond 64 bits
DECIMAL = "0.12345678901234567890123"  # more digits than a double holds
N = 2500  # three keyset pages of services.reads.EXPORT_PAGE_ROWS
INDEXED = WriteSpec(indexes=(("n",),))


@pytest.fixture
def store(backend: str, tmp_path: Path, pg_prefix: str) -> Iterator[DocumentStore]:
    url = f"sqlite:///{tmp_path / 'coredms'}" if backend == "sqlite" else POSTGRES_URL
    admin: CoreDmsAdmin = open_admin(url, pg_prefix=pg_prefix)
    handle = open_store(admin.provision("acme"))
    try:
        yield handle
    finally:
        handle.close()
        admin.close()


def _text(i: int) -> bytes:
    """Document ``i`` as a writer might send it: spaced unlike orjson, exact numbers in it."""
    return (
        f'{{"i" : {i}, "n": {i % 7}, "big": -{BIG}{i}, "dec": {DECIMAL}{i},'
        f' "s": "caf\\u00e9 \\"{i}\\"\\nline", "a": [1.50, null, true]}}'
    ).encode()


def _written(store: DocumentStore) -> dict[str, bytes]:
    docs = {f"k{i:05d}": _text(i) for i in range(N)}
    store.write("things", list(docs.items()), source="f1", spec=INDEXED)
    return docs


def _query(**parts: object) -> ReadQuery:
    where, sort, fields = parts.get("where", MATCH_ALL), parts.get("sort", BY_KEY), parts.get("fields", ())
    return ReadQuery("acme", "things", where, sort, fields)  # type: ignore[arg-type]


def _lines(store: DocumentStore, query: ReadQuery, **kwargs: object) -> list[bytes]:
    return b"".join(export_query(ExportFormat.NDJSON, store, query, **kwargs)).splitlines()  # type: ignore[arg-type]


def test_an_ndjson_export_is_the_stored_documents_with_every_digit(store: DocumentStore) -> None:
    """Every line parses to the document written under that key (in key order), the integer
    beyond 64 bits and the long decimal exact, over several keyset pages."""
    docs = _written(store)
    lines = _lines(store, _query())
    assert len(lines) == N
    assert [exactjson.loads(line) for line in lines] == [exactjson.loads(docs[key]) for key in sorted(docs)]
    first = exactjson.loads(lines[1])
    assert first["big"] == -int(BIG + "1") and str(first["dec"]) == DECIMAL + "1"


def test_the_lines_are_the_stored_text_passed_through(backend: str, store: DocumentStore) -> None:
    """No parse and no encoding again: on SQLite each line is the bytes written, the writer's
    spacing and escapes too; on PostgreSQL the jsonb's own text form of them."""
    docs = _written(store)
    lines = _lines(store, _query())
    if backend == "sqlite":
        assert lines == [docs[key] for key in sorted(docs)]
        return
    with psycopg.connect(POSTGRES_URL) as conn:
        stored = [conn.execute("SELECT %s::jsonb::text", (docs[key].decode(),)).fetchone() for key in sorted(docs)[:50]]
    assert lines[:50] == [row[0].encode() for row in stored if row is not None]
    assert f'"big": -{BIG}0'.encode() in lines[0]


def test_a_projection_or_another_format_parses_the_documents(store: DocumentStore) -> None:
    """With ``fields`` the lines are the projection (encoded by orjson, compact); CSV still
    gives the digits: only whole-document JSON Lines passes the text through."""
    _written(store)
    lines = _lines(store, _query(fields=parse_fields("i,big")), limit=2)
    assert lines == [f'{{"i":0,"big":-{BIG}0}}'.encode(), f'{{"i":1,"big":-{BIG}1}}'.encode()]
    csv_text = b"".join(export_query(ExportFormat.CSV, store, _query(fields=parse_fields("dec")), limit=1))
    assert csv_text.decode().splitlines() == ["dec", DECIMAL + "0"]


def test_a_sorted_filtered_export_pages_like_the_parsed_one(store: DocumentStore) -> None:
    """A sort on an indexed field, a filter, a cursor and a limit: the same documents in the
    same order as iter_documents gives (the pages' positions are (value, key))."""
    _written(store)
    query = _query(where=parse_filter({"n": {"$gte": 2}}), sort=parse_sort("-n", {"n"}))
    after = store.query("things", where=query.where, sort=query.sort, limit=300)[-1].position
    lines = _lines(store, query, after=after, limit=1200)
    expected = list(iter_documents(store, query, after=after, limit=1200))
    assert len(lines) == 1200 and [exactjson.loads(line)["i"] for line in lines] == [doc["i"] for doc in expected]


def test_a_stored_text_over_several_lines_comes_on_one(store: DocumentStore) -> None:
    """A document written with newlines between its tokens (no orjson wrote it) is still
    one line of the export, its numbers exact."""
    store.write("things", [("k1", f'{{\n"big":\n{BIG}\n}}'.encode()), ("k2", b'{"x":1}')], source="f1")
    lines = _lines(store, _query())
    assert len(lines) == 2 and exactjson.loads(lines[0]) == {"big": int(BIG)} and exactjson.loads(lines[1]) == {"x": 1}
