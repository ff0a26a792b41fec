"""SIMULATED learning-to-rank data: query groups of feature rows with a known relevance signal.

For tests and benchmarks of LambdaMART training (``ranking/lambdamart.py``) that need
no index, model or feature store. Each row has ``features`` standard-normal features;
its hidden relevance is a fixed linear mix of the first four plus an interaction and
noise, cut into grades 0..``max_grade`` by quantiles within the whole set.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from ranking.lambdamart import RankingData


def synthetic_ranking_data(queries: int, seed: int = 0, rows: tuple[int, int] = (20, 60), features: int = 12,
                           max_grade: int = 4, noise: float = 0.5, decimals: int | None = None) -> RankingData:
    """``queries`` groups of between ``rows[0]`` and ``rows[1]`` rows (SIMULATED); ``decimals`` rounds
    the features (few distinct values: LightGBM's feature bins do not depend on which rows it samples)."""
    if queries < 1 or not 1 <= rows[0] <= rows[1] or features < 4:
        raise ValueError(f"queries={queries}, rows={rows}, features={features}: need queries >= 1, "
                         "1 <= rows[0] <= rows[1] and features >= 4")
    rng = np.random.default_rng(seed)
    sizes = rng.integers(rows[0], rows[1] + 1, size=queries).tolist()
    x = rng.normal(size=(sum(sizes), features)).astype(np.float32)
    if decimals is not None:
        x = np.round(x, decimals)
    signal = x[:, 0] + 0.7 * x[:, 1] - 0.5 * x[:, 2] + 0.3 * x[:, 0] * x[:, 3] + noise * rng.normal(size=len(x))
    cuts = np.quantile(signal, np.linspace(0, 1, max_grade + 2)[1:-1] ** 0.5)  # grades grow rarer upward
    labels = np.searchsorted(cuts, signal).astype(np.int32)
    return RankingData(x, labels, sizes, [f"f{i}" for i in range(features)], [f"q{i}" for i in range(queries)])


def split_groups(data: RankingData, *shares: float) -> list[RankingData]:
    """Consecutive parts of ``data`` by share of query groups (the last part takes the rest)."""
    bounds = [0, *(round(len(data.groups) * s) for s in np.cumsum(shares)), len(data.groups)]
    starts = np.concatenate([[0], np.cumsum(data.groups)])
    return [RankingData(data.features[starts[a]:starts[b]], data.labels[starts[a]:starts[b]], data.groups[a:b],
                        data.names, data.query_ids[a:b]) for a, b in pairwise(bounds)]
