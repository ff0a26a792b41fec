"""The search engine: everything one search needs, loaded once.

:class:`SearchEngine` holds the product index, the query encoder, the served
ranking models and the pipelines built on them. ``/v1/search`` serves the
``full`` pipeline, and ``shoprank evaluate --pipeline NAME`` evaluates the same
objects, so what is measured is what is served.

Pipelines:

- ``bm25``, ``dense``, ``hybrid``: the first stage alone.
- ``rerank``: hybrid top ``ranking.rerank_depth`` re-ranked by the teacher.
- ``cascade``: hybrid top ``ranking.k1`` -> student (``student_depth``) ->
  teacher (``teacher_depth``).
- ``full``: what ``/v1/search`` serves: ``cascade`` when ranking models are
  registered, else ``hybrid``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ranking.cascade import Cascade, Ranked, cross_encoder_stage
from retrieval.encoder import Encoder
from retrieval.hybrid import BM25Retriever, DenseRetriever, HybridRetriever, Retriever
from retrieval.index import ProductIndex
from retrieval.types import Candidates
from shoprank.errors import Conflict, InvalidInput, NotReady
from shoprank.registry import ModelRegistry, ModelVersion
from shoprank.settings import Settings

logger = logging.getLogger(__name__)

PIPELINES = ("bm25", "dense", "hybrid", "rerank", "cascade", "full")
DEFAULT = "full"


@dataclass(frozen=True)
class SearchResult:
    candidates: Candidates
    pipeline: str
    total_candidates: int
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ServedModel:
    """A registered ranking model loaded for serving."""

    role: str
    version: str
    scorer: object


def load_ranking_model(settings: Settings, role: str) -> ServedModel | None:
    """The configured version of ``role`` ('active', 'vN' or 'none'), loaded on ONNX Runtime."""
    from ranking.cross_encoder import CrossEncoderScorer

    spec = settings.ranking.reranker if role == "reranker" else settings.ranking.student
    if spec == "none":
        return None
    registry = ModelRegistry(settings.models_dir)
    entry: ModelVersion | None = registry.active(role) if spec == "active" else registry.get(role, spec)
    if entry is None or entry.path is None:
        return None
    rs = settings.ranking
    scorer = CrossEncoderScorer(Path(entry.path), rs.variant, max_length=rs.max_length,
                                batch_size=rs.batch_size, threads=rs.threads)
    logger.info("loaded %s %s (%s)", role, entry.version, rs.variant)
    return ServedModel(role, entry.version, scorer)


class SearchEngine:
    """Index + encoder + ranking models + pipelines for one served catalog."""

    def __init__(self, index: ProductIndex, encoder: Encoder, settings: Settings,
                 teacher: ServedModel | None = None, student: ServedModel | None = None) -> None:
        if index.manifest.encoder_fingerprint != encoder.fingerprint:
            raise Conflict(
                f"index {index.path} was built with encoder {index.manifest.encoder} "
                f"({index.manifest.encoder_fingerprint}) but the query encoder is {encoder.name} "
                f"({encoder.fingerprint}); rebuild the index or set SHOPRANK_ENCODER to the matching model"
            )
        self.index = index
        self.encoder = encoder
        self.settings = settings
        self.teacher = teacher
        self.student = student
        rs = settings.retrieval
        self.executor = ThreadPoolExecutor(max_workers=rs.bm25_threads, thread_name_prefix="bm25")
        bm25 = BM25Retriever(index)
        dense = DenseRetriever(index, encoder)
        self.hybrid = HybridRetriever(bm25, dense, rrf_k=rs.rrf_k, depth=rs.depth, executor=self.executor)
        self._pipelines: dict[str, Retriever] = {"bm25": bm25, "dense": dense, "hybrid": self.hybrid}
        self._pipelines |= self._ranking_pipelines()

    @classmethod
    def open(cls, index: ProductIndex, encoder: Encoder, settings: Settings) -> SearchEngine:
        """An engine with the configured ranking models from the registry (if any)."""
        return cls(index, encoder, settings, load_ranking_model(settings, "reranker"),
                   load_ranking_model(settings, "student"))

    def titles(self, docs: np.ndarray) -> list[str]:
        return [self.index.title(int(d)) for d in docs]

    def _ranking_pipelines(self) -> dict[str, Retriever]:
        rk = self.settings.ranking
        out: dict[str, Retriever] = {}
        stages = []
        if self.student and rk.student_depth:
            stages.append(cross_encoder_stage("student", self.student.scorer, self.titles, rk.student_depth))
        if self.teacher:
            out["rerank"] = Cascade("rerank", self.hybrid, [
                cross_encoder_stage("teacher", self.teacher.scorer, self.titles, rk.rerank_depth)], k1=rk.rerank_depth)
            if rk.teacher_depth:
                stages.append(cross_encoder_stage("teacher", self.teacher.scorer, self.titles, rk.teacher_depth))
        if stages:
            out["cascade"] = Cascade("cascade", self.hybrid, stages, k1=rk.k1)
        out["full"] = out.get("cascade", self.hybrid)
        return out

    @property
    def versions(self) -> dict[str, str]:
        out = {"encoder": self.index.manifest.encoder}
        for model in (self.student, self.teacher):
            if model:
                out[model.role] = model.version
        return out

    def pipeline(self, name: str) -> Retriever:
        if name in self._pipelines:
            return self._pipelines[name]
        if name in PIPELINES:
            raise NotReady(
                f"pipeline {name!r} needs a trained ranking model; train one with "
                "`shoprank train reranker --dataset DIR` (and `shoprank train student`)"
            )
        raise InvalidInput(f"pipeline {name!r} is not one of {list(PIPELINES)}")

    def search(self, query: str, k: int, pipeline: str = DEFAULT) -> SearchResult:
        chosen = self.pipeline(pipeline)
        if isinstance(chosen, Cascade):
            ranked: Ranked = chosen.run(query, k)
        else:
            ranked = Ranked(chosen.search(query, k))
        return SearchResult(candidates=ranked.candidates.top(k), pipeline=pipeline,
                            total_candidates=len(ranked.candidates), timings=ranked.timings)
