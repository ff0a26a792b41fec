"""LambdaMART training lists: judged products plus mined unjudged negatives with grade 0."""

from __future__ import annotations

import pandas as pd

from core.settings import Settings
from ranking.training.data import Group
from ranking.training.ltr_data import entity_rows, listed_products, ranking_data
from serving.engine import assemble


def test_mined_negatives_join_the_list_with_grade_zero(settings: Settings, real_index, real_encoder) -> None:  # type: ignore[no-untyped-def]
    engine = assemble(real_index, real_encoder, settings)
    hits = engine.hybrid.search("cordless drill", 10).product_ids
    judged = {hits[0]: 3, hits[1]: 1}
    group = Group("q1", "cordless drill", judged, mined=[hits[5], "not-in-the-catalog"])
    assert listed_products(group, real_index) == [hits[0], hits[1], hits[5]]

    data = ranking_data([group], engine.featurizer([]), real_index, engine.hybrid, None, {}, progress=False)
    assert data.groups == [3] and data.features.shape[0] == 3
    assert sorted(data.labels.tolist()) == [0, 1, 3]
    without = ranking_data([Group("q1", "cordless drill", judged)], engine.featurizer([]), real_index, engine.hybrid,
                           None, {}, progress=False)
    assert without.groups == [2] and sorted(without.labels.tolist()) == [1, 3]

    # the Feast entity rows follow the same list, so the point-in-time join lines up row for row
    rows = entity_rows([group], real_index, {"q1": "u1"}, pd.Timestamp("2026-11-01", tz="UTC"))
    assert rows["product_id"].tolist() == [hits[0], hits[1], hits[5]]


def test_monotone_features_only_raise_the_score() -> None:
    import numpy as np
    import pytest

    from ranking.lambdamart import LambdaMART, LambdaMARTConfig, RankingData

    rng = np.random.default_rng(0)

    def lists(n: int) -> RankingData:
        x = rng.normal(size=(n * 10, 2)).astype(np.float32)
        # a label that falls with "bm25" at its top end: unconstrained trees learn the dip
        labels = np.clip(np.round(2 + x[:, 0] - 2.5 * (x[:, 0] > 1.0) + 0.3 * x[:, 1]), 0, 4).astype(np.int32)
        return RankingData(x, labels, [10] * n, ["bm25", "price"])

    train, dev = lists(300), lists(60)
    grid = np.column_stack([np.linspace(-3, 3, 61), np.zeros(61)]).astype(np.float32)
    free = LambdaMART.fit(train, dev, LambdaMARTConfig(max_grade=4, min_data_in_leaf=5))
    assert np.any(np.diff(free.predict(grid)) < -1e-9)  # the dip is learnt without the constraint
    bound = LambdaMART.fit(train, dev, LambdaMARTConfig(max_grade=4, min_data_in_leaf=5, monotone=("bm25",)))
    assert np.all(np.diff(bound.predict(grid)) >= -1e-9)
    with pytest.raises(ValueError, match="teacher"):
        LambdaMART.fit(train, dev, LambdaMARTConfig(max_grade=4, monotone=("teacher",)))
