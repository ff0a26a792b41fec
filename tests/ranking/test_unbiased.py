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
