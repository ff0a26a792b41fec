from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from statsmodels.stats.proportion import proportions_ztest

from online_learning.experiments import Arm, Experiment, assign, interleaving_winner, team_draft
from online_learning.stats import (
    clustered_means,
    design_effect,
    min_sample_size,
    sample_ratio_p,
    sign_test,
)


def test_assignment_is_stable_and_follows_weights() -> None:
    exp = Experiment(name="ltr-v2", arms={"control": Arm(ltr="v1", weight=3), "treatment": Arm(ltr="v2", weight=1)})
    assert all(assign(exp, "u42") == assign(exp, "u42") for _ in range(5))
    shares = Counter(assign(exp, f"u{i}") for i in range(20000))
    assert shares["treatment"] / 20000 == pytest.approx(0.25, abs=0.015)
    other = exp.model_copy(update={"name": "ltr-v3"})
    assert sum(assign(exp, f"u{i}") != assign(other, f"u{i}") for i in range(2000)) > 300


def test_experiment_config_errors() -> None:
    with pytest.raises(ValueError, match="control arm 'base' is not one of"):
        Experiment(name="x", control="base", arms={"a": Arm(ltr="v1"), "b": Arm(ltr="v2")})
    with pytest.raises(ValueError, match="exactly 2 arms"):
        Experiment(name="x", mode="interleave", arms={"control": Arm(ltr="v1"), "b": Arm(ltr="v2"), "c": Arm(ltr="v3")})
    for weight in (float("inf"), float("nan"), 1e308, 0, 5e-324, 9e-7):  # a share must be a number in [1e-6, 1e6]
        with pytest.raises(ValueError, match="weight"):
            Arm(ltr="v1", weight=weight)
    tiny = Experiment(name="x", arms={"control": Arm(ltr="v1", weight=1e-6), "t": Arm(ltr="v2", weight=1e-6)})
    assert Counter(assign(tiny, f"u{i}") for i in range(4000))["t"] == pytest.approx(2000, abs=150)  # an even split
    with pytest.raises(ValueError, match="arm name '<b>x</b>' is not allowed"):
        Experiment(name="x", arms={"control": Arm(ltr="v1"), "<b>x</b>": Arm(ltr="v2")})
    with pytest.raises(ValueError, match="arm name 'interleaved' is reserved"):  # the log's arm of interleaved ones
        Experiment(name="x", arms={"control": Arm(ltr="v1"), "interleaved": Arm(ltr="v2")})
    with pytest.raises(ValueError, match=r"ltr\n.*should match pattern '\^v\[0-9\]\{1,6\}\$'"):
        Arm(ltr="v1234567")  # no registry version has more digits: refused as the admin API's versions are


def test_an_experiment_saved_before_a_rule_still_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from online_learning.experiments import read_config

    arms = {"control": {"ltr": "v1", "weight": 5e-324}, "new model": {"ltr": "v2", "weight": 1e9},
            "interleaved": {"ltr": "v3"}}
    saved = {"experiment": {"name": "x", "arms": arms},
             "shadow": None}
    (tmp_path / "current.json").write_text(json.dumps(saved))
    experiment, _ = read_config(tmp_path / "current.json")  # the server that runs it keeps loading
    assert experiment is not None and {"new model", "interleaved"} <= set(experiment.arms)


def test_team_draft_is_fair_and_complete() -> None:
    a, b = ["p1", "p2", "p3", "p4"], ["p3", "p1", "p5", "p6"]
    merged, teams = team_draft(a, b, 4, random.Random(0), ("control", "treatment"))
    assert len(set(merged)) == 4 and abs(teams.count("control") - teams.count("treatment")) <= 1
    for product, team in zip(merged, teams):
        assert product in (a if team == "control" else b)
    # each team's picks keep its own order
    assert [p for p, t in zip(merged, teams) if t == "control"] == [p for p in a if p in merged and
                                                                      teams[merged.index(p)] == "control"]
    # identical rankers: the merged list is that ranking
    same, _ = team_draft(a, a, 4, random.Random(1))
    assert same == a
    assert interleaving_winner(["a", "b", "a"], [0, 2], ("a", "b")) == "a"
    assert interleaving_winner(["a", "b"], [0, 1], ("a", "b")) is None


def shoppers(rng: np.random.Generator, count: int, searches: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """``count`` shoppers' purchases over ``searches`` searches each, every shopper with a purchase rate of
    their own (Beta, mean ``rate``): who buys once tends to buy again."""
    own = rng.beta(rate * 5, (1 - rate) * 5, count)
    return rng.binomial(searches, own).astype(float), np.full(count, searches)


def test_clustered_means_match_statsmodels_cluster_robust_ols() -> None:
    import statsmodels.api as sm

    rng = np.random.default_rng(4)
    (ya, na), (yb, nb) = shoppers(rng, 150, 12, 0.1), shoppers(rng, 150, 12, 0.14)
    result = clustered_means("purchase_rate", ya, na, yb, nb)
    assert result.control == pytest.approx(ya.sum() / na.sum())
    assert result.treatment == pytest.approx(yb.sum() / nb.sum())
    # the same test as a regression of each search's outcome on its arm, errors clustered by shopper
    rows = [(arm, shopper, int(k < bought)) for arm, (y, n) in enumerate([(ya, na), (yb, nb)])
            for shopper, (bought, searches) in enumerate(zip(y, n)) for k in range(int(searches))]
    arm = np.array([r[0] for r in rows], dtype=float)
    groups = np.array([r[0] * 1000 + r[1] for r in rows])
    fit = sm.OLS(np.array([r[2] for r in rows], dtype=float), sm.add_constant(arm)).fit(
        cov_type="cluster", cov_kwds={"groups": groups})
    se = (result.ci_high - result.ci_low) / (2 * 1.959963984540054)
    assert result.treatment - result.control == pytest.approx(fit.params[1])
    assert se == pytest.approx(fit.bse[1], rel=0.01)  # the small-sample factors differ by < 1%
    once = clustered_means("ctr", np.array([1.0, 0, 1, 0, 0]), np.ones(5), np.array([1.0, 1, 1, 0, 1]), np.ones(5))
    assert once.ci_high - once.ci_low > 0 and 0 < once.p_value < 1  # one search each: per-search variance


def test_identical_arms_are_called_different_about_one_time_in_twenty() -> None:
    """A/A experiments on shoppers who search repeatedly: the shopper-level test keeps its 5% error rate,
    where a test that takes every search as independent (as this module's first one did) does not."""
    rng = np.random.default_rng(7)
    clustered, naive = [], []
    for _ in range(400):
        (ya, na), (yb, nb) = shoppers(rng, 100, 20, 0.1), shoppers(rng, 100, 20, 0.1)
        clustered.append(clustered_means("purchase_rate", ya, na, yb, nb).significant)
        _, p_value = proportions_ztest([yb.sum(), ya.sum()], [nb.sum(), na.sum()])
        naive.append(p_value < 0.05)
    assert 0.02 <= np.mean(clustered) <= 0.09
    assert np.mean(naive) > 0.2
    few = [clustered_means("purchase_rate", *shoppers(rng, 3, 50, 0.1), *shoppers(rng, 3, 50, 0.1)).significant
           for _ in range(1000)]  # three shoppers an arm, many searches each: Student's t, not the normal
    assert np.mean(few) <= 0.06
    assert min_sample_size(0.1, 0.2, alpha=0.05 / 3) > min_sample_size(0.1, 0.2)  # a Bonferroni alpha needs more


def test_an_arm_without_shoppers_tells_nothing_and_stays_json() -> None:
    import json

    empty = clustered_means("revenue_per_search", np.zeros(0), np.zeros(0), np.array([3.0, 5.0]), np.array([2, 2]))
    assert empty.p_value == 1.0 and not empty.significant
    out = json.dumps(empty.to_json(), allow_nan=False)  # strict JSON: what cannot be computed is null
    assert json.loads(out)["control"] is None and json.loads(out)["ci_low"] is None
    zero = clustered_means("add_to_cart_rate", np.zeros(5), np.ones(5), np.ones(5), np.ones(5))
    assert zero.p_value == 0.0 and json.loads(json.dumps(zero.to_json(), allow_nan=False))["lift"] is None
    assert design_effect(np.array([0.0, 20.0, 0.0, 20.0]), np.full(4, 20)) > 10  # all or nothing per shopper
    singles = (np.arange(1000) % 3 == 0).astype(float)  # a thousand shoppers, one search each
    assert design_effect(singles, np.ones(1000)) == pytest.approx(1.0, abs=1e-9)
    assert design_effect(singles[:10], np.ones(10)) == pytest.approx(1.0, abs=1e-9)  # before: 10 / 9


def test_nightly_looks_promote_an_aa_test_rarely_with_the_always_valid_p() -> None:
    from online_learning.promotion import Policy

    rng = np.random.default_rng(2)
    fixed, sequential = [], []
    for _ in range(300):  # 300 A/A experiments, each read every night for 14 nights as its searches grow
        a, b = rng.binomial(1, 0.06, 14 * 300).astype(float), rng.binomial(1, 0.06, 14 * 300).astype(float)
        nights = [clustered_means("purchase_rate", a[:n], np.ones(n), b[:n], np.ones(n))
                  for n in range(300, 14 * 300 + 1, 300)]
        wins = [[Policy(sequential=s).p_value(c) < 0.05 and c.treatment > c.control for c in nights]
                for s in (False, True)]
        fixed.append(any(wins[0]))
        sequential.append(any(wins[1]))
    assert np.mean(fixed) > 0.06  # a fixed-horizon p read nightly: about one A/A test in ten promoted
    assert np.mean(sequential) <= 0.025  # at most alpha / 2 (a win is one side) however often it is read
    a, b = rng.binomial(1, 0.10, 4000).astype(float), rng.binomial(1, 0.13, 4000).astype(float)
    real = clustered_means("purchase_rate", a, np.ones(4000), b, np.ones(4000))  # a 30% lift is still found
    assert real.sequential_p < 0.05 and real.p_value < real.sequential_p


def test_the_always_valid_p_of_what_cannot_be_told_is_one() -> None:
    from online_learning.stats import sequential_p

    assert sequential_p(0.1, float("inf"), 0.01) == 1.0 and sequential_p(0.1, 1e-4, 0.0) == 1.0
    assert sequential_p(float("nan"), 1e-4, 0.01) == 1.0
    assert (sequential_p(0.0, 0.0, 0.01), sequential_p(0.2, 0.0, 0.01)) == (1.0, 0.0)
    assert sequential_p(0.0, 1e-4, 0.01) == 1.0  # no difference: no evidence
    assert sequential_p(0.05, 1e-4, 0.01) < sequential_p(0.02, 1e-4, 0.01) < 1.0


def test_sample_ratio_mismatch() -> None:
    assert sample_ratio_p({"control": 1000, "treatment": 700}, {"control": 1, "treatment": 1}) < 1e-6
    assert sample_ratio_p({"control": 900, "treatment": 100}, {"control": 9, "treatment": 1}) > 0.5
    assert sample_ratio_p({"control": 510, "treatment": 500}, {"control": 1, "treatment": 1}) > 0.5
    assert sample_ratio_p({}, {"control": 1, "treatment": 1}) == 1.0


def test_sign_test_and_sample_size() -> None:
    assert sign_test(60, 40) == pytest.approx(0.0569, abs=1e-3)
    assert 3500 < min_sample_size(0.1, 0.2) < 4000  # classic: ~3,840 per arm for 10% -> 12%
