"""The ranking features of a candidate list: one featurizer for training and serving.

:class:`LtrFeaturizer` builds the feature matrix of (query, user, candidates):
the exact BM25 score and dense cosine of each candidate, the cross-encoder
scores (from the cascade's columns, or computed for rows a stage did not
score), then the feature store's features in model order. It is the one place
features are made, for training rows and for live requests alike; the names
are ``ranking.lambdamart.BASE_FEATURES`` followed by the store features.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.feature_store import FeatureBatch
from core.query import Query
from ranking.lambdamart import BASE_FEATURES
from retrieval.index import ProductIndex
from retrieval.types import Candidates

logger = logging.getLogger(__name__)

StoreFeatures = Callable[[Query, Sequence[str]], FeatureBatch]


@dataclass
class LtrFeaturizer:
    """Feature rows for (query, user, candidate) triples.

    Args:
        index: The product index (exact BM25 and cosine per candidate).
        embed: Query text -> query vector.
        store: Store features for (query, product ids), or None (all NaN).
        store_names: Store feature names, in model order.
        student, teacher: ``score(query, titles)`` of the served cross-encoders;
            used only for rows a cascade stage did not score already.
    """

    index: ProductIndex
    embed: Callable[[str], np.ndarray]
    store: StoreFeatures | None
    store_names: Sequence[str]
    student: object | None = None
    teacher: object | None = None

    @property
    def names(self) -> list[str]:
        return [*BASE_FEATURES, *self.store_names]

    def _model_scores(self, stage: str, scorer: object | None, query: str, candidates: Candidates) -> np.ndarray:
        scores = np.asarray(candidates.scores.get(stage, np.full(len(candidates), np.nan)), dtype=np.float32).copy()
        missing = np.isnan(scores)
        if scorer is not None and missing.any():
            titles = [self.index.title(int(d)) for d in candidates.docs[missing]]
            scores[missing] = scorer.score(query, titles)  # type: ignore[attr-defined]
        return scores

    def __call__(self, query: Query, candidates: Candidates) -> np.ndarray:
        docs = candidates.docs
        columns = [
            self.index.bm25.score(query.text, docs),
            self.index.dense.score(self.embed(query.text), docs),
            self._model_scores("student", self.student, query.text, candidates),
            self._model_scores("teacher", self.teacher, query.text, candidates),
        ]
        base = np.column_stack(columns).astype(np.float32)
        if not self.store_names:
            return base
        if self.store is None:
            return np.hstack([base, np.full((len(docs), len(self.store_names)), np.nan, np.float32)])
        return np.hstack([base, self.store(query, candidates.product_ids).matrix(self.store_names)])
