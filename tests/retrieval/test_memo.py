"""The first stage's lists kept between searches (:mod:`retrieval.memo`), over a counting fake retriever."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from core.cache import LRUCache
from retrieval.memo import MemoizedRetriever
from retrieval.types import Candidates, Hits


class CountingRetriever:
    """Each query's list: products whose row is the query's length plus 0..k-1; counts what it searched."""

    name = "hybrid"

    def __init__(self) -> None:
        self.searched: list[str] = []
        self.ranked = 0

    def _list(self, query: str, k: int) -> Candidates:
        docs = np.arange(len(query), len(query) + k, dtype=np.int64)
        return Candidates.from_hits(Hits.of(docs, -docs.astype(np.float32)), "rrf", [f"P{d}" for d in docs])

    def search(self, query: str, k: int) -> Candidates:
        return self.batch_search([query], k)[0]

    def batch_search(self, queries: Sequence[str], k: int) -> list[Candidates]:
        self.searched.extend(queries)
        return [self._list(q, k) for q in queries]

    def rank(self, query: str, docs: Sequence[int]) -> Candidates:
        self.ranked += 1
        return self._list(query, len(docs))


class DictTier:
    """A shared tier in a dict (what the score store is to several processes)."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str, int], Candidates] = {}
        self.gets = 0

    def get(self, keys: Sequence[tuple[str, str, int]]) -> list[Candidates | None]:
        self.gets += len(keys)
        return [self.items.get(k) for k in keys]

    def put(self, items: Sequence[tuple[tuple[str, str, int], Candidates]]) -> None:
        self.items.update(items)


def test_a_query_is_retrieved_once_per_scope_and_depth() -> None:
    inner, scope = CountingRetriever(), ["catalog-1"]
    memo = MemoizedRetriever(inner, lambda: scope[0], LRUCache(100))
    first = memo.search("drill", 5)
    assert memo.search("drill", 5) is first and inner.searched == ["drill"]
    assert first.product_ids == ["P5", "P6", "P7", "P8", "P9"] and memo.name == "hybrid"
    with pytest.raises(ValueError):  # shared between searches: read-only
        first.docs[0] = 1
    memo.search("drill", 8)  # another depth is another list
    scope[0] = "catalog-2"  # a catalog write changes the scope: the next search retrieves again
    again = memo.search("drill", 5)
    assert inner.searched == ["drill", "drill", "drill"] and again is not first
    assert (memo.cache.hits, memo.cache.misses) == (1, 3)


def test_a_batch_retrieves_only_what_no_tier_holds_and_keeps_its_order() -> None:
    inner, shared = CountingRetriever(), DictTier()
    memo = MemoizedRetriever(inner, lambda: "s", LRUCache(100), shared)
    memo.search("saw", 3)
    other = MemoizedRetriever(inner, lambda: "s", LRUCache(100), shared)  # another process: its LRU is empty
    other.search("hammer", 3)
    lists = other.batch_search(["saw", "tape measure", "hammer"], 3)
    assert [c.docs[0] for c in lists] == [3, 12, 6]
    assert inner.searched == ["saw", "hammer", "tape measure"]  # "saw" came from the shared tier
    assert set(shared.items) == {("s", "saw", 3), ("s", "hammer", 3), ("s", "tape measure", 3)}
    assert other.search("saw", 3) is lists[0] and shared.gets == 4  # now in this process's LRU


def test_without_memory_the_shared_tier_still_serves_and_rank_is_never_kept() -> None:
    inner, shared = CountingRetriever(), DictTier()
    memo = MemoizedRetriever(inner, lambda: "s", LRUCache(0), shared)
    memo.search("paint", 4)
    memo.search("paint", 4)
    assert inner.searched == ["paint"] and shared.gets == 2
    memo.rank("paint", [1, 2])
    memo.rank("paint", [1, 2])
    assert inner.ranked == 2
