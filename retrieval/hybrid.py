"""Retrievers over a :class:`~retrieval.index.ProductIndex`, one shape for all.

``BM25Retriever``, ``DenseRetriever`` and ``HybridRetriever`` each expose
``search(query, k)`` / ``batch_search(queries, k)`` over the whole catalog and
``rank(query, docs)`` over given products (rerank-mode evaluation, and any
caller that brings its own candidates); all return
:class:`~retrieval.types.Candidates`, best first. The hybrid fuses the two by
reciprocal rank fusion and keeps each source's score and rank as columns.
Asked for more rows than each source's ``depth``, it appends the rows only the
deeper runs hold below the fused list, so a deeper read never moves the rows a
shallower one returned (the pages of a search agree at any offset; with an HNSW
index, the rows past ``depth`` agree among the reads of one rung of depths,
:meth:`HybridRetriever.read_depth`).

``allow`` (a boolean per index row; a request's filters, :mod:`ranking.facts`) makes a
search one over those products only: each source's run, its ranks and the fused list
are those of the catalog the filters leave.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import replace
from typing import Protocol

import numpy as np

from core.cache import LRUCache, read_through
from retrieval.encoder import Encoder
from retrieval.index import ProductIndex
from retrieval.rrf import fuse
from retrieval.types import Candidates, Hits

# What the hybrid's list for a query and a ``k`` holds, as this release makes it; one more whenever a release changes
# the list the same index and settings give (2: the rows past ``depth`` come below the fused list, read at a ladder of
# depths, fused rank 0). The serving layer names it in the keys of the lists and pages it keeps in the shared store,
# which holds an earlier release's lists for days.
LIST_FORMAT = 2


class Retriever(Protocol):
    name: str

    def search(self, query: str, k: int, allow: np.ndarray | None = None) -> Candidates: ...

    def batch_search(self, queries: Sequence[str], k: int, allow: np.ndarray | None = None) -> list[Candidates]: ...

    def rank(self, query: str, docs: Sequence[int]) -> Candidates: ...


class VectorTier(Protocol):
    """A query-vector store shared by server processes (and kept across restarts) behind the
    in-memory LRU: the serving layer's adapter over the cross-encoder score store."""

    def get(self, queries: Sequence[str]) -> list[np.ndarray | None]: ...

    def put(self, queries: Sequence[str], vectors: np.ndarray) -> None: ...


class BM25Retriever:
    name = "bm25"

    def __init__(self, index: ProductIndex) -> None:
        self.index = index

    def search(self, query: str, k: int, allow: np.ndarray | None = None) -> Candidates:
        return self.index.candidates(self.index.bm25.search(query, k, allow), self.name)

    def batch_search(self, queries: Sequence[str], k: int, allow: np.ndarray | None = None) -> list[Candidates]:
        return [self.search(q, k, allow) for q in queries]

    def rank(self, query: str, docs: Sequence[int]) -> Candidates:
        return self.index.candidates(Hits.ranked(docs, self.index.bm25.score(query, docs)), self.name)


class DenseRetriever:
    name = "dense"

    def __init__(self, index: ProductIndex, encoder: Encoder, cache: LRUCache | None = None,
                 shared: VectorTier | None = None) -> None:
        self.index = index
        self.encoder = encoder
        self.cache = cache
        self.shared = shared
        # two models as one (EnsembleEncoder): the second one's half of a query vector carries its weight
        self.scale: np.ndarray | None = getattr(encoder, "query_scale", None)

    def embed(self, queries: Sequence[str]) -> np.ndarray:
        """Query vectors as searched: each model's vector scaled by its weight (:attr:`scale`, for two
        models), of the vectors kept in the in-memory cache, then the shared tier, else encoded (and then
        kept in both)."""
        return self.weigh(self._vectors(queries))

    def weigh(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` (a model's output, or the catalog's) as a query is searched: for two models, the
        second one's half times its weight; unchanged for one."""
        return vectors if self.scale is None else vectors * self.scale

    def _vectors(self, queries: Sequence[str]) -> np.ndarray:
        if self.cache is None and self.shared is None:
            return self.encoder.encode(list(queries), batch_size=64)
        memory = self.cache if self.cache is not None else LRUCache(0)  # size 0: never holds anything
        shared = self.shared
        found = read_through(
            memory, queries, lambda rows: self.encoder.encode([queries[i] for i in rows], batch_size=64),
            fetch=(lambda rows: shared.get([queries[i] for i in rows])) if shared is not None else None,
            keep=(lambda rows, vectors: shared.put([queries[i] for i in rows], vectors)) if shared is not None else None)
        return np.stack(found)  # type: ignore[arg-type]

    def search(self, query: str, k: int, allow: np.ndarray | None = None) -> Candidates:
        return self.batch_search([query], k, allow)[0]

    def batch_search(self, queries: Sequence[str], k: int, allow: np.ndarray | None = None) -> list[Candidates]:
        runs = self.index.dense.batch_search(self.embed(queries), k, allow)
        return [self.index.candidates(hits, self.name) for hits in runs]

    def rank(self, query: str, docs: Sequence[int]) -> Candidates:
        scores = self.index.dense.score(self.embed([query])[0], docs)
        return self.index.candidates(Hits.ranked(docs, scores), self.name)


class HybridRetriever:
    """BM25 + dense, each ``depth`` deep, fused by RRF (Cormack et al. 2009).

    A search for ``k`` > ``depth`` rows serves the fused list of the ``depth``-deep runs
    first, as a shallower search does; when that holds fewer than ``k`` rows, it reads
    both sources deeper and the rows only those deeper runs hold follow, each at its
    best rank in either run (BM25 first at a tie), with fused score 0 and fused rank 0
    (not retrieved by the fusion, as :meth:`rank` says of them; :func:`below_depth`).
    Fusing the deeper runs instead would give their extra rows RRF credit and reorder
    the rows above, so pages read at different depths (past ``depth``, or deeper where
    the rules hide rows) would repeat and skip products. The ``bm25``, ``dense`` and
    ``rrf`` rank and score columns are those of the ``depth``-deep runs at any ``k``,
    so a re-ranking stage sees the same rows.

    The deeper runs are read at a fixed ladder of depths (:meth:`read_depth`: ``k``
    rounded up to ``depth`` times a power of two, at most ``deepest``), so searches
    for any ``k`` on one rung read the same runs and their lists are heads of one list.
    An exact search (BM25, the flat dense index) gives the same order on every rung; a
    graph search (HNSW, whose candidate list grows with the depth read) or the fp16
    scan's refine window may order the rows past ``depth`` a little differently on
    the next rung.

    With an ``executor``, BM25 runs on it while this thread encodes the query and
    searches the vectors (tantivy, ONNX Runtime and FAISS release the GIL): at
    1M products this cut the first stage's p95 from 22 ms to 17 ms on 2 cores.

    With ``feedback_docs`` = m > 0 the dense search runs twice (pseudo-relevance
    feedback, Rocchio 1971): the query vector plus ``feedback_weight`` times the mean
    vector of the fused top m, normalized, searches again, and that run is fused with
    BM25. It pulls in products worded like the first results but unlike the query
    (misspellings the analyzer left, other names for the product); it costs one more
    vector search per query.
    """

    name = "hybrid"

    def __init__(self, bm25: BM25Retriever, dense: DenseRetriever, rrf_k: int = 60, depth: int = 1000,
                 executor: Executor | None = None, feedback_docs: int = 0, feedback_weight: float = 0.3,
                 deepest: int = 10_000) -> None:
        self.index = bm25.index
        self.dense = dense
        self.rrf_k = rrf_k
        self.depth = depth
        self.deepest = deepest
        self.executor = executor
        self.feedback_docs = feedback_docs
        self.feedback_weight = feedback_weight

    def search(self, query: str, k: int, allow: np.ndarray | None = None) -> Candidates:
        return self.batch_search([query], k, allow)[0]

    def batch_search(self, queries: Sequence[str], k: int, allow: np.ndarray | None = None) -> list[Candidates]:
        vectors, bm25_runs, dense_runs = self._runs(queries, self.depth, allow)
        lists = [self._fuse(b, d, k) for b, d in zip(bm25_runs, dense_runs)]
        # the fused list is short of k rows and a source has more: read deeper for the rows below it
        short = [i for i, (b, d) in enumerate(zip(bm25_runs, dense_runs))
                 if len(lists[i]) < k and max(len(b), len(d)) >= self.depth]
        if short:
            deep = self.read_depth(k)
            _, bm25_deep, dense_deep = self._runs([queries[i] for i in short], deep, allow, vectors[short])
            for i, deep_bm25, deep_dense in zip(short, bm25_deep, dense_deep):
                lists[i] = self._fuse(bm25_runs[i], dense_runs[i], k, [deep_bm25, deep_dense])
        return lists

    def read_depth(self, k: int) -> int:
        """How deep each source is read for a search of ``k`` rows past ``depth``: the first of ``depth``,
        ``2 * depth``, ``4 * depth``, ... that holds ``k``, at most ``deepest`` (``k`` itself when it is
        deeper still). Every ``k`` on one rung reads the same runs, whatever the index kind."""
        rung = self.depth
        while rung < k:
            rung *= 2
        return max(k, min(rung, self.deepest))

    def _runs(self, queries: Sequence[str], depth: int, allow: np.ndarray | None = None,
              vectors: np.ndarray | None = None) -> tuple[np.ndarray, list[Hits], list[Hits]]:
        """The query vectors (``vectors``: already embedded), and the BM25 and dense runs of ``queries``
        over the catalog (its ``allow`` rows), ``depth`` deep."""
        bm25 = self.index.bm25
        pending = self.executor.submit(bm25.batch_search, queries, depth, allow) if self.executor else None
        vectors = self.dense.embed(queries) if vectors is None else vectors
        dense_runs = self.index.dense.batch_search(vectors, depth, allow)
        bm25_runs = pending.result() if pending else bm25.batch_search(queries, depth, allow)
        if self.feedback_docs:
            dense_runs = self._feedback(vectors, bm25_runs, dense_runs, depth, allow)
        return vectors, list(bm25_runs), list(dense_runs)

    def _feedback(self, vectors: np.ndarray, bm25_runs: Sequence[Hits], dense_runs: Sequence[Hits],
                  depth: int, allow: np.ndarray | None = None) -> list[Hits]:
        """The dense runs of the query vectors moved towards their fused top ``feedback_docs``."""
        stored = self.index.dense.vectors
        moved = []
        for vector, bm25, dense in zip(vectors, bm25_runs, dense_runs):
            served = {"bm25": bm25.top(self.depth), "dense": dense.top(self.depth)}  # as the fused list's head
            top = fuse(served, self.rrf_k, limit=self.feedback_docs).docs
            centre = self.dense.weigh(stored[np.sort(top)].mean(axis=0)) if len(top) else np.zeros_like(vector)
            shifted = vector + self.feedback_weight * centre
            moved.append(shifted / max(float(np.linalg.norm(shifted)), 1e-12))
        return self.index.dense.batch_search(np.stack(moved).astype(np.float32), depth, allow)

    def rank(self, query: str, docs: Sequence[int]) -> Candidates:
        """``docs`` as the served first stage sees them: ordered by their rank in the fused list
        of the ``depth``-deep runs (the ranks :meth:`search` gives them at any ``k``), the ones it
        does not hold after them (fused score and rank 0, as :meth:`search` lists a row only deeper
        runs find; ordered by RRF over their own BM25 and dense scores); the ``bm25``,
        ``dense`` and ``rrf`` rank columns are the served runs' ranks (0: not retrieved there), so
        rank features and the first stage's agreement mean what they mean in a served list,
        not a product's place among the given few. Scores are exact for every product."""
        docs = np.asarray(docs, dtype=np.int64)
        if not len(docs):
            return self._fuse(Hits.empty(), Hits.empty(), 0)
        (vector,), (bm25_run,), (dense_run,) = self._runs([query], self.depth)
        bm25 = self.index.bm25.score(query, docs)
        dense = self.index.dense.score(vector, docs)
        served = fuse({"bm25": bm25_run, "dense": dense_run}, self.rrf_k)  # all of it: search(k > depth) serves it
        fused, fused_ranks = served.lookup(docs)
        _, own_ranks = fuse({"bm25": Hits.ranked(docs, bm25), "dense": Hits.ranked(docs, dense)},
                            self.rrf_k).lookup(docs)
        retrieved = fused_ranks > 0
        order = np.lexsort((own_ranks, np.where(retrieved, fused_ranks, np.iinfo(np.int32).max)))
        ordered = docs[order]
        scores = {"bm25": np.asarray(bm25, np.float32)[order], "dense": np.asarray(dense, np.float32)[order],
                  "rrf": np.where(retrieved, fused, 0.0).astype(np.float32)[order]}
        runs = {"bm25": bm25_run, "dense": dense_run, "rrf": served}
        return Candidates(ordered, [self.index.product_id(int(d)) for d in ordered.tolist()], "rrf", scores,
                          {name: run.lookup(ordered)[1] for name, run in runs.items()})

    def _fuse(self, bm25: Hits, dense: Hits, k: int, deeper: Sequence[Hits] = ()) -> Candidates:
        """The top ``k`` of the RRF of the ``depth``-deep runs ``bm25`` and ``dense``, then of the rows
        only the ``deeper`` runs hold (:func:`below_depth`)."""
        runs = {"bm25": bm25, "dense": dense}
        fused = fuse(runs, self.rrf_k, limit=k)
        if not deeper or len(fused) >= k:
            return self.index.candidates(fused, "rrf", runs)
        retrieved = len(fused)
        below = below_depth(deeper, fused.docs)[: k - retrieved]
        fused = Hits.of(np.concatenate([fused.docs, below]), np.concatenate([fused.scores, np.zeros(len(below))]))
        listed = self.index.candidates(fused, "rrf", runs)
        ranks = listed.ranks["rrf"].copy()
        ranks[retrieved:] = 0  # the rows below the fused list: not retrieved by the fusion (rank 0, as rank() says)
        return replace(listed, ranks={**listed.ranks, "rrf": ranks})


def below_depth(runs: Sequence[Hits], above: np.ndarray) -> np.ndarray:
    """The docs of ``runs`` not in ``above``, each at its best rank in any run (ties: the earlier run
    first). A doc's place depends only on its own ranks, never on how deep the runs go: exact runs
    read deeper give the same docs in the same order, and more after them (an approximate search's
    deeper runs may order them otherwise: :meth:`HybridRetriever.read_depth`)."""
    parts = [run for run in runs if len(run)]
    if not parts:
        return np.zeros(0, dtype=np.int64)
    docs = np.concatenate([run.docs for run in parts])
    ranks = np.concatenate([np.arange(len(run)) for run in parts])
    source = np.concatenate([np.full(len(run), i) for i, run in enumerate(parts)])
    docs = docs[np.lexsort((source, ranks))]
    _, first = np.unique(docs, return_index=True)  # each doc at its best place
    docs = docs[np.sort(first)]
    return docs[~np.isin(docs, above)]
