"""services.reads without a store: an export pages by keyset (never more than a page asked
for at once, each page after the last one's position), and a page says whether more follows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mysimbdp.adapters.coredms.rows import StoredRow
from mysimbdp.domain.docfilter import MATCH_ALL
from mysimbdp.domain.readparams import BY_KEY
from mysimbdp.services.reads import ExportFormat, ReadQuery, export_chunks, iter_documents, read_page


class FakeStore:
    """Documents k0000..k{n-1} ordered by key; records each query's (after, limit, offset)."""

    def __init__(self, n: int) -> None:
        self.keys = [f"k{i:04d}" for i in range(n)]
        self.calls: list[tuple[Any, int, int]] = []

    def query(
        self, dataset: str, *, after: Sequence[Any] | None, limit: int, offset: int = 0, **_: Any
    ) -> list[StoredRow]:
        self.calls.append((after, limit, offset))
        start = 0 if after is None else self.keys.index(after[0]) + 1
        keys = self.keys[start + offset : start + offset + limit]
        return [StoredRow((key,), {"k": key}) for key in keys]


QUERY = ReadQuery("acme", "d", MATCH_ALL, BY_KEY, ())


def test_an_export_reads_page_by_page_after_each_last_position() -> None:
    """2,500 documents in pages of at most 1,000, each after the previous page's last key."""
    store = FakeStore(2500)
    chunks = list(export_chunks(ExportFormat.NDJSON, iter_documents(store, QUERY)))  # type: ignore[arg-type]
    assert b"".join(chunks).count(b"\n") == 2500
    assert [(after, limit) for after, limit, _ in store.calls] == [
        (None, 1000),
        (("k0999",), 1000),
        (("k1999",), 1000),
    ]


def test_limit_and_offset_bound_an_export() -> None:
    """The offset skips on the first page only; the limit shortens the last page asked for."""
    store = FakeStore(50)
    docs = list(iter_documents(store, QUERY, limit=15, offset=3, page_rows=10))  # type: ignore[arg-type]
    assert [d["k"] for d in docs] == [f"k{i:04d}" for i in range(3, 18)]
    assert store.calls == [(None, 10, 3), (("k0012",), 5, 0)]


def test_a_page_has_a_next_position_only_when_more_follow() -> None:
    """A JSON page asks for one more than its limit, to tell whether a next page exists."""
    store = FakeStore(5)
    docs, position = read_page(store, QUERY, after=None, limit=3)  # type: ignore[arg-type]
    assert [d["k"] for d in docs] == ["k0000", "k0001", "k0002"] and position == ("k0002",)
    docs, position = read_page(store, QUERY, after=position, limit=3)  # type: ignore[arg-type]
    assert [d["k"] for d in docs] == ["k0003", "k0004"] and position is None
