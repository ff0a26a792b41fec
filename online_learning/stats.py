"""Significance for experiment metrics, with the sample size they need.

- A/B metrics (CTR, add-to-cart and purchase rates, revenue per search, latency): a per-search
  mean compared between arms whose unit of assignment is the shopper, not the search. A
  shopper's searches are not independent (one who buys often buys on every search), so the
  variance is the shopper-level (cluster-robust, delta-method) variance of the ratio
  sum over shoppers / searches over shoppers, and the test a t-test of the difference with
  its 95% interval (:func:`clustered_means`; degrees of freedom from the shoppers of the smaller
  arm, so an arm of a few shoppers is not over-trusted). Treating each search as independent
  called one A/A test in five significant on SIMULATED traffic (benchmarks/ab_calibration.py).
- Looking again every night: each comparison also carries an always-valid p-value (a mixture
  sequential probability ratio test, mSPRT: :func:`sequential_p`). Promoting the first night a
  fixed-horizon p falls under 0.05 promotes an A/A test about one time in ten over two weeks of
  nightly looks; the always-valid p stays under alpha however often it is read, at the cost of
  some power. The promotion policy decides on it (:mod:`online_learning.promotion`).
- Interleaving: sign test (exact binomial) on the queries with a winner.
- Replays (the same simulated sessions served by two models): paired t-test
  on the per-session differences, t-based 95% interval of the mean difference.
- Minimum sample size per arm to detect a relative lift on a rate at
  alpha = 0.05 (two-sided) with 80% power, for independent searches; times the measured
  design effect when shoppers make several searches (:func:`design_effect`).
- Sample ratio mismatch: a chi-square test of the shoppers per arm against the configured
  weights (:func:`sample_ratio_p`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

Z_95 = 1.959963984540054
Z_80 = 0.8416212335729143
MIXTURE_LIFT = 0.1  # the sequential test's prior spread of the effect, relative to the control's mean


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
    sequential_p: float = float("nan")  # always-valid (mSPRT) p-value; NaN where none was computed

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def to_json(self) -> dict[str, float | str | bool | None]:
        """The figures, rounded; a figure that is not a number (no interval yet, no lift from a zero) is null."""
        return {**{k: ((round(v, 6) if math.isfinite(v) else None) if isinstance(v, float) else v)
                   for k, v in self.__dict__.items()}, "significant": self.significant}


@dataclass(frozen=True)
class Clustered:
    """One arm's per-search mean of a metric, from per-shopper sums: the mean, its cluster-robust
    variance, the searches and the shoppers."""

    mean: float
    variance: float
    searches: int
    shoppers: int


def clustered_mean(totals: np.ndarray, searches: np.ndarray) -> Clustered:
    """The per-search mean ``sum(totals) / sum(searches)`` of one arm (``totals[i]``: shopper i's sum of the
    metric over their ``searches[i]`` searches) and its delta-method variance, with the small-sample factor
    G / (G - 1) over G shoppers (NaN mean for no shopper, infinite variance for one)."""
    totals, searches = np.asarray(totals, dtype=float), np.asarray(searches, dtype=float)
    shoppers, n = len(totals), float(searches.sum())
    if shoppers == 0 or n == 0:
        return Clustered(float("nan"), float("inf"), int(n), shoppers)
    mean = float(totals.sum() / n)
    if shoppers < 2:
        return Clustered(mean, float("inf"), int(n), shoppers)
    residual = totals - mean * searches
    variance = float((residual ** 2).sum() / n ** 2 * shoppers / (shoppers - 1))
    return Clustered(mean, variance, int(n), shoppers)


def sequential_p(difference: float, variance: float, spread: float) -> float:
    """The always-valid p-value of a mean ``difference`` whose estimate has ``variance``, against no
    difference: 1 / the likelihood ratio of a normal mixture of effects with standard deviation ``spread``
    (mSPRT; Johari et al., "Always valid inference", 2017). Rejecting when it falls under alpha, at any of
    however many looks at growing data, wrongly rejects with probability at most alpha. 1 when nothing
    can be told (no spread, an infinite or undefined variance); 0 for a difference without variance."""
    if not (spread > 0 and variance >= 0 and all(map(math.isfinite, (spread, difference, variance)))):
        return 1.0
    if variance == 0:
        return 1.0 if difference == 0 else 0.0
    # in units of the estimate's standard error, so that no square overflows or underflows
    sd = math.sqrt(variance)
    z, k = abs(difference) / sd, spread / sd
    if z > 1e150:  # its square alone outweighs any width's log
        return 0.0
    if k > 1e150:  # k^2 / (1 + k^2) is 1 and log1p(k^2) is 2 log k
        log_ratio = 0.5 * z * z - math.log(k)
    else:
        log_ratio = 0.5 * z * z * k * k / (1 + k * k) - 0.5 * math.log1p(k * k)
    return float(min(1.0, math.exp(-log_ratio)))


def clustered_means(metric: str, totals_a: np.ndarray, searches_a: np.ndarray, totals_b: np.ndarray,
                    searches_b: np.ndarray, mixture_lift: float = MIXTURE_LIFT) -> Comparison:
    """Arm b against arm a on a per-search mean, each arm given per shopper (:func:`clustered_mean`): a
    t-test of the difference (the smaller arm's shoppers less one degrees of freedom) and its 95% interval,
    and the always-valid p-value (:func:`sequential_p`, effects spread as ``mixture_lift`` times both arms'
    pooled mean: the common mean when there is no difference, and not 0 when arm a's is).
    An arm with fewer than two shoppers gives p = 1 and
    no interval (nothing can be told yet); no variance in either arm gives p = 1 for equal means, else 0."""
    a, b = clustered_mean(totals_a, searches_a), clustered_mean(totals_b, searches_b)
    diff = b.mean - a.mean
    se = math.sqrt(a.variance + b.variance)
    if not math.isfinite(se):
        p_value, low, high = 1.0, float("nan"), float("nan")
    elif se == 0:
        p_value, low, high = (1.0 if diff == 0 else 0.0), diff, diff
    else:  # Student's t on the smaller arm's shoppers less one: the normal's tails are too thin for few shoppers
        dof = min(a.shoppers, b.shoppers) - 1
        p_value, half = float(2 * sps.t.sf(abs(diff / se), dof)), float(sps.t.ppf(0.975, dof)) * se
        low, high = diff - half, diff + half
    lift = diff / a.mean if a.mean and math.isfinite(a.mean) else float("nan")
    pooled = (a.mean * a.searches + b.mean * b.searches) / (a.searches + b.searches) if a.searches and b.searches \
        else float("nan")
    always = sequential_p(diff, a.variance + b.variance, mixture_lift * abs(pooled))
    return Comparison(metric, a.mean, b.mean, lift, low, high, p_value, a.searches, b.searches, always)


def design_effect(totals: np.ndarray, searches: np.ndarray) -> float:
    """How many times the variance of a per-search rate exceeds the one of as many independent searches
    (1 when every shopper searched once, or nothing varies): what a sample size made for independent
    searches is multiplied by."""
    arm = clustered_mean(totals, searches)
    if not math.isfinite(arm.variance) or not 0 < arm.mean < 1:
        return 1.0
    # with the clustered variance's small-sample factor too, so that one search per shopper gives exactly 1
    independent = arm.mean * (1 - arm.mean) / arm.searches * arm.shoppers / (arm.shoppers - 1)
    return max(1.0, arm.variance / independent)


def sample_ratio_p(observed: dict[str, int], weights: dict[str, float]) -> float:
    """The chi-square p-value of ``observed`` units per arm against the shares ``weights`` configures (1.0
    when fewer than two arms have weights or nothing was observed)."""
    arms = [a for a in weights if weights[a] > 0]
    total = sum(observed.get(a, 0) for a in arms)
    if len(arms) < 2 or total == 0:
        return 1.0
    share = sum(weights[a] for a in arms)
    expected = [total * weights[a] / share for a in arms]
    return float(sps.chisquare([observed.get(a, 0) for a in arms], expected).pvalue)


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


def min_sample_size(base_rate: float, relative_lift: float, alpha: float = 0.05) -> int:
    """Searches per arm to detect ``relative_lift`` on a rate of ``base_rate`` at ``alpha`` (two-sided), 80%
    power."""
    p1, p2 = base_rate, base_rate * (1 + relative_lift)
    if not 0 < p1 < 1 or not 0 < p2 < 1 or p1 == p2:
        return 0
    z = Z_95 if alpha == 0.05 else float(sps.norm.ppf(1 - alpha / 2))
    return math.ceil((z + Z_80) ** 2 * (p1 * (1 - p1) + p2 * (1 - p2)) / (p2 - p1) ** 2)
