"""A retriever's lists kept between searches: the first stage runs once per query, not per search.

A first-stage list depends only on the analyzed query, how deep it goes, the index
(its catalog and rows), the query encoder and the retrieval settings; not on the user,
the time or the store features. So unlike a result page (``serving.results_ttl_s``),
it stays right until the index changes. :class:`MemoizedRetriever` wraps a retriever
and keeps its ``search`` lists in an in-memory LRU under a key that names all of that
(``scope``, called per search: a catalog write changes it, and the next search reads
another key), behind which a shared tier (:class:`ListTier`: the score store, so that
the server processes, the replicas and a restarted server share them, and the nightly
``shoprank warm-scores`` fills them for the head queries) is read before the wrapped
retriever runs. ``rank`` (given products) and filtered searches are never cached.

A list taken from the cache is the same object every time: callers treat
:class:`~retrieval.types.Candidates` as immutable (every stage makes new columns), and
the cached arrays are made read-only so that a mistake fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from core.cache import LRUCache, read_through
from retrieval.hybrid import Retriever
from retrieval.types import Candidates


class ListTier(Protocol):
    """The shared tier behind the in-memory lists, keyed by ``(scope, query, k)``."""

    def get(self, keys: Sequence[tuple[str, str, int]]) -> list[Candidates | None]: ...

    def put(self, items: Sequence[tuple[tuple[str, str, int], Candidates]]) -> None: ...


def frozen(candidates: Candidates) -> Candidates:
    """``candidates`` with read-only arrays (shared between searches)."""
    for column in (candidates.docs, *candidates.scores.values(), *candidates.ranks.values()):
        column.flags.writeable = False
    return candidates


class MemoizedRetriever:
    """``inner``'s search lists, kept in ``cache`` (an LRU) and ``shared`` under ``(scope(), query, k)``.

    Args:
        inner: The retriever whose lists are kept (the hybrid first stage).
        scope: What the lists depend on besides the query and k: index, catalog, encoder, settings.
        cache: The in-memory tier (size 0: none).
        shared: The shared tier, or None.
    """

    def __init__(self, inner: Retriever, scope: Callable[[], str], cache: LRUCache,
                 shared: ListTier | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.scope = scope
        self.cache = cache
        self.shared = shared

    def search(self, query: str, k: int, allow: np.ndarray | None = None) -> Candidates:
        return self.batch_search([query], k, allow)[0]

    def batch_search(self, queries: Sequence[str], k: int, allow: np.ndarray | None = None) -> list[Candidates]:
        if allow is not None:  # a filtered search: its lists are not kept (the result page may be)
            return self.inner.batch_search(queries, k, allow)
        scope, shared = self.scope(), self.shared
        keys = [(scope, q, k) for q in queries]
        return read_through(
            self.cache, keys, lambda rows: [frozen(c) for c in self.inner.batch_search([queries[i] for i in rows], k)],
            fetch=((lambda rows: [c if c is None else frozen(c) for c in shared.get([keys[i] for i in rows])])
                   if shared is not None else None),
            keep=((lambda rows, lists: shared.put([(keys[i], c) for i, c in zip(rows, lists)]))
                  if shared is not None else None))

    def rank(self, query: str, docs: Sequence[int]) -> Candidates:
        return self.inner.rank(query, docs)
