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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ranking.cascade import Cascade, Query, Ranked, Stage, cross_encoder_stage
from ranking.features import OnlineFeatureReader
from ranking.lambdamart import BASE_FEATURES, LambdaMART
from ranking.ltr import LtrFeaturizer, LtrStage, RulesStage, catalog_facts
from ranking.rules import RulesConfig
from retrieval.encoder import Encoder
from retrieval.hybrid import BM25Retriever, DenseRetriever, HybridRetriever, QueryVectorCache, Retriever
from retrieval.index import ProductIndex
from retrieval.types import Candidates
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


def load_ltr(settings: Settings) -> ServedModel | None:
    entry = _entry(settings, "ltr", settings.ranking.ltr)
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
                 ltr: ServedModel | None = None, features: OnlineFeatureReader | None = None) -> None:
        if index.manifest.encoder_fingerprint != encoder.fingerprint:
            raise Conflict(
                f"index {index.path} was built with encoder {index.manifest.encoder} "
                f"({index.manifest.encoder_fingerprint}) but the query encoder is {encoder.name} "
                f"({encoder.fingerprint}); rebuild the index or set SHOPRANK_ENCODER to the matching model"
            )
        self.index, self.encoder, self.settings = index, encoder, settings
        self.teacher, self.student, self.ltr, self.features = teacher, student, ltr, features
        rs = settings.retrieval
        self.executor = ThreadPoolExecutor(max_workers=rs.bm25_threads, thread_name_prefix="bm25")
        self.query_cache = QueryVectorCache(settings.ranking.query_cache_size) if settings.ranking.query_cache_size else None
        bm25 = BM25Retriever(index)
        self.dense = DenseRetriever(index, encoder, self.query_cache)
        self.hybrid = HybridRetriever(bm25, self.dense, rrf_k=rs.rrf_k, depth=rs.depth, executor=self.executor)
        self.rules = RulesStage(RulesConfig.from_file(settings.ranking.rules_file) if settings.ranking.rules_file
                                else RulesConfig(), catalog_facts(index, features))
        self._pipelines: dict[str, Retriever] = {"bm25": bm25, "dense": self.dense, "hybrid": self.hybrid}
        self._pipelines |= self._ranking_pipelines()

    @classmethod
    def open(cls, index: ProductIndex, encoder: Encoder, settings: Settings) -> SearchEngine:
        """An engine with the configured models from the registry and the feature store, if any."""
        return cls(index, encoder, settings, load_cross_encoder(settings, "reranker"),
                   load_cross_encoder(settings, "student"), load_ltr(settings), open_feature_reader(settings))

    def titles(self, docs: np.ndarray) -> list[str]:
        return [self.index.title(int(d)) for d in docs]

    def featurizer(self, store_names: list[str]) -> LtrFeaturizer:
        reader = self.features
        store = (lambda query, pids: reader.fetch(pids, query.user_id)) if reader else None
        return LtrFeaturizer(self.index, lambda text: self.dense.embed([text])[0], store, store_names,
                             self.student.model if self.student else None,
                             self.teacher.model if self.teacher else None)

    def _ranking_pipelines(self) -> dict[str, Retriever]:
        rk = self.settings.ranking
        out: dict[str, Retriever] = {}
        stages: list[Stage] = []
        if self.student and rk.student_depth:
            stages.append(cross_encoder_stage("student", self.student.model, self.titles, rk.student_depth))
        if self.teacher:
            out["rerank"] = Cascade("rerank", self.hybrid, [
                cross_encoder_stage("teacher", self.teacher.model, self.titles, rk.rerank_depth)], k1=rk.rerank_depth)
            if rk.teacher_depth:
                stages.append(cross_encoder_stage("teacher", self.teacher.model, self.titles, rk.teacher_depth))
        if stages:
            out["cascade"] = Cascade("cascade", self.hybrid, list(stages), k1=rk.k1)
        if self.ltr and rk.ltr_depth:
            model: LambdaMART = self.ltr.model  # type: ignore[assignment]
            self.ltr_stage = LtrStage(model, self.featurizer(model.names[len(BASE_FEATURES):]), rk.ltr_depth)
            stages.append(self.ltr_stage)
            out["ltr"] = Cascade("ltr", self.hybrid, list(stages), k1=rk.k1)
        depth = rk.k1 if stages else rk.rerank_depth
        self.models_cascade = Cascade("full", self.hybrid, list(stages), k1=depth)  # /v1/search adds rules itself
        out["full"] = Cascade("full", self.hybrid, [*stages, self.rules], k1=depth)
        return out

    @property
    def versions(self) -> dict[str, str]:
        out = {"encoder": self.index.manifest.encoder}
        for model in (self.student, self.teacher, self.ltr):
            if model:
                out[model.role] = model.version
        return out

    def pipeline(self, name: str) -> Retriever:
        if name in self._pipelines:
            return self._pipelines[name]
        if name in PIPELINES:
            raise NotReady(
                f"pipeline {name!r} needs a trained model that is not registered; train it with "
                "`shoprank train reranker|student|ltr --dataset DIR`"
            )
        raise InvalidInput(f"pipeline {name!r} is not one of {list(PIPELINES)}")

    def search(self, query: Query | str, k: int, pipeline: str = DEFAULT, offset: int = 0) -> SearchResult:
        """Rows ``offset .. offset + k`` of ``pipeline``'s ranking; ``full`` records rule notes."""
        query = query if isinstance(query, Query) else Query(query)
        notes: dict[str, list[str]] = {}
        if pipeline == "full":
            ranked = self.models_cascade.run(query, k + offset)
            started = time.perf_counter()
            candidates, notes = self.rules.apply(query, ranked.candidates)
            ranked = Ranked(candidates, {**ranked.timings, "rules": time.perf_counter() - started})
        else:
            chosen = self.pipeline(pipeline)
            ranked = chosen.run(query, k + offset) if isinstance(chosen, Cascade) else Ranked(
                chosen.search(query.text, k + offset))
        page = ranked.candidates.take(slice(offset, offset + k))
        return SearchResult(candidates=page, pipeline=pipeline, total_candidates=len(ranked.candidates),
                            timings=ranked.timings, notes={p: notes[p] for p in page.product_ids if p in notes})

    def explain(self, query: Query, candidates: Candidates) -> list[dict[str, float]] | None:
        """LambdaMART feature contributions per row, when an LTR model is served."""
        stage = getattr(self, "ltr_stage", None)
        return stage.explain(query, candidates) if stage is not None and len(candidates) else None
