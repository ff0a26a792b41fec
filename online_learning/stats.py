"""Significance for experiment metrics, with the sample size they need.

- Rates (CTR, add-to-cart, purchase rate): two-proportion z-test (pooled),
  Wald 95% interval of the difference.
- Means (revenue per search, latency): bootstrap 95% interval of the
  difference (percentile method, seeded).
- Interleaving: sign test (exact binomial) on the queries with a winner.
- Replays (the same simulated sessions served by two models): paired t-test
  on the per-session differences, t-based 95% interval of the mean difference.
- Minimum sample size per arm to detect a relative lift on a rate at
  alpha = 0.05 (two-sided) with 80% power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

Z_95 = 1.959963984540054
Z_80 = 0.8416212335729143


@dataclass(frozen=True)
class Comparison:
    metric: str
    control: float
    treatment: float
    lift: float
    ci_low: float
    ci_high: float
    p_value: float
    n_control: int
    n_treatment: int

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def to_json(self) -> dict[str, float | str | bool]:
        return {**{k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()},
                "significant": self.significant}


def two_proportions(metric: str, successes_a: int, n_a: int, successes_b: int, n_b: int) -> Comparison:
    p_a, p_b = successes_a / max(1, n_a), successes_b / max(1, n_b)
    pooled = (successes_a + successes_b) / max(1, n_a + n_b)
    se_pooled = math.sqrt(max(pooled * (1 - pooled) * (1 / max(1, n_a) + 1 / max(1, n_b)), 1e-18))
    z = (p_b - p_a) / se_pooled
    p_value = float(2 * sps.norm.sf(abs(z)))
    se = math.sqrt(p_a * (1 - p_a) / max(1, n_a) + p_b * (1 - p_b) / max(1, n_b))
    lift = (p_b - p_a) / p_a if p_a > 0 else float("nan")
    return Comparison(metric, p_a, p_b, lift, p_b - p_a - Z_95 * se, p_b - p_a + Z_95 * se, p_value, n_a, n_b)


def bootstrap_means(metric: str, a: np.ndarray, b: np.ndarray, rounds: int = 2000, seed: int = 0) -> Comparison:
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diffs = np.array([rng.choice(b, len(b)).mean() - rng.choice(a, len(a)).mean() for _ in range(rounds)])
    low, high = np.percentile(diffs, [2.5, 97.5])
    p_value = float(min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())))
    lift = (b.mean() - a.mean()) / a.mean() if a.mean() else float("nan")
    return Comparison(metric, float(a.mean()), float(b.mean()), float(lift), float(low), float(high), p_value,
                      len(a), len(b))


def paired_means(metric: str, a: np.ndarray, b: np.ndarray) -> Comparison:
    """``b`` vs ``a`` measured on the same units (``a[i]`` and ``b[i]`` are one session served twice)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"paired samples need the same length >= 2, got {a.size} and {b.size}")
    diff = b - a
    se = float(diff.std(ddof=1) / math.sqrt(diff.size))
    if se == 0:
        p_value = 1.0 if diff.mean() == 0 else 0.0
    else:
        p_value = float(sps.ttest_rel(b, a).pvalue)
    half = float(sps.t.ppf(0.975, diff.size - 1) * se)
    lift = (b.mean() - a.mean()) / a.mean() if a.mean() else float("nan")
    return Comparison(metric, float(a.mean()), float(b.mean()), float(lift), float(diff.mean() - half),
                      float(diff.mean() + half), p_value, a.size, b.size)


def sign_test(wins_treatment: int, wins_control: int) -> float:
    n = wins_treatment + wins_control
    if n == 0:
        return 1.0
    return float(sps.binomtest(wins_treatment, n, 0.5).pvalue)


def min_sample_size(base_rate: float, relative_lift: float) -> int:
    """Searches per arm to detect ``relative_lift`` on a rate of ``base_rate``."""
    p1, p2 = base_rate, base_rate * (1 + relative_lift)
    if not 0 < p1 < 1 or not 0 < p2 < 1 or p1 == p2:
        return 0
    return math.ceil((Z_95 + Z_80) ** 2 * (p1 * (1 - p1) + p2 * (1 - p2)) / (p2 - p1) ** 2)
