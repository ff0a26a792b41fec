"""The simulated shopper: a position-based click model driven by the truth.

Used by the traffic simulator, which knows what real logs never show: the
judged grade of each (query, product) and each user's hidden preferences
(:mod:`simulation.world`). For a shown list:

- examination at position ``p`` (1-based): ``(1 / p) ** eta`` (position bias,
  the position-based model of Craswell et al. 2008 / Joachims et al. 2017);
- attractiveness: ``floor + (1 - floor) * (grade / max) ** 2`` times a personal
  factor ``0.3 + 0.7 * min(1, propensity / 2)`` from the user's hidden taste
  (category, price fit, brand); unjudged products count as grade 0;
- a click leads to add-to-cart with ``cart * relevance * personal`` and a
  cart to a purchase with ``buy`` probability, never for out-of-stock items.

The *true gain* of a product for a user is ``grade * personal``; the simulator
reports NDCG@10 of what was served under those gains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClickModel:
    eta: float = 1.0
    floor: float = 0.03
    cart: float = 0.5
    buy: float = 0.6
    max_grade: int = 8

    def personal(self, propensity: np.ndarray) -> np.ndarray:
        return 0.3 + 0.7 * np.minimum(1.0, np.asarray(propensity, dtype=float) / 2.0)

    def attractiveness(self, grades: np.ndarray, propensity: np.ndarray) -> np.ndarray:
        relevance = (np.asarray(grades, dtype=float) / self.max_grade) ** 2
        return (self.floor + (1 - self.floor) * relevance) * self.personal(propensity)

    def examination(self, n: int) -> np.ndarray:
        return (1.0 / np.arange(1, n + 1)) ** self.eta

    def simulate(self, rng: np.random.Generator, grades: np.ndarray, propensity: np.ndarray,
                 in_stock: np.ndarray) -> list[tuple[int, str]]:
        """Interactions for one shown list: (0-based position, type) in order."""
        n = len(grades)
        clicks = rng.random(n) < self.examination(n) * self.attractiveness(grades, propensity)
        out: list[tuple[int, str]] = []
        relevance = np.asarray(grades, dtype=float) / self.max_grade
        personal = self.personal(propensity)
        for position in np.flatnonzero(clicks):
            out.append((int(position), "click"))
            if rng.random() < self.cart * relevance[position] * personal[position] and in_stock[position]:
                out.append((int(position), "add_to_cart"))
                if rng.random() < self.buy:
                    out.append((int(position), "purchase"))
        return out

    def true_gains(self, grades: np.ndarray, propensity: np.ndarray) -> np.ndarray:
        return np.asarray(grades, dtype=float) * self.personal(propensity)


def ndcg(gains_served: np.ndarray, gains_all: np.ndarray, k: int = 10) -> float:
    """NDCG@k of served gains against the best order of all the query's gains."""
    def dcg(values: np.ndarray) -> float:
        return float(sum(g / math.log2(i + 2) for i, g in enumerate(values[:k])))

    ideal = dcg(np.sort(np.asarray(gains_all, dtype=float))[::-1])
    return dcg(np.asarray(gains_served, dtype=float)) / ideal if ideal > 0 else 0.0
