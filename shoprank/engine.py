"""The search engine: everything one search needs, loaded once.

:class:`SearchEngine` holds the product index, the query encoder, the served
ranking models, the feature reader and the pipelines built on them.
``/v1/search`` serves the ``full`` pipeline, and ``shoprank evaluate
--pipeline NAME`` evaluates the same objects, so what is measured is what is
served.

Pipelines:

- ``bm25``, ``dense``, ``hybrid``: the first stage alone.
- ``rerank``: hybrid top ``ranking.rerank_depth`` re-ranked by the teacher.
- ``cascade``: hybrid top ``ranking.k1`` -> student (``student_depth``) ->
  teacher (``teacher_depth``).
- ``ltr``: cascade -> LambdaMART (``ltr_depth``) with store features.
- ``full``: what ``/v1/search`` serves: the deepest of ltr / cascade / hybrid
  that the registered models allow, then the business rules.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ranking.batching import MicroBatcher
from ranking.cache import CachedScorer
from ranking.cascade import Cascade, Query, Ranked, ScoreStage, Stage
from ranking.features import OnlineFeatureReader
from ranking.lambdamart import BASE_FEATURES, LambdaMART
from ranking.ltr import LtrFeaturizer, LtrStage, RulesStage, catalog_facts
from ranking.rules import RulesConfig
from retrieval.encoder import Encoder
from retrieval.hybrid import BM25Retriever, DenseRetriever, HybridRetriever, Retriever
from retrieval.index import ProductIndex
from retrieval.types import Candidates
from shoprank.cache import LRUCache
from shoprank.errors import Conflict, InvalidInput, NotReady
from shoprank.registry import ModelRegistry, ModelVersion
from shoprank.settings import Settings

logger = logging.getLogger(__name__)

PIPELINES = ("bm25", "dense", "hybrid", "rerank", "cascade", "ltr", "full")
DEFAULT = "full"


@dataclass(frozen=True)
class SearchResult:
    candidates: Candidates
    pipeline: str
    total_candidates: int
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    cached: bool = False


@dataclass(frozen=True)
class ServedModel:
    """A registered model loaded for serving."""

    role: str
    version: str
    model: object


def _entry(settings: Settings, role: str, spec: str) -> ModelVersion | None:
    if spec == "none":
        return None
    registry = ModelRegistry(settings.models_dir)
    return registry.active(role) if spec == "active" else registry.get(role, spec)


def load_cross_encoder(settings: Settings, role: str) -> ServedModel | None:
    """The configured version of ``role`` (reranker|student), on ONNX Runtime."""
    from ranking.cross_encoder import CrossEncoderScorer

    rs = settings.ranking
    entry = _entry(settings, role, rs.reranker if role == "reranker" else rs.student)
    if entry is None or entry.path is None:
        return None
    scorer = CrossEncoderScorer(Path(entry.path), rs.variant, max_length=rs.max_length,
                                batch_size=rs.batch_size, threads=rs.threads)
    logger.info("loaded %s %s (%s)", role, entry.version, rs.variant)
    return ServedModel(role, entry.version, scorer)


def load_ltr(settings: Settings, spec: str | None = None) -> ServedModel | None:
    entry = _entry(settings, "ltr", spec or settings.ranking.ltr)
    if entry is None or entry.path is None:
        return None
    return ServedModel("ltr", entry.version, LambdaMART.load(Path(entry.path)))


def open_feature_reader(settings: Settings) -> OnlineFeatureReader | None:
    """The online feature reader, when the feature store has been applied."""
    from shoprank import feature_store

    if not (feature_store.features_dir(settings) / "registry.db").is_file():
        return None
    try:
        return OnlineFeatureReader(feature_store.open_store(settings), settings.features.service)
    except Exception as err:  # noqa: BLE001 - serving goes on without store features
        logger.warning("feature store unavailable (%s); ranking without store features", err)
        return None


class SearchEngine:
    """Index + encoder + ranking models + pipelines for one served catalog."""

    def __init__(self, index: ProductIndex, encoder: Encoder, settings: Settings,
                 teacher: ServedModel | None = None, student: ServedModel | None = None,
                 ltr: ServedModel | None = None, features: OnlineFeatureReader | None = None,
                 ltr_variants: list[ServedModel] | None = None) -> None:
        if index.manifest.encoder_fingerprint != encoder.fingerprint:
            raise Conflict(
                f"index {index.path} was built with encoder {index.manifest.encoder} "
                f"({index.manifest.encoder_fingerprint}) but the query encoder is {encoder.name} "
                f"({encoder.fingerprint}); rebuild the index or set SHOPRANK_ENCODER to the matching model"
            )
        self.index, self.encoder, self.settings = index, encoder, settings
        self.teacher, self.student, self.ltr, self.features = teacher, student, ltr, features
        self.ltr_variants = {m.version: m for m in ltr_variants or []}
        rs = settings.retrieval
        self.executor = ThreadPoolExecutor(max_workers=rs.bm25_threads, thread_name_prefix="bm25")
        self.query_cache = LRUCache(settings.ranking.query_cache_size) if settings.ranking.query_cache_size else None
        bm25 = BM25Retriever(index)
        self.dense = DenseRetriever(index, encoder, self.query_cache)
        self.hybrid = HybridRetriever(bm25, self.dense, rrf_k=rs.rrf_k, depth=rs.depth, executor=self.executor)
        self.rules = RulesStage(RulesConfig.from_file(settings.ranking.rules_file) if settings.ranking.rules_file
                                else RulesConfig(), catalog_facts(index, features))
        sv = settings.serving
        self.score_caches = {role: LRUCache(sv.score_cache_size) for role in ("student", "reranker")}
        self.results_cache = LRUCache(sv.results_cache_size, ttl=sv.results_ttl_s)
        self.batchers: dict[str, MicroBatcher] = {}
        self.budgets = {name: ms / 1000 for name, ms in sv.stage_budgets_ms.items()}
        self._pipelines: dict[str, Retriever] = {"bm25": bm25, "dense": self.dense, "hybrid": self.hybrid}
        self._pipelines |= self._ranking_pipelines()

    @classmethod
    def open(cls, index: ProductIndex, encoder: Encoder, settings: Settings,
             ltr_versions: list[str] | None = None) -> SearchEngine:
        """An engine with the configured models from the registry and the feature store, if any.

        ``ltr_versions`` are extra LambdaMART versions to serve beside the active
        one (experiment arms, shadow candidates); pick one per search with ``ltr=``.
        """
        variants = [m for v in ltr_versions or [] if (m := load_ltr(settings, v)) is not None]
        return cls(index, encoder, settings, load_cross_encoder(settings, "reranker"),
                   load_cross_encoder(settings, "student"), load_ltr(settings), open_feature_reader(settings),
                   variants)

    def titles(self, docs: np.ndarray) -> list[str]:
        return [self.index.title(int(d)) for d in docs]

    def featurizer(self, store_names: list[str]) -> LtrFeaturizer:
        reader = self.features
        store = (lambda query, pids: reader.fetch(pids, query.user_id)) if reader else None
        return LtrFeaturizer(self.index, lambda text: self.dense.embed([text])[0], store, store_names,
                             self.student.model if self.student else None,
                             self.teacher.model if self.teacher else None)

    def _cross_encoder_stage(self, stage: str, served: ServedModel, depth: int) -> ScoreStage:
        """A cross-encoder stage: micro-batched across requests and with a score cache."""
        scorer = served.model
        if self.settings.serving.micro_batch:
            sv = self.settings.serving
            scorer = self.batchers.setdefault(served.role, MicroBatcher(scorer, sv.micro_batch_pairs,
                                                                        sv.micro_batch_wait_ms / 1000))
        cached = CachedScorer(scorer, self.score_caches[served.role])

        def score(query: str, docs: np.ndarray, deadline: float | None) -> np.ndarray:
            ids = [self.index.product_id(int(d)) for d in docs]
            return cached.score_products(query, ids, self.titles(docs), deadline)

        return ScoreStage(stage, score, depth)

    def _ranking_pipelines(self) -> dict[str, Retriever]:
        rk = self.settings.ranking
        out: dict[str, Retriever] = {}
        stages: list[Stage] = []
        if self.student and rk.student_depth:
            stages.append(self._cross_encoder_stage("student", self.student, rk.student_depth))
        if self.teacher:
            out["rerank"] = Cascade("rerank", self.hybrid, [
                self._cross_encoder_stage("teacher", self.teacher, rk.rerank_depth)], k1=rk.rerank_depth,
                budgets=self.budgets)
            if rk.teacher_depth:
                stages.append(self._cross_encoder_stage("teacher", self.teacher, rk.teacher_depth))
        if stages:
            out["cascade"] = Cascade("cascade", self.hybrid, list(stages), k1=rk.k1, budgets=self.budgets)
        depth = rk.k1 if stages else rk.rerank_depth
        # per LambdaMART version: the model cascade (/v1/search adds the rules itself, to record
        # their notes); the same student and teacher stages (and score caches) are shared
        self.variants: dict[str | None, Cascade] = {None: Cascade("full", self.hybrid, list(stages), k1=depth,
                                                                  budgets=self.budgets)}
        self.ltr_stages: dict[str | None, LtrStage] = {}
        for served in ([self.ltr] if self.ltr else []) + list(self.ltr_variants.values()):
            if not rk.ltr_depth:
                break
            model: LambdaMART = served.model  # type: ignore[assignment]
            stage = LtrStage(model, self.featurizer(model.names[len(BASE_FEATURES):]), rk.ltr_depth)
            self.ltr_stages[served.version] = stage
            self.variants[served.version] = Cascade("ltr", self.hybrid, [*stages, stage], k1=rk.k1,
                                                    budgets=self.budgets)
        if self.ltr and self.ltr.version in self.variants:
            self.variants[None] = self.variants[self.ltr.version]
            self.ltr_stages[None] = self.ltr_stages[self.ltr.version]
            out["ltr"] = self.variants[None]
        self.models_cascade = self.variants[None]
        out["full"] = Cascade("full", self.hybrid, [*self.models_cascade.stages, self.rules],
                              k1=self.models_cascade.k1, budgets=self.budgets)
        return out

    @property
    def versions(self) -> dict[str, str]:
        out = {"encoder": self.index.manifest.encoder}
        for model in (self.student, self.teacher, self.ltr):
            if model:
                out[model.role] = model.version
        return out

    def versions_for(self, ltr: str | None) -> dict[str, str]:
        """Versions serving a search that used LambdaMART ``ltr`` (None: the active one)."""
        return self.versions | ({"ltr": ltr} if ltr else {})

    def pipeline(self, name: str) -> Retriever:
        if name in self._pipelines:
            return self._pipelines[name]
        if name in PIPELINES:
            raise NotReady(
                f"pipeline {name!r} needs a trained model that is not registered; train it with "
                "`shoprank train reranker|student|ltr --dataset DIR`"
            )
        raise InvalidInput(f"pipeline {name!r} is not one of {list(PIPELINES)}")

    def search(self, query: Query | str, k: int, pipeline: str = DEFAULT, offset: int = 0,
               use_cache: bool = False, ltr: str | None = None) -> SearchResult:
        """Rows ``offset .. offset + k`` of ``pipeline``'s ranking; ``full`` records rule notes.

        With ``use_cache``, an identical request within ``serving.results_ttl_s``
        is answered from the results cache (only complete, non-degraded results
        are cached).
        """
        query = query if isinstance(query, Query) else Query(query)
        key = (pipeline, ltr, query.text, query.user_id, query.filters, k, offset)
        if use_cache:
            hit = self.results_cache.get(key)
            if hit is not None:
                return replace(hit, cached=True, timings={})
        notes: dict[str, list[str]] = {}
        if ltr is not None and ltr not in self.variants:
            raise NotReady(f"LambdaMART {ltr} is not loaded; loaded: {sorted(v for v in self.variants if v)}")
        if pipeline == "full":
            ranked = self.variants[ltr].run(query, k + offset)
            started = time.perf_counter()
            try:
                candidates, notes = self.rules.apply(query, ranked.candidates)
                ranked = Ranked(candidates, {**ranked.timings, "rules": time.perf_counter() - started},
                                ranked.degraded)
            except Exception as err:  # noqa: BLE001 - serve the model order, say why
                logger.exception("rules failed")
                ranked = Ranked(ranked.candidates, ranked.timings, [*ranked.degraded, f"rules: error {type(err).__name__}"])
        else:
            chosen = self.pipeline(pipeline)
            ranked = chosen.run(query, k + offset) if isinstance(chosen, Cascade) else Ranked(
                chosen.search(query.text, k + offset))
        page = ranked.candidates.take(slice(offset, offset + k))
        result = SearchResult(candidates=page, pipeline=pipeline, total_candidates=len(ranked.candidates),
                              timings=ranked.timings, notes={p: notes[p] for p in page.product_ids if p in notes},
                              degraded=ranked.degraded)
        if use_cache and not result.degraded:
            self.results_cache.put(key, result)
        return result

    def cache_stats(self) -> dict[str, LRUCache]:
        caches = {"results": self.results_cache, **{f"{r}_scores": c for r, c in self.score_caches.items()}}
        if self.query_cache is not None:
            caches["query_vectors"] = self.query_cache
        return caches

    def clear_caches(self) -> None:
        """After a catalog change: forget results and scores (vectors of queries stay valid)."""
        self.results_cache.clear()
        for cache in self.score_caches.values():
            cache.clear()

    def close(self) -> None:
        for batcher in self.batchers.values():
            batcher.close()
        self.executor.shutdown(wait=False)

    def explain(self, query: Query, candidates: Candidates, ltr: str | None = None) -> list[dict[str, float]] | None:
        """LambdaMART feature contributions per row, when an LTR model is served."""
        stage = self.ltr_stages.get(ltr)
        return stage.explain(query, candidates) if stage is not None and len(candidates) else None
