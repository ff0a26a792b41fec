"""The search engine: the loaded parts, the pipelines built on them, one search.

:func:`assemble` makes a :class:`SearchEngine` from an index, a query encoder
and the loaded :class:`~serving.pipelines.Models`: it creates the run-time
resources (the BM25 thread pool, the caches, the micro-batchers) and hands them
to :func:`~serving.pipelines.build_pipelines`, a pure function from those parts
to the pipelines (which stages each runs: :mod:`serving.pipelines`).
``/v1/search`` serves the ``full`` pipeline, and ``shoprank evaluate --pipeline
NAME`` evaluates the same objects, so what is measured is what is served.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.cache import LRUCache
from core.errors import Conflict, InvalidInput, NotReady
from core.query import Analysis, Filters, Query
from core.registry import ServedModel
from core.settings import RankingSettings, Settings
from ranking.batching import MicroBatcher
from ranking.cache import CachedScorer, SharedQueryVectors, TierCounts, model_tag
from ranking.cascade import Cascade, Ranked, ScoreStage
from ranking.facts import CatalogFacts, by_price
from ranking.features import LtrFeaturizer
from ranking.rules import RulesConfig, RulesStage
from ranking.score_backends import open_score_store
from ranking.score_store import ScoreStore
from retrieval.analyzer import Analyzer
from retrieval.encoder import Encoder
from retrieval.hybrid import LIST_FORMAT, BM25Retriever, DenseRetriever, HybridRetriever, Retriever
from retrieval.index import ProductIndex
from retrieval.memo import MemoizedRetriever
from retrieval.types import Candidates
from serving.pipelines import (
    DEFAULT,
    PIPELINES,
    Models,
    Pipelines,
    build_pipelines,
    featurizer_for,
    ranked_by,
)
from serving.results import SearchResult, SharedLists, SharedResults, settings_digest

CROSS_ENCODER_ROLES = ("student", "reranker")
COUNTERS = ("hits", "misses", *ScoreStore.EVENTS)  # of the caches and the score store


# the LambdaMART features each served model's output feeds: a model served otherwise than in training changes them
_READ_BY = {"reranker": "teacher", "student": "student"}


def trained_otherwise(ltr: ServedModel, served: dict[str, str], weight: float | None) -> list[str]:
    """What LambdaMART ``ltr`` was trained on that is served otherwise here (``served``: the encoder and model
    versions by role; ``weight``: the second bi-encoder's weight, None without one), one line each: the encoder
    whose lists it learned (its dense, rank and list features), the cross-encoders whose scores it reads, the
    second bi-encoder's weight. Empty when all match, or when its registry entry does not say (a model retrained
    from the event log learns from what was served when the events were logged)."""
    trained = ltr.trained_with
    if not trained:
        return []
    out = []
    for role in ("encoder", *_READ_BY):
        if role in _READ_BY and _READ_BY[role] not in getattr(ltr.model, "names", ()):
            continue  # it never reads that model's score
        if trained.get(role) != served.get(role):
            out.append(f"ltr {ltr.version} was trained with {role} {trained.get(role) or 'none'}; this server "
                       f"serves {served.get(role) or 'none'}")
    if "second_encoder_weight" in trained and weight is not None and trained.get("encoder") == served.get("encoder") \
            and abs(float(trained["second_encoder_weight"]) - weight) > 1e-9:
        out.append(f"ltr {ltr.version} was trained with retrieval.second_encoder_weight "
                   f"{trained['second_encoder_weight']}; this server uses {weight}")
    return out


@dataclass(frozen=True)
class Caches:
    """What an engine keeps between searches: :class:`~core.cache.LRUCache` s in memory, and the
    shared cross-encoder score store behind the score caches (``serving.score_store``)."""

    results: LRUCache
    scores: dict[str, LRUCache]  # per cross-encoder role
    query_vectors: LRUCache | None
    first_stage: LRUCache = field(default_factory=lambda: LRUCache(0))  # the first stage's lists
    store: ScoreStore | None = None
    store_tiers: dict[str, TierCounts] = field(default_factory=dict)  # the store's hits per role
    query_vectors_store: TierCounts = field(default_factory=TierCounts)  # the store's hits of query vectors
    results_store: TierCounts = field(default_factory=TierCounts)  # the store's hits of result pages
    first_stage_store: TierCounts = field(default_factory=TierCounts)  # the store's hits of first-stage lists

    def stats(self) -> dict[str, object]:
        """Every cache by name (``/metrics``): each has hits, misses and a hit rate; the LRUs a size,
        the score store (``score_store``) its errors and dropped writes."""
        out: dict[str, object] = {"results": self.results, "first_stage": self.first_stage,
                                  **{f"{role}_scores": c for role, c in self.scores.items()}}
        if self.store is not None:
            out |= {f"{role}_scores_store": c for role, c in self.store_tiers.items()} | {
                "score_store": self.store, "query_vectors_store": self.query_vectors_store,
                "results_store": self.results_store, "first_stage_store": self.first_stage_store}
        return out | ({"query_vectors": self.query_vectors} if self.query_vectors is not None else {})


def served_tag(served: ServedModel, ranking: RankingSettings) -> str | None:
    """The score-store name of a served cross-encoder (None: not registered, memory tier only)."""
    precision = getattr(served.model, "precision", ranking.precision)  # resolved (ranking.precision may be auto)
    return model_tag(served.role, served.version, getattr(served.model, "model_dir", None), precision,
                     getattr(served.model, "max_length", ranking.max_length))  # resolved (served_max_length)


@dataclass
class SearchEngine:
    """An index, its query encoder, the served models and the pipelines built on them.

    Make one with :func:`assemble` (or :func:`serving.loading.open_engine`, which
    also loads the index and the registered models).
    """

    index: ProductIndex
    encoder: Encoder
    settings: Settings
    models: Models
    pipelines: Pipelines
    caches: Caches
    hybrid: HybridRetriever
    dense: DenseRetriever
    executor: ThreadPoolExecutor
    batchers: dict[str, MicroBatcher]
    shared_results: SharedResults | None = None  # result pages in the score store, beside the LRU
    results_scope: str = ""  # what a page depends on beyond the request and the versions: settings
    facts: CatalogFacts | None = None  # every product's category, brand, price, stock: filters and facets
    rules: RulesStage | None = None  # the business rules every served pipeline ends with (and listings)

    @property
    def teacher(self) -> ServedModel | None:
        return self.models.teacher

    @property
    def student(self) -> ServedModel | None:
        return self.models.student

    @property
    def ltr(self) -> ServedModel | None:
        return self.models.ltr

    @property
    def versions(self) -> dict[str, str]:
        out = {"encoder": self.index.manifest.encoder}
        for model in (self.student, self.teacher, self.ltr):
            if model:
                out[model.role] = model.version
        return out

    def ltr_mismatches(self) -> list[str]:
        """What each served LambdaMART was trained on that this engine serves otherwise (see
        :func:`trained_otherwise`)."""
        retrieval = self.settings.retrieval
        weight = retrieval.second_encoder_weight if retrieval.second_encoder is not None else None
        return [line for model in (self.ltr, *self.models.ltr_versions) if model is not None
                for line in trained_otherwise(model, self.versions, weight)]

    def versions_for(self, ltr: str | None) -> dict[str, str]:
        """Versions loaded for a search that used LambdaMART ``ltr`` (None: the active one): what its
        shared result page is keyed by."""
        return self.versions | ({"ltr": ltr} if ltr else {})

    def ranked_by(self, pipeline: str, ltr: str | None = None) -> dict[str, str]:
        """The encoder (unless ``pipeline`` is BM25 alone) and the model versions whose stages rank
        ``pipeline`` (``ltr``: the LambdaMART version of ``full``; None: the active one)."""
        first = {} if pipeline == "bm25" else {"encoder": self.index.manifest.encoder}
        return first | ranked_by(self._chosen(pipeline, ltr), self.models)

    def featurizer(self, names: Sequence[str], score_missing: bool = True) -> LtrFeaturizer:
        """A featurizer of features ``names`` (:func:`ranking.features.feature_names`); ``score_missing``:
        the cross-encoders score the rows within their depths no stage scored (training lists), else
        their scores are only read from the candidates, as a served pipeline reads them."""
        return featurizer_for(self.index, self.dense, self.models, names, self.settings.ranking, score_missing,
                              fused_depth=self.settings.retrieval.depth)

    def pipeline(self, name: str) -> Retriever:
        if name in self.pipelines.named:
            return self.pipelines.named[name]
        if name in PIPELINES:
            if name == "ltr" and self.ltr is not None:
                self._ltr_turned_off(self.ltr.version)
            raise NotReady(
                f"pipeline {name!r} needs a trained model that is not registered; train it with "
                "`shoprank train reranker|student|ltr --dataset DIR`"
            )
        raise InvalidInput(f"pipeline {name!r} is not one of {list(PIPELINES)}")

    def _chosen(self, pipeline: str, ltr: str | None) -> Cascade:
        if pipeline != "full":
            return self.pipeline(pipeline)  # type: ignore[return-value]  # every pipeline is a Cascade
        if ltr not in self.pipelines.full:
            self._ltr_turned_off(ltr)
            raise NotReady(f"LambdaMART {ltr} is not loaded; loaded: {sorted(v for v in self.pipelines.full if v)}")
        return self.pipelines.full[ltr]

    def _ltr_turned_off(self, version: str | None) -> None:
        """Raise :class:`NotReady` naming the cause when LambdaMART ``version`` is loaded but no pipeline serves
        it because ``ranking.ltr_depth`` is 0."""
        loaded = [m.version for m in (self.ltr, *self.models.ltr_versions) if m is not None]
        if version in loaded and not self.settings.ranking.ltr_depth:
            raise NotReady(f"LambdaMART {version} is loaded but not served: ranking.ltr_depth is 0, so no pipeline "
                           "runs it; set SHOPRANK_RANKING__LTR_DEPTH > 0 (default 200) to serve it")

    def search(self, query: Query | str, k: int, pipeline: str = DEFAULT, offset: int = 0,
               use_cache: bool = False, ltr: str | None = None) -> SearchResult:
        """Rows ``offset .. offset + k`` of ``pipeline``'s ranking (``ltr``: a loaded LambdaMART version).

        With ``use_cache``, an identical request within ``serving.results_ttl_s``
        is answered from the results cache: this process's, else the pages other
        processes ranked (``serving.shared_results``); only complete,
        non-degraded results are cached.
        """
        query = query if isinstance(query, Query) else Query(query)
        # with the rules' windows passed: a page cached while a sale's pins held is not served after its end
        windows = self.rules.windows_passed() if self.rules is not None else 0
        request = (pipeline, ltr, query.text, query.rewrite, query.user_id, query.filters, query.facets, query.sort,
                   k, offset, windows)
        # a page worked out before a stock or price change is not served after it: this process's facts build in
        # its own cache's key, the change feed's position and a digest of the facts (the same in every process
        # that holds the same facts) in the shared one's scope (page_scope)
        key = (*request, self.facts_version())
        page_key = None
        if use_cache:
            if (hit := self.caches.results.get(key)) is not None:
                return replace(hit, cached=True, timings={})
            if self.shared_results is not None:
                page_key = self.shared_results.key(self.page_scope(), self.versions_for(ltr), request)
                if (found := self.shared_results.get(page_key)) is not None:
                    page, age = found
                    self.caches.results.put(key, page, age=age)  # expires when the ranking process's does
                    return replace(page, cached=True)
        cascade = self._chosen(pipeline, ltr)
        # a price order sorts the sort_depth most relevant shown rows: every page reads at least that many, so
        # the pages sort one set (a page reading fewer, with rows hidden, sorted another: repeats and gaps)
        need = k + offset if query.sort == "relevance" else max(k + offset, self.settings.serving.sort_depth)
        # the rule of the query as searched (a rule may match its corrected text only): read to its farthest pin
        deep = max(need, self.rules.farthest_place(cascade.analyze(query)) if self.rules is not None else 0)
        ranked = read_deep_enough(lambda depth: cascade.run(query, depth), deep, max(deep, cascade.first_stage_depth),
                                  min(self.index.count, MAX_FETCH))
        if query.sort != "relevance":
            ranked = replace(ranked, candidates=self._by_price(ranked.candidates, query.sort))
        page = ranked.candidates.take(slice(offset, offset + k))
        facets = self._facets(cascade, query) if query.facets and self.facts is not None else None
        result = SearchResult(page, pipeline, len(ranked.candidates), ranked.timings,
                              {p: ranked.notes[p] for p in page.product_ids if p in ranked.notes}, ranked.degraded,
                              analysis=ranked.analysis, facets=facets)
        if use_cache and not result.degraded:
            self.caches.results.put(key, result)
            if page_key is not None and self.shared_results is not None:
                self.shared_results.put(page_key, result)
        return result

    def browse(self, filters: Filters, k: int, offset: int = 0, order: str = "popular",
               facets: tuple[str, ...] = (), use_cache: bool = False) -> SearchResult:
        """Rows ``offset .. offset + k`` of the listing of every product that matches ``filters``
        (no query: a storefront's category page), ordered by ``order`` (``ranking.facts.ORDERS``).
        Most popular first gets the business rules on its first rows, as a search does (out of
        stock, promotions); the price orders stay strict, out-of-stock products hidden only
        with ``out_of_stock: hide``. Every page is a slice of one list: the rules run over the
        listing's first rows whatever the page (their stock read now may drop some), the rest
        follow as listed, and a page reads deeper until it is full. The total counts that list;
        facets count the whole listing."""
        assert self.facts is not None and self.rules is not None
        key = ("browse", order, filters, facets, k, offset, self.facts_version())
        if use_cache and (hit := self.caches.results.get(key)) is not None:
            return replace(hit, cached=True, timings={})
        started = time.perf_counter()
        hide = self.rules.config.out_of_stock == "hide"
        rows = self.facts.listing(filters, order, hide_out_of_stock=hide)
        if len(hidden := self.rules.hidden_docs()):  # products the rules hide everywhere
            rows = rows[~np.isin(rows, hidden)]
        rules = self.rules

        def listed(depth: int) -> Ranked:
            """The listing's first ``depth`` rows, most popular first with the rules over their head."""
            head = rows[:depth]
            ids = [self.index.product_id(int(d)) for d in head.tolist()]
            score = -np.arange(len(head), dtype=np.float64)  # the listing's order, as a score the rules can move
            out = Candidates(head, ids, "browse", {"browse": score}, {"browse": np.arange(1, len(head) + 1)})
            timings = {"browse": time.perf_counter() - started}
            if order != "popular":
                return Ranked(out, timings, first_stage_rows=len(head))
            ruled_at = time.perf_counter()
            ruled = rules(Query("", filters=filters), out)
            timings["rules"] = time.perf_counter() - ruled_at
            return Ranked(ruled.candidates, timings, notes=dict(ruled.notes), first_stage_rows=len(head))

        ranked = read_deep_enough(listed, offset + k, max(rules.depth, offset + k), len(rows))
        notes, page = ranked.notes, ranked.candidates.take(slice(offset, offset + k))
        # the rules drop rows (sold out now) from the rows read only: the rows below follow as listed
        total = len(rows) - (ranked.first_stage_rows - len(ranked.candidates))
        result = SearchResult(page, "browse", total, ranked.timings,
                              {p: notes[p] for p in page.product_ids if p in notes},
                              facets=self._browse_facets(filters, rows, facets) if facets else None)
        if use_cache:
            self.caches.results.put(key, result)
        return result

    def _by_price(self, candidates: Candidates, sort: str) -> Candidates:
        """The ``serving.sort_depth`` most relevant of ``candidates`` by price (``price_asc`` or
        ``price_desc``; no price last, ties in relevance order)."""
        assert self.facts is not None
        head = candidates.top(self.settings.serving.sort_depth)
        return head.take(by_price(self.facts.known(head).price, sort))

    def _facets(self, cascade: Cascade, query: Query) -> dict[str, object]:
        """Facet counts over the search's whole list: the first stage's ``ranking.first_stage_depth``
        best within the filters, less what the rules never show (hidden products; out of stock with
        ``out_of_stock: hide``), whichever page is asked for. A category or brand facet whose own
        filter is set counts what the first stage finds without that filter (the other filters
        hold), so the values a shopper could add stay in the menu with their counts (multi-select)."""
        assert self.facts is not None and self.rules is not None
        depth = self.settings.ranking.first_stage_depth
        shown = self.facts.shown(Filters(), hide_out_of_stock=self.rules.config.out_of_stock == "hide")
        shown[self.rules.hidden_docs(cascade.analyze(query))] = False

        def found(q: Query) -> np.ndarray:
            docs = cascade.first_stage(cascade.analyze(q), depth).docs[:depth]
            return docs[shown[docs]]

        counts = self.facts.facets(found(query), query.facets)
        for name in ("category", "brand"):
            if name in query.facets and getattr(query.filters, name):
                counts[name] = self.facts.facets(found(replace(query, filters=replace(query.filters, **{name: ()}))),
                                                 (name,))[name]
        return counts

    def _browse_facets(self, filters: Filters, rows: np.ndarray, names: tuple[str, ...]) -> dict[str, object]:
        """A listing's facet counts over its rows; a category or brand facet whose own filter is set
        counts the listing without that filter (multi-select, as a search's)."""
        assert self.facts is not None and self.rules is not None
        counts = self.facts.facets(rows, names)
        hide = self.rules.config.out_of_stock == "hide"
        for name in ("category", "brand"):
            if name in names and getattr(filters, name):
                shown = self.facts.shown(replace(filters, **{name: ()}), hide_out_of_stock=hide)
                shown[self.rules.hidden_docs()] = False
                counts[name] = self.facts.facets(np.flatnonzero(shown), (name,))[name]
        return counts

    def facts_version(self) -> int:
        """This process's build of the product facts (0: none): a page cached here names it."""
        return self.facts.version if self.facts is not None else 0

    def page_scope(self) -> str:
        """What a shared result page depends on beyond its request and the model versions: the store, the
        index by name (not path, so every process and replica reads the same keys) and build (what its row
        numbers mean), its catalog, the settings, and the facts it was worked out from: the live product
        updates they hold (the change feed's position, the same in every process) and a digest of them
        (stock, price and the rest, from the catalog and the store, whether a feed is followed or not); and
        the release's first-stage list format (``retrieval.hybrid.LIST_FORMAT``)."""
        position, digest = (self.facts.position, self.facts.digest) if self.facts is not None else (None, "")
        manifest = self.index.manifest
        return "\x1f".join([self.settings.store_name, self.index.key_name, manifest.build, manifest.catalog_hash,
                            self.results_scope, f"lists-{LIST_FORMAT}", str(position), digest])

    def explain(self, query: Query, candidates: Candidates, ltr: str | None = None,
                analysis: Analysis | None = None) -> list[dict[str, float]] | None:
        """LambdaMART feature contributions per row, when an LTR model is served; ``analysis``: the served
        search's (``SearchResult.analysis``), so the features are those of the query it ranked (corrected,
        with synonyms), and the contributions add up to the served score."""
        stage = self.pipelines.ltr_stages.get(ltr)
        if stage is None or not len(candidates):
            return None
        if analysis is not None:
            query = replace(query, text=analysis.text or query.text, analysis=analysis)
        return stage.explain(query, candidates)

    def cache_stats(self) -> dict[str, object]:
        return self.caches.stats()

    def carry_counts(self, previous: SearchEngine) -> None:
        """Start this engine's counts (cache lookups, score store events, requests the
        micro-batchers shed) where ``previous``'s stand: a swap builds a new engine, and the
        counters ``/metrics`` exports keep counting up across it. Call before this engine serves."""
        before = previous.cache_stats()
        for name, counts in self.cache_stats().items():
            old = before.get(name)
            if old is None or old is counts:
                continue
            for counter in COUNTERS:
                if hasattr(counts, counter) and hasattr(old, counter):
                    setattr(counts, counter, getattr(counts, counter) + getattr(old, counter))
        for role, batcher in self.batchers.items():
            if (old_batcher := previous.batchers.get(role)) is not None and old_batcher is not batcher:
                batcher.shed += old_batcher.shed

    def clear_caches(self) -> None:
        """After a catalog change: forget results and scores in memory (vectors of queries stay valid;
        the score store is keyed by product text, so a changed product reads other keys)."""
        self.caches.results.clear()
        self.caches.first_stage.clear()  # its keys name the catalog too: this only frees the memory
        for cache in self.caches.scores.values():
            cache.clear()

    def close(self) -> None:
        for batcher in self.batchers.values():
            batcher.close()
        self.executor.shutdown(wait=False)
        if self.caches.store is not None:
            self.caches.store.close()
        if self.models.features is not None:
            self.models.features.close()


MAX_FETCH = 10_000  # the most first-stage rows a page may read when the rules leave rows out (and the deepest
# rung the hybrid reads its sources to past retrieval.depth: HybridRetriever.read_depth)


def read_deep_enough(read: Callable[[int], Ranked], need: int, fetched: int, limit: int) -> Ranked:
    """``read(fetched)``: a ranked list of the first ``fetched`` rows of a first stage or a listing, the rules
    applied. When the rules left rows out (hidden, out of stock) so it holds fewer than ``need`` rows and the
    first stage has more, it reads deeper, twice as deep each time and at most ``limit`` rows, so the page is
    full while more exist (a read that shows no more rows goes deeper still: a block of hidden rows at the top
    left page 1 empty while later pages, read deeper, had rows), and a pin_at place past them is held whichever
    page is asked for. The read that holds the most rows is kept."""
    ranked = read(fetched)
    rows = ranked.first_stage_rows  # of the last read (which need not be the one kept)
    while len(ranked.candidates) < need and rows >= fetched and fetched < limit:
        fetched = min(limit, 2 * fetched)
        deeper = read(fetched)
        rows = deeper.first_stage_rows
        if len(deeper.candidates) > len(ranked.candidates):
            ranked = deeper
    return ranked


def rules_path(settings: Settings) -> Path:
    """The store's business rules: ``ranking.rules_file`` (a relative path in the store's folder), else
    ``<store>/rules/rules.yaml`` (what ``PUT /v1/admin/rules`` writes)."""
    configured = settings.ranking.rules_file
    if configured is None:
        return settings.paths.rules
    return configured if configured.is_absolute() else settings.paths.base / configured


def read_rules(settings: Settings) -> RulesConfig:
    """The store's rules; none when no file is set and the store's own does not exist (a file that is
    set must exist: a mistyped path is an error, not a store without rules)."""
    path = rules_path(settings)
    if settings.ranking.rules_file is None and not path.is_file():
        return RulesConfig()
    return RulesConfig.from_file(path)


def assemble(index: ProductIndex, encoder: Encoder, settings: Settings, models: Models = Models(),
             analyzer: Analyzer | None = None) -> SearchEngine:
    """An engine over ``index`` with ``models``: run-time resources, then :func:`build_pipelines`.
    ``analyzer``: the query analyzer (None: the index's; a reload passes one with the synonyms read again)."""
    if index.manifest.encoder_fingerprint != encoder.fingerprint:
        raise Conflict(
            f"index {index.path} was built with encoder {index.manifest.encoder} "
            f"({index.manifest.encoder_fingerprint}) but the query encoder is {encoder.name} "
            f"({encoder.fingerprint}); rebuild the index or set SHOPRANK_ENCODER (and retrieval.second_encoder) to "
            "the models it was built with"
        )
    rs, rk, sv = settings.retrieval, settings.ranking, settings.serving
    analyzer = analyzer if analyzer is not None else index.analyzer
    executor = ThreadPoolExecutor(max_workers=rs.bm25_threads, thread_name_prefix="bm25")
    caches = Caches(results=LRUCache(sv.results_cache_size, ttl=sv.results_ttl_s),
                    scores={role: LRUCache(sv.score_cache_size) for role in CROSS_ENCODER_ROLES},
                    query_vectors=LRUCache(rk.query_cache_size) if rk.query_cache_size else None,
                    first_stage=LRUCache(sv.first_stage_cache_size),
                    store=open_score_store(settings) if models.teacher or models.student else None,
                    store_tiers={role: TierCounts() for role in CROSS_ENCODER_ROLES})
    bm25 = BM25Retriever(index)
    shared = (SharedQueryVectors(caches.store, encoder.fingerprint, encoder.dim, caches.query_vectors_store)
              if caches.store is not None else None)
    dense = DenseRetriever(index, encoder, caches.query_vectors, shared)
    hybrid = HybridRetriever(bm25, dense, rrf_k=rs.rrf_k, depth=rs.depth, executor=executor,
                             feedback_docs=rs.feedback_docs, feedback_weight=rs.feedback_weight, deepest=MAX_FETCH)
    facts = CatalogFacts(index, models.features, refresh_s=sv.facts_refresh_s)
    rules = RulesStage(read_rules(settings), facts, doc_of=index.doc_of)
    stages = _CrossEncoderStages(index, caches, settings)
    pipelines = build_pipelines(bm25, dense, _memoized(hybrid, index, encoder, caches, settings), models, rules,
                                settings, stages, narrow=facts.allowed, analyzer=analyzer)
    shared_results = (SharedResults(caches.store, sv.results_ttl_s, caches.results_store)
                      if caches.store is not None and sv.shared_results and sv.results_cache_size > 0
                      and sv.results_ttl_s > 0 else None)
    # a page depends on how the stages are set up as well as on the request, the catalog and the versions
    scope = settings_digest(settings.retrieval, settings.ranking, settings.serving, settings.features)
    if analyzer.synonyms is not None:  # and on the store's synonym rules, which a reload may change
        scope += f"-{analyzer.synonyms.digest}"
    if rules.config != RulesConfig():  # and on its business rules (PUT /v1/admin/rules)
        scope += "-" + hashlib.sha1(rules.config.model_dump_json().encode()).hexdigest()[:12]
    facts.table()  # built now, not by the first filtered search (again once the store's rows are read)
    return SearchEngine(index, encoder, settings, models, pipelines, caches, hybrid, dense, executor,
                        stages.batchers, shared_results, scope, facts, rules)


def _memoized(hybrid: HybridRetriever, index: ProductIndex, encoder: Encoder, caches: Caches,
              settings: Settings) -> Retriever:
    """The first stage behind its list caches (this process's, and the shared store's when on)."""
    sv = settings.serving
    shared_lists = (SharedLists(caches.store, lambda docs: [index.product_id(d) for d in docs.tolist()],
                                caches.first_stage_store) if caches.store is not None and sv.shared_first_stage else None)
    if not sv.first_stage_cache_size and shared_lists is None:
        return hybrid
    retrieval = settings_digest(settings.retrieval)

    def scope() -> str:  # what a first-stage list depends on besides the query and its depth
        # the index by name and build, not by path (ProductIndex.key_name); a list holds row numbers, so it names
        # what they mean (Manifest.build: new when a build, a compaction or a write renumbers or adds rows), and what
        # this release's lists hold (LIST_FORMAT), as the store keeps an earlier release's for score_store_ttl_days
        manifest = index.manifest
        return (f"{index.key_name}\x1f{manifest.build}\x1f{manifest.catalog_hash}\x1f{manifest.rows}"
                f"\x1f{encoder.fingerprint}\x1f{retrieval}\x1flists-{LIST_FORMAT}")

    return MemoizedRetriever(hybrid, scope, caches.first_stage, shared_lists)


class _CrossEncoderStages:
    """Makes each cross-encoder stage: micro-batched across requests (when on), one batcher per
    role shared by the pipelines, and a two-tier score cache per role."""

    def __init__(self, index: ProductIndex, caches: Caches, settings: Settings) -> None:
        self.index, self.caches, self.settings = index, caches, settings
        self.batchers: dict[str, MicroBatcher] = {}

    def __call__(self, stage: str, served: ServedModel, depth: int) -> ScoreStage:
        sv, index = self.settings.serving, self.index
        scorer = served.model
        if sv.micro_batch:
            if served.role not in self.batchers:  # made once a role (setdefault made, and started, one a call)
                self.batchers[served.role] = MicroBatcher(scorer, sv.micro_batch_pairs, sv.micro_batch_wait_ms / 1000,
                                                          sv.shed_wait_ms / 1000 or None, sv.shed_past_deadline)
            scorer = self.batchers[served.role]
        cached = CachedScorer(scorer, self.caches.scores[served.role], self.caches.store,
                              served_tag(served, self.settings.ranking), self.caches.store_tiers[served.role])

        def products(docs: np.ndarray) -> tuple[list[str], list[str]]:
            return [index.product_id(int(d)) for d in docs], [index.title(int(d)) for d in docs]

        def score(query: str, docs: np.ndarray, deadline: float | None) -> np.ndarray:
            return cached.score_products(query, *products(docs), deadline)

        def from_cache(query: str, docs: np.ndarray) -> np.ndarray | None:
            return cached.cached_only(query, *products(docs))

        return ScoreStage(stage, score, depth, cached=from_cache, shed_depth=sv.shed_depth)
