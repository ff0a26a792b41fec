"""Paired comparison of two pipelines on the same queries.

Each metric is compared query by query: the per-query values of pipeline A and
pipeline B (``EvalResult.per_query``) on the queries both were scored on, and
the difference ``B - A``:

- the mean difference with a **paired bootstrap** percentile interval (queries
  resampled with replacement, ``resamples`` times, seeded, so a run repeats;
  Efron and Tibshirani 1993; the standard test for IR metrics, Sakai 2006);
- a two-sided **paired t-test** p-value (``scipy.stats.ttest_rel``; with
  hundreds of queries the mean difference is close to normal). Degenerate cases
  are defined, not NaN: no difference on any query gives p = 1, the same
  non-zero difference on every query gives p = 0;
- how many queries got better, worse, or tied (``|B - A| <= tol``).

Everything here is a pure function of arrays; :func:`compare_results` pairs two
harness results by query id.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from core.errors import InvalidInput
from evaluation.harness import EvalResult

RESAMPLES = 10_000
SEED = 0
LEVEL = 0.95
TIE = 1e-9  # |B - A| at most this is a tie (metric values are sums of a few floats)
_CHUNK = 2_000_000  # bootstrap indices drawn per batch (resamples x queries), bounds the memory


@dataclass(frozen=True)
class Interval:
    """A confidence interval of the mean difference B - A."""

    low: float
    high: float
    level: float = LEVEL

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Changes:
    better: int
    worse: int
    ties: int


@dataclass(frozen=True)
class Comparison:
    """One metric compared on ``n`` paired queries."""

    n: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    better: int
    worse: int
    ties: int

    def to_json(self, digits: int = 4) -> dict[str, float | int]:
        """The figures, means and differences rounded to ``digits`` (as the harness rounds)."""
        out: dict[str, float | int] = {k: v for k, v in asdict(self).items() if k != "n"}
        for key in ("mean_a", "mean_b", "diff", "ci_low", "ci_high"):
            out[key] = round(float(out[key]), digits)
        out["p_value"] = float(f"{self.p_value:.4g}")
        return out


def _pair(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise InvalidInput(f"paired values need two 1-d arrays of one length; got shapes {x.shape} and {y.shape}")
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        raise InvalidInput("paired values must be finite numbers; found NaN or infinity")
    return x, y


def paired_bootstrap(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                     resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> Interval:
    """Percentile bootstrap interval of ``mean(b - a)``, resampling pairs (queries) with replacement.

    Identical arrays give [0, 0]; a constant shift ``c`` gives [c, c]. An empty
    pair gives NaN bounds.
    """
    if resamples < 1:
        raise InvalidInput(f"resamples {resamples} must be >= 1")
    if not 0 < level < 1:
        raise InvalidInput(f"level {level} must be in (0, 1)")
    x, y = _pair(a, b)
    diffs = y - x
    n = len(diffs)
    if n == 0:
        return Interval(math.nan, math.nan, level)
    if np.all(diffs == diffs[0]):  # every resample has this mean: no rounding noise in the bounds
        return Interval(float(diffs[0]), float(diffs[0]), level)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, _CHUNK // n)
    for start in range(0, resamples, step):
        stop = min(resamples, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diffs[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(low), float(high), level)


def paired_p_value(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided paired t-test p-value of ``mean(b - a) == 0``.

    All differences zero: 1.0. All differences equal and non-zero: 0.0. Fewer
    than two pairs: NaN (no variance to test against).
    """
    x, y = _pair(a, b)
    diffs = y - x
    if len(diffs) and np.all(diffs == 0):
        return 1.0
    if len(diffs) < 2:
        return math.nan
    if np.all(diffs == diffs[0]):
        return 0.0
    return float(stats.ttest_rel(y, x).pvalue)


def changes(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, tol: float = TIE) -> Changes:
    """How many pairs got better (b > a + tol), worse (b < a - tol) or tied."""
    x, y = _pair(a, b)
    diffs = y - x
    better, worse = int((diffs > tol).sum()), int((diffs < -tol).sum())
    return Changes(better, worse, len(diffs) - better - worse)


def _mean(values: np.ndarray) -> float:
    return statistics.fmean(values.tolist()) if len(values) else math.nan  # as the harness averages


def compare(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, resamples: int = RESAMPLES,
            seed: int = SEED, level: float = LEVEL) -> Comparison:
    """Every paired figure of B against A on one metric."""
    x, y = _pair(a, b)
    interval = paired_bootstrap(x, y, resamples, seed, level)
    counted = changes(x, y)
    return Comparison(n=len(x), mean_a=_mean(x), mean_b=_mean(y), diff=_mean(y - x), ci_low=interval.low,
                      ci_high=interval.high, p_value=paired_p_value(x, y), better=counted.better,
                      worse=counted.worse, ties=counted.ties)


def check_pair(first: str, second: str) -> None:
    """:class:`InvalidInput` when a pipeline would be compared with itself."""
    if first == second:
        raise InvalidInput(f"--compare {second!r} names the same pipeline as --pipeline; "
                           "compare two different pipelines (e.g. --pipeline bm25 --compare hybrid)")


def compare_per_query(first: Mapping[str, Mapping[str, float]], second: Mapping[str, Mapping[str, float]],
                      resamples: int = RESAMPLES, seed: int = SEED,
                      level: float = LEVEL) -> dict[str, Comparison]:
    """Compare per-query values (metric -> query id -> value) metric by metric.

    Only metrics both sides hold are compared, each on the query ids both sides
    scored (in sorted order, so the bootstrap is reproducible).
    """
    out = {}
    for metric, values_a in first.items():
        values_b = second.get(metric)
        if values_b is None:
            continue
        qids = sorted(set(values_a) & set(values_b))
        out[metric] = compare([values_a[q] for q in qids], [values_b[q] for q in qids], resamples, seed, level)
    return out


def compare_results(first: EvalResult, second: EvalResult, resamples: int = RESAMPLES, seed: int = SEED,
                    level: float = LEVEL, saved: bool = False) -> dict[str, Comparison]:
    """Compare ``second`` (B) against ``first`` (A): two pipelines evaluated on the same queries
    (``saved``: two saved runs, which may be one pipeline under two settings or models)."""
    if not saved:
        check_pair(first.pipeline, second.pipeline)
    same = ("dataset", "mode", "split", "subset")
    if any(getattr(first, k) != getattr(second, k) for k in same):
        raise InvalidInput("a paired comparison needs both results on the same queries; got "
                           f"{[getattr(first, k) for k in same]} and {[getattr(second, k) for k in same]}")
    digests = [r.details.get("dataset_digest") for r in (first, second)]
    if None not in digests and digests[0] != digests[1]:
        raise InvalidInput(f"the two results come from different queries or judgments under one dataset name "
                           f"{first.dataset!r} (digests {digests[0]} and {digests[1]}); compare runs of one dataset")
    for key, what in (("mrr_min_grade", "--mrr-threshold"), ("recall_min_grade", "--recall-threshold"),
                      ("depth", "--depth")):  # the same metric under other settings is another metric
        values = [r.details.get(key) for r in (first, second)]
        if None not in values and values[0] != values[1]:
            raise InvalidInput(f"the two results were measured with other evaluation settings ({key} {values[0]} "
                               f"and {values[1]}, {what}): evaluate both with the same")
    shared = set(first.per_query.get("ndcg@10", {})) & set(second.per_query.get("ndcg@10", {}))
    if not shared:
        raise InvalidInput("the two results share no scored query: nothing to pair (an empty subset or split?)")
    return compare_per_query(first.per_query, second.per_query, resamples, seed, level)
