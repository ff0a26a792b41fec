"""EM on the position-based model recovers the examination curve of simulated clicks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from online_learning.propensity import fit_position_model


def test_em_recovers_true_position_bias() -> None:
    rng = np.random.default_rng(0)
    true_theta = 1.0 / np.arange(1, 11)
    rows = []
    attractiveness = {f"d{i}": rng.uniform(0.05, 0.9) for i in range(60)}
    for request in range(6000):
        query = f"q{request % 6}"
        shown = rng.choice(60, size=10, replace=False)  # the same products appear at every position
        for position, d in enumerate(shown, start=1):
            p = true_theta[position - 1] * attractiveness[f"d{d}"]
            rows.append((query, f"d{d}", position, int(rng.random() < p)))
    frame = pd.DataFrame(rows, columns=["query", "product_id", "position", "clicked"])
    model = fit_position_model(frame, prior=(0.1, 0.1))
    assert model.theta[0] == 1.0
    np.testing.assert_allclose(model.theta, true_theta, atol=0.05)
    assert model.propensity(np.array([1, 3, 20])).tolist() == [1.0, model.theta[2], model.theta[9]]
    assert model.clipped == 0


def test_a_product_pinned_first_everywhere_is_counted_as_clipped_examination() -> None:
    """Position 1 always shows a product never clicked (a pin): EM reads its lack of clicks as position 1 looked at
    less, and every later position comes out at 1. The model counts them, for the retrain's warning."""
    rng = np.random.default_rng(0)
    true_theta = 1.0 / np.arange(1, 11)
    rows = []
    for request in range(3000):  # 200 products of attractiveness 0.3 below the pin, over 20 queries
        query, shown = f"q{rng.integers(20)}", ["pin", *(f"d{d}" for d in rng.choice(200, size=9, replace=False))]
        for position, d in enumerate(shown, start=1):
            clicked = d != "pin" and rng.random() < true_theta[position - 1] * 0.3
            rows.append((query, d, position, int(clicked)))
    model = fit_position_model(pd.DataFrame(rows, columns=["query", "product_id", "position", "clicked"]))
    assert model.clipped >= 5 and (model.theta[1:] == 1.0).sum() == model.clipped


def test_no_iterations_gives_the_starting_model() -> None:
    frame = pd.DataFrame({"query": ["q"] * 4, "product_id": ["a", "b", "a", "b"], "position": [1, 2, 1, 2],
                          "clicked": [1, 0, 0, 1]})
    model = fit_position_model(frame, iterations=0)  # before: UnboundLocalError
    assert model.iterations == 0 and model.theta.tolist() == [1.0] * 10


def test_a_few_impressions_per_pair_still_give_the_curve() -> None:
    rng = np.random.default_rng(0)
    true_theta = 1.0 / np.arange(1, 11)
    rows = []
    for q in range(300):  # 300 queries of 10 products, each pair shown 6 times in a shuffled order
        attractiveness = rng.uniform(0.05, 0.9, 10)
        for _ in range(6):
            for position, d in enumerate(rng.permutation(10), start=1):
                clicked = rng.random() < true_theta[position - 1] * attractiveness[d]
                rows.append((f"q{q}", f"d{d}", position, int(clicked)))
    model = fit_position_model(pd.DataFrame(rows, columns=["query", "product_id", "position", "clicked"]))
    np.testing.assert_allclose(model.theta[:5], true_theta[:5], atol=0.1)  # before: 1.0, 1.0, 0.95, 0.73, 0.47
