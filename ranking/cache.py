"""Cross-encoder scores cached by (query, product) for one model version."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.cache import LRUCache


class CachedScorer:
    """A cross-encoder whose (query, product) scores are cached (one model version)."""

    def __init__(self, scorer: Any, cache: LRUCache) -> None:
        self.scorer = scorer
        self.cache = cache

    def score_products(self, query: str, product_ids: Sequence[str], titles: Sequence[str],
                       deadline: float | None = None) -> np.ndarray:
        scores = np.empty(len(product_ids), dtype=np.float32)
        missing = []
        for i, pid in enumerate(product_ids):
            value = self.cache.get((query, pid))
            if value is None:
                missing.append(i)
            else:
                scores[i] = value
        if missing:
            fresh = self.scorer.score(query, [titles[i] for i in missing], deadline)
            for i, value in zip(missing, fresh):
                scores[i] = value
                self.cache.put((query, product_ids[i]), float(value))
        return scores
