"""LambdaMART trained on a Dask cluster with ``lightgbm.dask.DaskLGBMRanker``.

LightGBM's data-parallel learner runs one LightGBM process per Dask worker; each builds
histograms over its own rows and they are summed over the network, so every worker
grows the same trees. A lambdarank gradient needs a query's rows together: the training
rows become dask arrays whose partition boundaries fall on query boundaries, and each
partition carries its own ``group`` sizes.

Early stopping: ``DaskLGBMRanker`` does not support it (each worker would judge on its
own share of the dev set and could stop at a different round). So the cluster trains
``config.max_rounds`` trees; then, in this process, the dev NDCG@10 of every prefix of
the ensemble is computed on the whole dev set and LightGBM's own early-stopping rule
(best iteration, stop after ``config.early_stopping`` rounds without improvement) picks
the iteration, which becomes ``booster.best_iteration``. The saved model holds exactly
those trees, as a model trained in one process does; the cost is the rounds a
single-process run would not have trained.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ranking.unbiased import PaddedGroups

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)


class RankingData(Protocol):  # ranking.lambdamart.RankingData (which imports this module)
    features: np.ndarray
    labels: np.ndarray
    groups: list[int]


def group_partitions(groups: Sequence[int], parts: int) -> list[int]:
    """How many whole query groups each of at most ``parts`` partitions takes, with near-equal rows."""
    if not len(groups):
        raise ValueError("no query groups to partition: the training data is empty")
    ends = np.cumsum(groups)
    targets = ends[-1] * np.arange(1, parts) / parts
    cuts = np.unique(np.searchsorted(ends, targets, side="left") + 1)  # groups before each cut
    cuts = cuts[(cuts > 0) & (cuts < len(groups))]
    edges = np.concatenate([[0], cuts, [len(groups)]])
    return np.diff(edges).astype(int).tolist()


def to_dask(data: RankingData, parts: int) -> tuple[Any, Any, Any]:
    """Features, labels and group sizes as dask arrays of ``parts`` (or fewer) query-aligned partitions."""
    import dask.array as da

    per_part = group_partitions(data.groups, parts)
    bounds = np.cumsum([0, *per_part])
    rows = tuple(int(sum(data.groups[a:b])) for a, b in pairwise(bounds))
    features = da.from_array(data.features, chunks=(rows, data.features.shape[1]))
    labels = da.from_array(np.asarray(data.labels), chunks=(rows,))
    groups = da.from_array(np.asarray(data.groups, dtype=np.int64), chunks=(tuple(per_part),))
    return features, labels, groups


def ndcg(groups: Sequence[int], labels: np.ndarray, scores: np.ndarray, k: int = 10,
         label_gain: Sequence[float] | None = None) -> float:
    """Mean NDCG@k over query groups as LightGBM computes it: gain = ``label_gain[grade]`` (the grade
    itself when not given), ``1/log2(rank + 1)`` discounts, ties in input order, a group without a
    relevant row scores 1."""
    padded = PaddedGroups(groups)
    gain = np.asarray(labels, dtype=np.float64)
    if label_gain is not None:
        gain = np.asarray(label_gain, dtype=np.float64)[gain.astype(np.int64)]
    gains = padded.gather(gain)
    order = np.argsort(-padded.gather(np.asarray(scores, dtype=np.float64), fill=-np.inf), axis=1, kind="stable")
    discount = 1.0 / np.log2(np.arange(2, gains.shape[1] + 2))
    discount[k:] = 0.0
    dcg = (np.take_along_axis(gains, order, axis=1) * discount).sum(1)
    ideal = (-np.sort(-gains, axis=1) * discount).sum(1)
    return float(np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 1.0).mean())


def ndcg_curve(booster: Any, dev: RankingData, k: int = 10, label_gain: Sequence[float] | None = None
               ) -> np.ndarray:
    """Dev NDCG@k after each boosting iteration (scores summed tree by tree)."""
    scores = np.zeros(len(dev.labels))
    curve = []
    for iteration in range(booster.num_trees()):
        scores += booster.predict(dev.features, start_iteration=iteration, num_iteration=1, raw_score=True)
        curve.append(ndcg(dev.groups, dev.labels, scores, k, label_gain))
    return np.asarray(curve)


def stop_at(curve: np.ndarray, patience: int) -> int:
    """The iteration (1-based) ``lightgbm.early_stopping(patience)`` keeps for this validation curve."""
    best, best_score = 0, -np.inf
    for iteration, score in enumerate(curve):
        if score > best_score:
            best, best_score = iteration, score
        elif iteration - best >= patience:
            break
    return best + 1


def train_on_dask(client: Client, train: RankingData, dev: RankingData, params: dict[str, Any],
                  max_rounds: int, patience: int) -> tuple[Any, dict[str, object]]:
    """Train ``max_rounds`` trees on the cluster, early-stop on dev here with ``patience`` (module
    docstring); returns (booster, history)."""
    from lightgbm.dask import DaskLGBMRanker

    workers = len(client.scheduler_info()["workers"])
    features, labels, groups = to_dask(train, workers)
    native = {k: v for k, v in params.items() if k not in ("metric", "ndcg_eval_at", "num_threads")}
    started = time.perf_counter()
    ranker = DaskLGBMRanker(client=client, n_estimators=max_rounds, **native)
    with warnings.catch_warnings():  # the sklearn wrapper's n_jobs; each worker uses its Dask threads
        warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
        ranker.fit(features, labels, group=groups)
    booster = ranker.booster_
    curve = ndcg_curve(booster, dev, label_gain=params.get("label_gain"))
    booster.best_iteration = stop_at(curve, patience)
    history = {"best_iteration": booster.best_iteration,
               "dev_ndcg@10": round(float(curve[booster.best_iteration - 1]), 4), "rounds": len(curve),
               "early_stopping": "on the dev curve after training", "dask_workers": workers,
               "partitions": int(features.numblocks[0])}
    logger.info("LambdaMART on Dask: %d workers, %d partitions, %d rows, %.1f s: %s", workers,
                features.numblocks[0], len(train.labels), time.perf_counter() - started, history)
    return booster, history
