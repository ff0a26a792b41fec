"""Product recommendations for a served index (``/v1/recommend``): a product page's shelves and a
shopper's own.

Kinds, each from the seed products a request names:

- ``similar``: "more like this": the products nearest the seeds' mean bi-encoder vector (the
  index's own vectors: no query to encode) fused by RRF with BM25 runs of the seeds' titles, both
  searched within the filters as a search's first stage is (:func:`similar`).
- ``bought_together`` / ``viewed_together``: the seeds' neighbours among the products shoppers
  carted or bought (clicked) together (:mod:`online_learning.cooccurrence`, counted nightly by
  ``shoprank recommendations`` into ``<home>/recommend/together.json``, read again when it changes);
  a product that is several seeds' neighbour adds their scores.
- ``for_you``: the shopper's recent purchases (the feature store's ``features.recent_items``,
  written by the streaming feature consumer) and any seeds named, as seeds of bought together,
  then viewed together, then similar; the most popular products when there is nothing to start from.

With ``fill`` (the default) a shelf that its own kind cannot fill is filled with similar products,
then the most popular ones, and every item says where it came from (``source``). The request's
filters hold on every item, the seeds and ``exclude`` (a cart) are never shown, and the business
rules order the list as they order a search's (stock, promotions).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.errors import NotFound
from core.feature_store import StoreUnavailable
from core.query import Filters, Query
from online_learning.cooccurrence import SIGNALS, Neighbour, read_together
from retrieval.index import ProductIndex
from retrieval.rrf import fuse
from retrieval.types import Candidates, Hits
from serving.engine import SearchEngine
from serving.suggestions import DAMAGED, file_state

logger = logging.getLogger(__name__)

SIGNAL = {"bought_together": "bought", "viewed_together": "viewed"}
TEXT_SEEDS = 5  # seeds whose titles are searched by BM25 for similar (each costs a BM25 search)

_lock = threading.Lock()
_tables: dict[Path, tuple[tuple[int, int], dict[str, dict[str, list[Neighbour]]]]] = {}


@dataclass(frozen=True)
class Recommendation:
    """A shelf: its products (best first), where each came from and its score there (the fused RRF
    score for similar, summed neighbour scores for the together kinds, purchases in 30 days for popular), the
    seeds it started from (product ids), the business rules' notes per product and each step's seconds."""

    candidates: Candidates
    sources: list[str]
    scores: list[float]
    seeds: list[str]
    notes: dict[str, list[str]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # seeds and excluded ids not in the index: left out
    cached: bool = False  # from the results cache


def together_table(path: Path) -> dict[str, dict[str, list[Neighbour]]]:
    """The neighbours in ``path`` (``shoprank recommendations``), read again when the file changes."""
    state = file_state(path)
    with _lock:
        kept = _tables.get(path)
        if kept is None or kept[0] != state:
            try:
                kept = (state, read_together(path))
            except OSError as error:  # read again on the next call: it may pass then
                logger.warning("products bought and viewed together %s could not be read (%s); the shelves fill "
                               "from similar and popular products", path, error)
                return {name: {} for name in SIGNALS}
            except DAMAGED as error:
                logger.warning("products bought and viewed together %s are not readable (%s: %s); the shelves "
                               "fill from similar and popular products until `shoprank recommendations` writes it "
                               "again", path, type(error).__name__, error)
                kept = (state, {name: {} for name in SIGNALS})  # kept until the file changes
            _tables[path] = kept
        return kept[1]


def recommend(engine: SearchEngine, together: Path, kind: str, product_ids: list[str], k: int,
              filters: Filters = Filters(), exclude: tuple[str, ...] = (), user_id: str | None = None,
              fill: bool = True, use_cache: bool = True) -> Recommendation:
    """The ``k`` best products of ``kind`` for the seeds ``product_ids`` (and, for ``for_you``, the
    shopper ``user_id``'s recent purchases), within ``filters``, never a seed or an ``exclude``d product.

    Seeds and excluded products that are not in the index (deleted since a cart was filled) are left
    out and listed in ``unknown``. With ``use_cache``, the same shelf asked again within
    ``serving.results_ttl_s`` comes from the engine's results cache (a product page is asked for
    many times; a ``for_you`` shelf, a shopper's own, is never cached).

    Raises:
        NotFound: ``product_ids`` were given and none of them is in the index (for ``for_you``, only
            without a ``user_id``: the shopper's shelf is served, the ids listed in ``unknown``).
    """
    assert engine.facts is not None
    # an id given twice is one seed, one exclusion and one unknown id (and one shelf in the cache)
    product_ids, exclude = list(dict.fromkeys(product_ids)), tuple(dict.fromkeys(exclude))
    # the facts' build too: a shelf made before a live stock or price change is not served after it
    key = ("recommend", kind, tuple(product_ids), k, filters, tuple(exclude), fill, file_state(together),
           engine.facts_version())
    if use_cache and kind != "for_you" and (hit := engine.caches.results.get(key)) is not None:
        return replace(hit, timings={}, cached=True)
    shelf = _recommend(engine, together, kind, product_ids, k, filters, exclude, user_id, fill)
    if use_cache and kind != "for_you" and not shelf.degraded:
        engine.caches.results.put(key, shelf)
    return shelf


def _recommend(engine: SearchEngine, together: Path, kind: str, product_ids: list[str], k: int, filters: Filters,
               exclude: tuple[str, ...], user_id: str | None, fill: bool) -> Recommendation:
    assert engine.facts is not None and engine.rules is not None
    started = time.perf_counter()
    index, facts = engine.index, engine.facts
    seeds, unknown = _docs(index, product_ids)
    # a shopper's shelf starts from their recent purchases too: seeds all deleted serve it, listed as unknown
    if product_ids and not seeds and (kind != "for_you" or user_id is None):
        raise NotFound(f"product_ids {unknown[:10]} are not products of the index {index.path.parent.name!r} "
                       f"({index.count} products); name live product ids")
    hidden, gone = _docs(index, list(exclude))
    degraded: list[str] = []
    if kind == "for_you" and user_id is not None:
        seeds += _recent(engine, user_id, degraded)
    allow = facts.shown(filters, hide_out_of_stock=engine.rules.config.out_of_stock == "hide")
    allow[seeds + hidden] = False
    allow[engine.rules.hidden_docs()] = False  # products the rules hide everywhere
    seeds = list(dict.fromkeys(seeds))
    # the rows the rules order (their depth, as a search's and a listing's): they put out-of-stock products last,
    # and those behind them move up, whatever the shelf's length (2k rows left in-stock ones unseen at k=10)
    want = max(k, engine.rules.depth)
    if kind == "for_you":
        steps = ["bought_together", "viewed_together", "similar"] if seeds else ["popular"]
    else:
        steps = [kind]
    if fill:
        steps = list(dict.fromkeys([*steps, "similar", "popular"]))
    docs: list[int] = []
    sources: list[str] = []
    scores: list[float] = []
    stocked = facts.table().in_stock
    for n, step in enumerate(steps):
        if len(docs) >= want or (n and int(np.sum(stocked[docs] != 0)) >= k):  # a later step (a fill) runs only
            break  # while the rows found hold fewer than k not out of stock: the rules then order the same rows
        shown = allow.copy()
        shown[docs] = False
        found = _step(engine, together, step, seeds, shown, want - len(docs))
        docs += [doc for doc, _ in found]
        scores += [score for _, score in found]
        sources += [step] * len(found)
    head = np.asarray(docs, dtype=np.int64)
    ids = [index.product_id(int(d)) for d in head]
    order = np.arange(1, len(head) + 1)
    listed = Candidates(head, ids, "recommend", {"recommend": -order.astype(np.float64)}, {"recommend": order})
    timings = {"recommend": time.perf_counter() - started}
    started = time.perf_counter()
    ruled = engine.rules(Query("", filters=filters), listed)
    timings["rules"] = time.perf_counter() - started
    found_by = dict(zip(ids, zip(sources, scores)))
    page = ruled.candidates.take(slice(0, k))
    return Recommendation(page, [found_by[p][0] for p in page.product_ids], [found_by[p][1] for p in page.product_ids],
                          [index.product_id(d) for d in seeds],
                          {p: ruled.notes[p] for p in page.product_ids if p in ruled.notes}, timings, degraded,
                          list(dict.fromkeys(unknown + gone)))


def _docs(index: ProductIndex, product_ids: list[str]) -> tuple[list[int], list[str]]:
    """The index rows of ``product_ids``, and the ids that are not in the index."""
    docs = [index.doc_of(p) for p in product_ids]
    return [int(d) for d in docs if d is not None], [p for p, d in zip(product_ids, docs) if d is None]


def _recent(engine: SearchEngine, user_id: str, degraded: list[str]) -> list[int]:
    """The index rows of the shopper's recent products in the feature store (those still listed)."""
    reader = engine.models.features
    if reader is None:
        return []
    try:
        recent = reader.user_list(user_id, engine.settings.features.recent_items)
    except StoreUnavailable as err:
        degraded.append(f"recent items: {err}")
        return []
    docs = (engine.index.doc_of(p) for p in recent)
    return [int(d) for d in docs if d is not None]


def _step(engine: SearchEngine, together: Path, step: str, seeds: list[int], allow: np.ndarray,
          want: int) -> list[tuple[int, float]]:
    """Up to ``want`` allowed rows with their scores, best first, from one source."""
    if step == "popular":
        assert engine.facts is not None
        rows = engine.facts.most_popular(np.flatnonzero(allow))[:want]
        return [(int(d), float(p)) for d, p in zip(rows, engine.facts.table().popularity[rows])]
    if not seeds:
        return []
    if step == "similar":
        found = similar(engine.index, seeds, want, allow, engine.settings.retrieval.rrf_k, engine.dense.scale)
        return [(int(d), float(score)) for d, score in zip(found.docs, found.scores)]
    table = together_table(together)[SIGNAL[step]]
    scores: dict[int, float] = {}
    for seed in seeds:
        for n in table.get(engine.index.product_id(seed), []):
            doc = engine.index.doc_of(n.product_id)
            if doc is not None and allow[doc]:
                scores[doc] = scores.get(doc, 0.0) + n.score
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:want]


def similar(index: ProductIndex, seeds: list[int], k: int, allow: np.ndarray | None = None,
            rrf_k: int = 60, scale: np.ndarray | None = None) -> Hits:
    """The ``k`` products most like the ``seeds`` (index rows) among ``allow``: the run of the
    seeds' mean vector over the dense index and BM25 runs of the first :data:`TEXT_SEEDS` seeds'
    titles, each ``max(k, 100)`` deep, fused by RRF as a search's first stage fuses its runs (a
    seed's title searched as a query). Scores: the fused RRF scores. ``scale``: a query vector's
    (:attr:`~retrieval.hybrid.DenseRetriever.scale`, two models' weights), applied to the mean vector."""
    depth = max(k, 100)
    centre = index.dense.vectors[seeds].mean(axis=0)
    if scale is not None:
        centre = centre * scale
    centre /= max(float(np.linalg.norm(centre)), 1e-12)
    dense = index.dense.batch_search(centre[None, :].astype(np.float32), depth, allow=allow)[0]
    runs = {"dense": Hits.of(dense.docs[dense.docs >= 0], dense.scores[dense.docs >= 0])}
    for n, seed in enumerate(seeds[:TEXT_SEEDS]):
        runs[f"bm25:{n}"] = index.bm25.search(index.analyzer.analyze(index.title(seed), rewrite=False).text,
                                              depth, allow)
    return fuse(runs, rrf_k, limit=k)

