"""The LambdaMART stage and the business-rules stage of the cascade.

:class:`LtrFeaturizer` builds the feature matrix of a candidate list (see
:mod:`ranking.lambdamart` for the features); it is the one place features are
made, for training rows and for live requests alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ranking.cascade import Query, rerank_head
from ranking.features import FeatureBatch, OnlineFeatureReader
from ranking.lambdamart import BASE_FEATURES, LambdaMART
from ranking.rules import RulesConfig, apply_rules
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


@dataclass(frozen=True)
class LtrStage:
    """Re-rank the top ``depth`` candidates with LambdaMART."""

    model: LambdaMART
    featurizer: LtrFeaturizer
    depth: int
    name: str = "ltr"

    def __call__(self, query: Query, candidates: Candidates) -> Candidates:
        if self.depth <= 0 or not len(candidates):
            return candidates
        head = candidates.top(self.depth)
        return rerank_head(candidates, self.depth, self.name, self.model.predict(self.featurizer(query, head)))

    def explain(self, query: Query, candidates: Candidates) -> list[dict[str, float]]:
        """Per-row feature contributions (and the model's bias) for ``candidates``."""
        contributions = self.model.explain(self.featurizer(query, candidates))
        names = [*self.model.names, "bias"]
        return [{n: round(float(v), 5) for n, v in zip(names, row)} for row in contributions]


@dataclass(frozen=True)
class ProductFacts:
    """What rules need per product: stock, promotion, category, price."""

    in_stock: np.ndarray
    promoted: np.ndarray
    category: list[str | None]
    price: np.ndarray


def catalog_facts(index: ProductIndex, reader: OnlineFeatureReader | None) -> Callable[[Candidates], ProductFacts]:
    """Facts from the feature store when there is one, else from catalog columns."""
    products = index.products

    def column(name: str, docs: np.ndarray, default: float) -> np.ndarray:
        if name not in products.columns:
            return np.full(len(docs), default, dtype=np.float64)
        values = products[name].to_numpy()[docs]
        return np.array([default if v is None or v != v else float(v) for v in values], dtype=np.float64)

    def facts(candidates: Candidates) -> ProductFacts:
        docs = candidates.docs
        categories = (products["category"].to_numpy()[docs].tolist() if "category" in products.columns
                      else [None] * len(docs))
        in_stock, promoted, price = column("in_stock", docs, 1.0), column("promoted", docs, 0.0), column("price", docs, np.nan)
        if reader is not None:
            batch = reader.fetch(candidates.product_ids, None)
            for name, target in (("in_stock", in_stock), ("promoted", promoted), ("price", price)):
                if name in batch.columns:
                    fresh = batch.columns[name]
                    target[~np.isnan(fresh)] = fresh[~np.isnan(fresh)]
        return ProductFacts(in_stock, promoted, categories, price)

    return facts


@dataclass(frozen=True)
class RulesStage:
    """Business rules after the model (:mod:`ranking.rules`); records notes per product."""

    config: RulesConfig
    facts: Callable[[Candidates], ProductFacts]
    depth: int = 100
    name: str = "rules"

    def apply(self, query: Query, candidates: Candidates) -> tuple[Candidates, dict[str, list[str]]]:
        """Rules over the first ``depth`` rows (responses never show more); the rest
        follow unchanged, so offline evaluation still sees a full-depth list."""
        head = candidates.top(self.depth)
        facts = self.facts(head)
        score = np.nan_to_num(head.score, nan=float(np.nanmin(head.score)) if np.isfinite(head.score).any() else 0.0)
        result = apply_rules(query.text, head.product_ids, score, facts.in_stock, facts.promoted, facts.category,
                             facts.price, self.config, query.filters)
        reordered = head.take(result.order)
        notes = {pid: n for pid, n in zip(reordered.product_ids, result.notes) if n}
        if len(candidates) > self.depth:
            reordered = reordered.then(candidates.take(slice(self.depth, None)))
        return reordered, notes

    def __call__(self, query: Query, candidates: Candidates) -> Candidates:
        return self.apply(query, candidates)[0]
