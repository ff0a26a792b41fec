"""The IPS LambdaMART objective: gradients against finite differences, and bias correction."""

from __future__ import annotations

import numpy as np

from ranking.unbiased import PaddedGroups, ips_dcg, ips_lambdarank_objective


def test_padded_groups() -> None:
    padded = PaddedGroups([2, 3])
    assert padded.mask.tolist() == [[True, True, False], [True, True, True]]
    assert padded.gather(np.arange(5.0), -1).tolist() == [[0, 1, -1], [2, 3, 4]]


def test_gradient_points_to_the_engaged_item_and_weights_by_ips() -> None:
    labels = np.array([0, 1, 0, 0, 2, 0], dtype=float)
    objective = ips_lambdarank_objective([3, 3], labels, np.array([1, 4, 1, 1, 1, 1.0]))
    grad, hess = objective(np.zeros(6), None)
    assert grad[1] < 0 and grad[0] > 0 and grad[2] > 0  # push the clicked item up, the others down
    assert abs(grad.sum()) < 1e-9 and (hess > 0).all()
    unweighted, _ = ips_lambdarank_objective([3, 3], labels, np.ones(6))(np.zeros(6), None)
    assert grad[1] < unweighted[1]  # a click at a rarely examined position counts more


def test_ips_dcg_prefers_engaged_items_first() -> None:
    labels = np.array([0, 1, 0, 3], dtype=float)
    ips = np.ones(4)
    good = ips_dcg([4], labels, ips, np.array([0.1, 0.5, 0.0, 0.9]))
    bad = ips_dcg([4], labels, ips, np.array([0.9, 0.2, 0.5, 0.1]))
    assert good > bad > 0


def monotone_lists(groups: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """Logged lists whose engagement falls as "bm25" rises: unconstrained trees learn to lower its score."""
    from ranking.lambdamart import RankingData

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(groups * 10, 2)).astype(np.float32)
    labels = (x[:, 0] < -0.5).astype(np.int32)
    return RankingData(x, labels, [10] * groups, ["bm25", "price"], [str(i) for i in range(groups)])


def test_unbiased_training_keeps_the_monotone_features_monotone() -> None:
    from ranking.lambdamart import LambdaMART, LambdaMARTConfig

    data, ips = monotone_lists(200), np.ones(2000)
    grid = np.column_stack([np.linspace(-2, 2, 41), np.zeros(41)]).astype(np.float32)
    settings = {"max_grade": 3, "min_data_in_leaf": 5, "max_rounds": 50, "early_stopping": 50}
    free = LambdaMART.fit_unbiased(data, data, ips, ips, LambdaMARTConfig(**settings))
    assert np.any(np.diff(free.predict(grid)) < -1e-9)  # the fall is learnt without the constraint
    bound = LambdaMART.fit_unbiased(data, data, ips, ips, LambdaMARTConfig(monotone=("bm25",), **settings))
    assert np.all(np.diff(bound.predict(grid)) >= -1e-9)  # before: the config's monotone was not read
