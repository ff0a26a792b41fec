"""The LambdaMART stage of the cascade (the model itself is :mod:`ranking.lambdamart`)."""

from __future__ import annotations

from dataclasses import dataclass

from core.query import Query
from ranking.cascade import Noted, rerank_head
from ranking.features import LtrFeaturizer
from ranking.lambdamart import LambdaMART
from retrieval.types import Candidates


@dataclass(frozen=True)
class LtrStage:
    """Re-rank the top ``depth`` candidates with LambdaMART."""

    model: LambdaMART
    featurizer: LtrFeaturizer
    depth: int
    name: str = "ltr"

    def __call__(self, query: Query, candidates: Candidates) -> Candidates | Noted:
        if self.depth <= 0 or not len(candidates):
            return candidates
        head = candidates.top(self.depth)
        rows, unavailable = self.featurizer.features(query, head)
        ranked = rerank_head(candidates, self.depth, self.name, self.model.predict(rows))
        if unavailable:  # ranked without (some) store features: say so
            return Noted(ranked, {}, (f"{self.name}: store features missing ({unavailable})",))
        return ranked

    def explain(self, query: Query, candidates: Candidates) -> list[dict[str, float]]:
        """Per-row feature contributions (and the model's bias) for ``candidates``."""
        contributions = self.model.explain(self.featurizer(query, candidates))
        names = [*self.model.names, "bias"]
        return [{n: round(float(v), 5) for n, v in zip(names, row)} for row in contributions]
