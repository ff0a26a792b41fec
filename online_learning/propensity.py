"""Position bias from the logs: the position-based click model fitted by EM.

Position-based model (Craswell et al. 2008; Chuklin, Markov and de Rijke 2015):
``P(click | q, d, position k) = theta_k * gamma_qd``, with ``theta_k`` the
chance a shopper examines position k and ``gamma_qd`` how attractive product d
is for query q. EM (Wang et al. 2018, "regression EM" without the regression)
estimates both from impressions and clicks alone; the same product shown at
different positions (across users, experiments, personalization and catalog
changes) is what identifies ``theta``. We use ``theta`` as the propensity for
inverse propensity weighting in retraining, normalised so ``theta_1 = 1``.

Why not result randomization: it needs a share of traffic served in a
deliberately worse order; EM on the position-based model uses the traffic we
have. ``tests/online_learning/test_propensity.py`` checks that it recovers the
simulator's true examination curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PositionModel:
    theta: np.ndarray            # examination per position (index 0 = position 1), theta[0] = 1
    gamma: dict[tuple[str, str], float]
    iterations: int
    # positions after the first whose examination came out at or above the first's, so 1 (clipped): many of them
    # and the position-bias correction is off; position 1 then mostly shows products rarely clicked anywhere
    # (pins, a fixed product on top), which the model reads as position 1 looked at less
    clipped: int = 0

    def propensity(self, positions: np.ndarray) -> np.ndarray:
        idx = np.clip(np.asarray(positions, dtype=int) - 1, 0, len(self.theta) - 1)
        return self.theta[idx]


def fit_position_model(impressions: pd.DataFrame, max_position: int = 10, iterations: int = 100,
                       prior: tuple[float, float] = (1.0, 1.0), tol: float = 1e-6) -> PositionModel:
    """EM on ``impressions`` with columns query, product_id, position (1-based), clicked (0/1).

    ``prior``: the Beta prior of each (query, product)'s attractiveness, uniform by default. A prior
    that holds attractiveness low (Beta(1, 10) did) leaves examination to explain the clicks where
    each pair was shown a few times, as in real logs: the top positions all came out near 1."""
    data = impressions[impressions["position"].between(1, max_position)]
    pos = data["position"].to_numpy(dtype=int) - 1
    clicked = data["clicked"].to_numpy(dtype=float)
    pairs, pair_idx = np.unique(data["query"].astype(str) + "\x1f" + data["product_id"].astype(str), return_inverse=True)
    theta = np.full(max_position, 0.5)
    gamma = np.full(len(pairs), 0.2)
    a, b = prior
    iteration = 0  # none asked for: the starting model
    for iteration in range(1, iterations + 1):
        t, g = theta[pos], gamma[pair_idx]
        denom = np.maximum(1 - t * g, 1e-12)
        examined = clicked + (1 - clicked) * t * (1 - g) / denom
        attractive = clicked + (1 - clicked) * (1 - t) * g / denom
        new_theta = np.bincount(pos, weights=examined, minlength=max_position) / np.maximum(
            np.bincount(pos, minlength=max_position), 1)
        new_gamma = (np.bincount(pair_idx, weights=attractive, minlength=len(pairs)) + a) / (
            np.bincount(pair_idx, minlength=len(pairs)) + a + b)
        change = max(np.abs(new_theta - theta).max(), np.abs(new_gamma - gamma).max())
        theta, gamma = np.clip(new_theta, 1e-3, 1.0), new_gamma
        if change < tol:
            break
    relative = theta / theta[0]
    theta = np.clip(relative, 0.02, 1.0)
    keys = [tuple(p.split("\x1f", 1)) for p in pairs]
    return PositionModel(theta, dict(zip(keys, gamma.tolist())), iteration, int((relative[1:] >= 1.0).sum()))
