from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from statsmodels.stats.proportion import proportions_ztest

from online_learning.experiments import Arm, Experiment, assign, interleaving_winner, team_draft
from online_learning.stats import bootstrap_means, min_sample_size, sign_test, two_proportions


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


def test_two_proportion_z_test_matches_statsmodels() -> None:
    result = two_proportions("ctr", 120, 1000, 150, 1000)
    _, p_value = proportions_ztest([150, 120], [1000, 1000])
    assert result.p_value == pytest.approx(p_value, rel=1e-6)
    assert result.lift == pytest.approx(0.25) and result.ci_low < 0.03 < result.ci_high


def test_bootstrap_sign_test_and_sample_size() -> None:
    rng = np.random.default_rng(0)
    same = bootstrap_means("revenue", rng.normal(10, 2, 500), rng.normal(10, 2, 500))
    better = bootstrap_means("revenue", rng.normal(10, 2, 500), rng.normal(11, 2, 500))
    assert not same.significant and better.significant and better.ci_low > 0
    assert sign_test(60, 40) == pytest.approx(0.0569, abs=1e-3)
    assert 3500 < min_sample_size(0.1, 0.2) < 4000  # classic: ~3,840 per arm for 10% -> 12%
