"""Paired comparison statistics on hand-made arrays with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from core.errors import InvalidInput
from evaluation.compare import (
    Comparison,
    changes,
    check_pair,
    compare,
    compare_per_query,
    compare_results,
    paired_bootstrap,
    paired_p_value,
)
from evaluation.harness import EvalResult

A = [0.1, 0.5, 0.9, 0.3, 0.7, 0.2, 0.6, 0.4]


def test_identical_arrays_have_zero_interval_and_p_one() -> None:
    interval = paired_bootstrap(A, A, resamples=1000, seed=1)
    assert (interval.low, interval.high) == (0.0, 0.0)
    assert paired_p_value(A, A) == 1.0
    c = compare(A, A)
    assert (c.diff, c.ci_low, c.ci_high, c.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert (c.better, c.worse, c.ties, c.n) == (0, 0, len(A), len(A))


def test_constant_shift_interval_is_the_shift_and_p_zero() -> None:
    a = np.array([0.0, 0.25, 0.5, 0.125])
    b = a + 0.25  # exact in binary: every difference is 0.25
    interval = paired_bootstrap(a, b)
    assert (interval.low, interval.high) == (0.25, 0.25)
    assert paired_p_value(a, b) == 0.0
    c = compare(a, b)
    assert c.diff == 0.25 and (c.better, c.worse, c.ties) == (4, 0, 0)
    # a shift with rounding noise in the differences still gives the shift
    noisy = paired_bootstrap(A, [x + 0.1 for x in A])
    assert noisy.low == pytest.approx(0.1) and noisy.high == pytest.approx(0.1)


def test_swapping_sides_mirrors_the_interval_and_keeps_p() -> None:
    b = [0.3, 0.4, 1.0, 0.3, 0.9, 0.1, 0.8, 0.7]
    forward, backward = paired_bootstrap(A, b, seed=3), paired_bootstrap(b, A, seed=3)
    assert forward.low == pytest.approx(-backward.high) and forward.high == pytest.approx(-backward.low)
    assert paired_p_value(A, b) == pytest.approx(paired_p_value(b, A))


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(200)
    b = a + rng.normal(0.05, 0.1, 200)
    first, again = paired_bootstrap(a, b, seed=5), paired_bootstrap(a, b, seed=5)
    assert first == again
    mean = float(np.mean(b - a))
    assert first.low < mean < first.high
    # close to the normal interval mean +- 1.96 * sd / sqrt(n)
    half = 1.96 * np.std(b - a, ddof=1) / math.sqrt(200)
    assert first.low == pytest.approx(mean - half, abs=0.004)
    assert first.high == pytest.approx(mean + half, abs=0.004)


def test_bootstrap_in_chunks_matches_the_level(monkeypatch: pytest.MonkeyPatch) -> None:
    import evaluation.compare as compare_module

    monkeypatch.setattr(compare_module, "_CHUNK", 50)  # many small batches
    interval = paired_bootstrap([0.0, 1.0], [1.0, 1.0], resamples=4000, seed=0)
    # resampled means of diffs [1, 0]: 0, 0.5 or 1 with probability 1/4, 1/2, 1/4
    assert (interval.low, interval.high) == (0.0, 1.0)
    narrow = paired_bootstrap([0.0, 1.0], [1.0, 1.0], resamples=4000, seed=0, level=0.4)
    assert (narrow.low, narrow.high) == (0.5, 0.5)


def test_p_value_matches_scipy_paired_t_test() -> None:
    b = [0.3, 0.4, 1.0, 0.3, 0.9, 0.1, 0.8, 0.7]
    assert paired_p_value(A, b) == pytest.approx(stats.ttest_rel(b, A).pvalue)
    # hand-computed: diffs [1, -1, 2, 2] -> mean 1, sd sqrt(2), t = 1 / (sqrt(2) / 2) = sqrt(2), 3 df
    p = paired_p_value([0, 0, 0, 0], [1, -1, 2, 2])
    assert p == pytest.approx(2 * stats.t.sf(math.sqrt(2), 3))
    assert math.isnan(paired_p_value([0.5], [0.7]))


def test_changes_count_better_worse_ties() -> None:
    counted = changes([0.1, 0.5, 0.5, 0.9], [0.2, 0.5, 0.4, 0.9 + 1e-12])
    assert (counted.better, counted.worse, counted.ties) == (1, 1, 2)  # 1e-12 is a tie, not a gain


def test_bad_arrays_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="one length"):
        compare([0.1, 0.2], [0.1])
    with pytest.raises(InvalidInput, match="NaN"):
        compare([0.1, float("nan")], [0.1, 0.2])
    with pytest.raises(InvalidInput, match="resamples 0"):
        paired_bootstrap([0.1], [0.2], resamples=0)


def test_compare_per_query_pairs_by_query_id() -> None:
    first = {"ndcg@10": {"q1": 0.5, "q2": 0.25, "q3": 1.0}, "recall@100": {"q1": 1.0}}
    second = {"ndcg@10": {"q3": 1.0, "q2": 0.5, "q1": 0.75}, "recall@100": {"q1": 1.0}, "extra": {"q1": 1.0}}
    out = compare_per_query(first, second)
    assert set(out) == {"ndcg@10", "recall@100"}
    ndcg = out["ndcg@10"]
    assert ndcg.n == 3 and ndcg.mean_a == pytest.approx(1.75 / 3) and ndcg.mean_b == pytest.approx(2.25 / 3)
    assert ndcg.diff == pytest.approx(0.5 / 3) and (ndcg.better, ndcg.worse, ndcg.ties) == (2, 0, 1)
    assert ndcg.ci_low <= ndcg.diff <= ndcg.ci_high
    assert out["recall@100"].p_value == 1.0


def test_comparison_json_rounds_figures() -> None:
    c = Comparison(n=3, mean_a=0.123456, mean_b=0.2, diff=0.076544, ci_low=0.01234567, ci_high=0.1,
                   p_value=0.000123456, better=2, worse=0, ties=1)
    assert c.to_json() == {"mean_a": 0.1235, "mean_b": 0.2, "diff": 0.0765, "ci_low": 0.0123, "ci_high": 0.1,
                           "p_value": 0.0001235, "better": 2, "worse": 0, "ties": 1}


def _result(pipeline: str, subset: str = "all") -> EvalResult:
    return EvalResult(dataset="d", mode="retrieval", pipeline=pipeline, split="dev", queries=2, skipped=0,
                      metrics={}, latency_ms={}, subset=subset,
                      per_query={"ndcg@10": {"q1": 0.5, "q2": 1.0}})


def test_compare_results_needs_two_pipelines_on_the_same_queries() -> None:
    out = compare_results(_result("bm25"), _result("hybrid"))
    assert out["ndcg@10"].diff == 0.0 and out["ndcg@10"].n == 2
    with pytest.raises(InvalidInput, match="--compare 'bm25' names the same pipeline as --pipeline"):
        compare_results(_result("bm25"), _result("bm25"))
    with pytest.raises(InvalidInput, match="same queries"):
        compare_results(_result("bm25"), _result("hybrid", subset="misspelled"))
    check_pair("bm25", "dense")
    one, other = _result("bm25"), _result("hybrid")  # two datasets in folders of one name
    one.details["dataset_digest"], other.details["dataset_digest"] = "aaaa", "bbbb"
    with pytest.raises(InvalidInput, match="different queries or judgments under one dataset name 'd'"):
        compare_results(one, other, saved=True)
    deep, shallow = _result("bm25"), _result("bm25")  # one pipeline, measured with other settings
    deep.details["depth"], shallow.details["depth"] = 1000, 200
    with pytest.raises(InvalidInput, match=r"other evaluation settings \(depth 1000 and 200, --depth\)"):
        compare_results(deep, shallow, saved=True)
    empty = _result("hybrid")
    empty.per_query = {"ndcg@10": {}}
    with pytest.raises(InvalidInput, match="share no scored query"):
        compare_results(_result("bm25"), empty)
