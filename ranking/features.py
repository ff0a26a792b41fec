"""The ranking features of a candidate list: one featurizer for training and serving.

:class:`LtrFeaturizer` builds the feature matrix of (query, user, candidates)
in a model's feature order. Features come in groups (:data:`GROUPS`):

- ``base``: the exact BM25 score (the first stage's where its BM25 run holds the
  row) and dense cosine of each candidate, and the
  cross-encoder scores (from the cascade's columns, or computed for rows a stage
  did not score);
- ``ranks``: the candidate's rank in the served list's BM25, dense and fused
  (RRF) runs, as the first stage produced them (NaN: not retrieved by that run);
- ``relevance``: cheap query-product text features from the analyzed query
  (:mod:`ranking.relevance`: coverage, phrase, brand, type, numbers, ...);
- any other name is a store feature, read from the feature store.

It is the one place features are made, for training rows and for live requests
alike, so a model trained on these features is served with the same values.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from core.feature_store import FeatureBatch
from core.query import Query
from ranking.cascade import AdaptiveDepth
from ranking.lambdamart import BASE_FEATURES
from ranking.relevance import RELEVANCE_FEATURES, CatalogText, relevance_features
from retrieval.index import ProductIndex
from retrieval.types import Candidates

logger = logging.getLogger(__name__)

StoreFeatures = Callable[[Query, Sequence[str]], FeatureBatch]
RANK_FEATURES = ("rank_bm25", "rank_dense", "rank_rrf")
GROUPS: dict[str, tuple[str, ...]] = {"base": BASE_FEATURES, "ranks": RANK_FEATURES, "relevance": RELEVANCE_FEATURES}
KNOWN = frozenset(name for names in GROUPS.values() for name in names)

_catalogs: dict[tuple[int, str, int], CatalogText] = {}  # (index, its build, its writes) -> its text
_catalogs_lock = threading.Lock()


def catalog_text(index: ProductIndex) -> CatalogText:
    """The index's :class:`~ranking.relevance.CatalogText`, made once per index state."""
    key = (id(index), index.manifest.created, index.generation)
    with _catalogs_lock:
        found = _catalogs.get(key)
        if found is None:
            for old in [k for k in _catalogs if k[0] == key[0]]:
                del _catalogs[old]
            found = _catalogs[key] = CatalogText.from_index(index)
    return found


def store_features(names: Sequence[str]) -> list[str]:
    """The features of ``names`` this version does not compute: the feature store must supply them."""
    return [n for n in names if n not in KNOWN]


def unfillable(names: Sequence[str], store_names: Collection[str]) -> list[str]:
    """The features of ``names`` that this version neither computes nor reads from the feature service
    whose features are ``store_names``: a model trained by another version, or for another service."""
    return [n for n in store_features(names) if n not in store_names]


def feature_names(groups: Sequence[str], store_names: Sequence[str] = ()) -> list[str]:
    """The feature order of a model with these groups (``base``, ``ranks``, ``relevance``, ``store``)."""
    unknown = sorted(set(groups) - {*GROUPS, "store"})
    if unknown:
        raise ValueError(f"feature groups {unknown} are not among {[*GROUPS, 'store']}")
    names = [n for group in GROUPS if group in groups for n in GROUPS[group]]
    return names + (list(store_names) if "store" in groups else [])



def first_stage_rank(candidates: Candidates) -> np.ndarray:
    """Each row's rank in the first stage's served list (1 = top; 0 = not retrieved there): the fused rank of a
    hybrid list, else the one retriever's. A training list keeps the served ranks of its rows (sampled
    negatives, judged products retrieved deep), so a row's place in it is not where it was served; for rows
    with no served rank column, their place in ``candidates``."""
    ranks = candidates.ranks
    if "rrf" in ranks:
        return np.asarray(ranks["rrf"])
    single = [name for name in ("bm25", "dense") if name in ranks]
    return np.asarray(ranks[single[0]]) if len(single) == 1 else np.arange(1, len(candidates) + 1)


def first_stage_position(candidates: Candidates, fused_depth: int = 0) -> np.ndarray:
    """Each row's position in the first stage's served list (1 = top), the place a cascade stage counts its
    depth in: :func:`first_stage_rank`, save for a row below the fused list (fused rank 0: only a deeper read
    found it), which follows every fused row, in the list's order. The fused list then ends at the deepest
    fused row the list holds, and holds at least ``fused_depth`` rows (``retrieval.depth``: one source
    returned that many). Exact for the first stage's list and for rows of it down to its last fused row (a
    served training list, every negative kept); rows a list lacks above a row below the fused list (sampled
    negatives) or past its deepest fused row (judged lists) put that row higher than it was served."""
    rank = first_stage_rank(candidates).astype(np.int64)
    below = rank <= 0
    if not below.any():
        return rank
    position = rank.copy()
    position[below] = max(int(rank.max()), fused_depth) + np.arange(1, int(below.sum()) + 1)
    return position


@dataclass
class LtrFeaturizer:
    """Feature rows for (query, user, candidate) triples, in ``names`` order.

    Args:
        index: The product index (exact BM25 and cosine per candidate, the catalog text).
        embed: Query text -> query vector.
        store: Store features for (query, product ids), or None (all NaN).
        names: The model's features (see the module docstring for the groups).
        student, teacher: ``score(query, titles)`` of the served cross-encoders;
            used only for rows a cascade stage did not score already, among the
            rows each scores when served, by served position (a training list's
            rows keep their served ranks: :func:`first_stage_position`): the first
            stage's top ``student_depth``, and the top ``teacher_depth`` of the
            order the student leaves (the first stage's when no student is
            served); the other rows are NaN, as LambdaMART sees them in serving.
        student_adaptive, teacher_adaptive: The served stages' query-adaptive
            depths (None: always their depth), decided as the served cascade
            decides them, on the first stage's agreement over the list's rows
            (:func:`ranking.cascade.settle_depths`).
        fused_depth: The first stage's ``retrieval.depth``, a floor on where a
            row below its fused list is served (:func:`first_stage_position`).
    """

    index: ProductIndex
    embed: Callable[[str], np.ndarray]
    store: StoreFeatures | None
    names: Sequence[str]
    student: object | None = None
    teacher: object | None = None
    student_depth: int | None = None
    teacher_depth: int | None = None
    student_adaptive: AdaptiveDepth | None = None
    teacher_adaptive: AdaptiveDepth | None = None
    fused_depth: int = 0

    @property
    def store_names(self) -> list[str]:
        return store_features(self.names)

    def _model_scores(self, stage: str, scorer: object | None, query: str, candidates: Candidates,
                      served: Callable[[], np.ndarray]) -> np.ndarray:
        """``stage``'s column of ``candidates``, with ``scorer`` filling in the rows it lacks among those
        the served stage scores (``served()``: their mask, worked out only when a row lacks a score)."""
        scores = np.asarray(candidates.scores.get(stage, np.full(len(candidates), np.nan)), dtype=np.float32).copy()
        missing = np.isnan(scores)
        if scorer is None or not missing.any():
            return scores
        missing &= served()
        if missing.any():
            titles = [self.index.title(int(d)) for d in candidates.docs[missing]]
            scores[missing] = scorer.score(query, titles)  # type: ignore[attr-defined]
        return scores

    @staticmethod
    def _depth(depth: int, adaptive: AdaptiveDepth | None, candidates: Candidates, position: np.ndarray) -> int:
        """A served stage's depth for a search whose first stage served ``candidates`` at ``position``."""
        return adaptive(candidates, depth, position) if adaptive is not None else depth

    def _student_rows(self, candidates: Candidates) -> np.ndarray:
        """The rows the served student scores: the first stage's top ``student_depth`` (adaptive), by served
        position (no depth set: every row)."""
        if self.student_depth is None:
            return np.ones(len(candidates), dtype=bool)
        position = first_stage_position(candidates, self.fused_depth)
        return position <= self._depth(self.student_depth, self.student_adaptive, candidates, position)

    def _teacher_rows(self, candidates: Candidates, student: np.ndarray) -> np.ndarray:
        """The rows the served teacher scores: the top ``teacher_depth`` (adaptive) of the order it is given,
        counted in served positions. That order is the first stage's, with the rows it places within the
        student's depth re-ordered by the student's score when a student is served before it (as
        :func:`ranking.cascade.rerank_head` re-orders the cascade's head): those rows take the positions they
        hold, in the student's order; every other row keeps its own. A training list holds only some served
        rows (sampled negatives, judged products retrieved deep), so served positions, not places in the list,
        say which rows are scored, and a row served below both depths never is; where the list lacks some of
        the student's rows, it cannot tell where the student put them, and its own fill the positions they
        hold. With a student deeper than the teacher, those are not the first stage's top rows. No depth set:
        every row."""
        if self.teacher_depth is None:
            return np.ones(len(candidates), dtype=bool)
        position = first_stage_position(candidates, self.fused_depth)
        slot = position.copy()
        if self.student_depth and np.isfinite(student).any():  # a student is served before the teacher
            depth = self._depth(self.student_depth, self.student_adaptive, candidates, position)
            head = np.flatnonzero(position <= depth)
            head = head[np.argsort(position[head], kind="stable")]  # the served order
            # the row positions as the documents of a list, so the order the student leaves names the rows
            order = Candidates(head, [candidates.product_ids[i] for i in head], "first", {}, {})
            slot[order.reorder("student", student[head]).docs] = position[head]
        return slot <= self._depth(self.teacher_depth, self.teacher_adaptive, candidates, position)

    def _bm25(self, query: Query, candidates: Candidates) -> np.ndarray:
        """Each candidate's BM25 score: the first stage's where its BM25 run holds the row (the
        same tantivy score for the same analyzed text), computed only for the other rows."""
        known = candidates.scores.get("bm25")
        if known is None:
            return self.index.bm25.score(query.text, candidates.docs)
        scores = np.asarray(known, dtype=np.float32).copy()
        missing = np.isnan(scores)
        if missing.any():
            scores[missing] = self.index.bm25.score(query.text, candidates.docs[missing])
        return scores

    def _base(self, query: Query, candidates: Candidates) -> dict[str, np.ndarray]:
        docs = candidates.docs
        student = self._model_scores("student", self.student, query.text, candidates,
                                     lambda: self._student_rows(candidates))
        teacher = self._model_scores("teacher", self.teacher, query.text, candidates,
                                     lambda: self._teacher_rows(candidates, student))
        return {"bm25": self._bm25(query, candidates),
                "dense": self.index.dense.score(self.embed(query.text), docs),
                "student": student, "teacher": teacher}

    @staticmethod
    def _ranks(candidates: Candidates) -> dict[str, np.ndarray]:
        out = {}
        for name, run in zip(RANK_FEATURES, ("bm25", "dense", "rrf")):
            column = candidates.ranks.get(run)
            ranks = np.asarray(column if column is not None else np.zeros(len(candidates)), dtype=np.float32)
            # rank 0: that run did not retrieve the row. A served list is the fused list, so its fused rank
            # is never missing in training; a row a caller brings that the fused list lacks (rerank mode)
            # ranks below all of it (inf), where NaN would reach LightGBM as 0, above the top
            missing = np.inf if run == "rrf" and column is not None else np.nan
            out[name] = np.where(ranks > 0, ranks, missing)
        return out

    def _relevance(self, query: Query, candidates: Candidates) -> dict[str, np.ndarray]:
        analysis = query.analysis or self.index.analyzer.analyze(query.text)
        matrix = relevance_features(analysis, candidates.docs, catalog_text(self.index))
        return dict(zip(RELEVANCE_FEATURES, matrix.T))

    def __call__(self, query: Query, candidates: Candidates) -> np.ndarray:
        return self.features(query, candidates)[0]

    def features(self, query: Query, candidates: Candidates) -> tuple[np.ndarray, str | None]:
        """The feature rows, and why store features are missing (the store is unavailable) or None."""
        wanted = set(self.names)
        unavailable = None
        columns: dict[str, np.ndarray] = {}
        if wanted & set(BASE_FEATURES):
            columns |= self._base(query, candidates)
        if wanted & set(RANK_FEATURES):
            columns |= self._ranks(candidates)
        if wanted & set(RELEVANCE_FEATURES):
            columns |= self._relevance(query, candidates)
        store_names = self.store_names
        if store_names:
            if self.store is None:
                columns |= {n: np.full(len(candidates), np.nan, np.float32) for n in store_names}
            else:
                batch = self.store(query, candidates.product_ids)
                columns |= dict(zip(store_names, batch.matrix(store_names).T))
                unavailable = batch.unavailable
        if not self.names:
            return np.zeros((len(candidates), 0), np.float32), unavailable
        return np.column_stack([columns[n] for n in self.names]).astype(np.float32), unavailable
