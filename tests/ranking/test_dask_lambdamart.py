"""LambdaMART on a local Dask cluster (lightgbm.dask) against training in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from core.compute import LOOPBACK_ENV, loopback_command
from ranking.dask_lambdamart import group_partitions, ndcg, ndcg_curve, stop_at, to_dask
from ranking.lambdamart import LambdaMART, LambdaMARTConfig, _params, label_gain
from simulation.ranking_data import split_groups, synthetic_ranking_data


def test_partitions_end_on_query_boundaries() -> None:
    assert group_partitions([5, 5, 5, 5], 2) == [2, 2]
    assert group_partitions([10, 1, 1, 1, 1, 1, 1], 2) == [1, 6]
    assert group_partitions([3], 4) == [1]
    data = synthetic_ranking_data(40, seed=3)
    features, labels, groups = to_dask(data, 3)
    rows = features.chunks[0]
    assert len(rows) == len(groups.chunks[0]) == 3 and labels.chunks[0] == rows
    ends = set(np.cumsum(data.groups).tolist())
    assert all(end in ends for end in np.cumsum(rows).tolist())
    sizes = groups.compute()
    starts = np.cumsum([0, *groups.chunks[0]])
    assert [int(sizes[a:b].sum()) for a, b in pairwise(starts)] == list(rows)


@pytest.mark.parametrize(("gains", "objective"), [("linear", "lambdarank"), ("exponential", "lambdarank"),
                                                   ("linear", "rank_xendcg")])
def test_dev_curve_and_stopping_rule_match_lightgbm(gains: str, objective: str) -> None:
    """Our NDCG@10 curve and early-stopping rule give LightGBM's own on the same model, under either gains
    and either objective."""
    train, dev = split_groups(synthetic_ranking_data(120, seed=5), 0.7)
    config = LambdaMARTConfig(max_grade=4, max_rounds=200, early_stopping=15, gains=gains, objective=objective)
    record: dict = {}
    train_set = lgb.Dataset(train.features, train.labels, group=train.groups)
    booster = lgb.train(_params(config, train.names), train_set, num_boost_round=config.max_rounds,
                        valid_sets=[lgb.Dataset(dev.features, dev.labels, group=dev.groups, reference=train_set)],
                        valid_names=["dev"], callbacks=[lgb.early_stopping(config.early_stopping, verbose=False),
                                                        lgb.record_evaluation(record)])
    recorded = np.asarray(record["dev"]["ndcg@10"])
    assert len(recorded) < config.max_rounds  # it did stop early (and kept the trees up to the best)
    curve = ndcg_curve(booster, dev, label_gain=label_gain(config) if gains != "linear" else None)
    assert np.allclose(curve, recorded[: booster.num_trees()], atol=1e-9)
    assert stop_at(recorded, config.early_stopping) == booster.best_iteration


def test_ndcg_closed_form() -> None:
    # one query, grades [0, 2, 1] scored so the order is 2, 0, 1 (by row): DCG = 1/log2(2) + 2/log2(4)
    value = ndcg([3], np.array([0, 2, 1]), np.array([0.5, 0.1, 0.9]))
    assert value == pytest.approx((1 + 2 / 2) / (2 + 1 / np.log2(3)))
    assert ndcg([2], np.array([0, 0]), np.array([1.0, 2.0])) == 1.0  # LightGBM: no relevant row scores 1


def compare_training(out: Path) -> None:
    """Train in this process and on a local Dask cluster of 2 workers, with lambdarank and with XE-NDCG;
    write held-out figures to ``out``. 300 training queries, 200 dev, 500 held out. Bagging is off: it
    samples rows per worker, so with it the two paths train on different samples (measured up to 0.005
    apart)."""
    from core.compute import dask_client
    from core.service_settings import ComputeSettings

    train, dev, held_out = split_groups(synthetic_ranking_data(1000, seed=0), 0.3, 0.2)
    config = LambdaMARTConfig(max_grade=4, max_rounds=300, early_stopping=50, bagging_fraction=1.0, bagging_freq=0)
    xendcg = replace(config, objective="rank_xendcg")
    single, single_xendcg = LambdaMART.fit(train, dev, config), LambdaMART.fit(train, dev, xendcg)
    with dask_client(ComputeSettings(scheduler="local", workers=2)) as client:
        on_dask = LambdaMART.fit(train, dev, config, client=client)
        on_dask_xendcg = LambdaMART.fit(train, dev, xendcg, client=client)
    score = lambda model: ndcg(held_out.groups, held_out.labels, model.predict(held_out.features))
    shuffled = np.random.default_rng(0).permutation(len(held_out.labels)).astype(float)
    on_dask.save(out / "ltr")  # the format serving loads
    loaded = LambdaMART.load(out / "ltr")
    (out / "figures.json").write_text(json.dumps({
        "single": score(single), "dask": score(on_dask), "shuffled": ndcg(held_out.groups, held_out.labels, shuffled),
        "single_xendcg": score(single_xendcg), "dask_xendcg": score(on_dask_xendcg),
        "workers": on_dask.history["dask_workers"], "partitions": on_dask.history["partitions"],
        "trees_saved": loaded.booster.num_trees(), "best_iteration": on_dask.history["best_iteration"],
        "reload_same": bool(np.allclose(loaded.predict(held_out.features), on_dask.predict(held_out.features),
                                        atol=1e-6))}))


def test_dask_training_matches_single_process(tmp_path: Path) -> None:
    """LightGBM's training sockets listen on every interface (no setting for the address), so the
    comparison runs in a new network namespace whose only interface is loopback."""
    argv = [sys.executable, "-c", f"from pathlib import Path; from tests.ranking.test_dask_lambdamart import "
                                  f"compare_training; compare_training(Path({str(tmp_path)!r}))"]
    wrapped = loopback_command(argv)
    if wrapped is None:
        pytest.skip("needs `unshare` and `ip` (util-linux, iproute2) to keep LightGBM's sockets on loopback")
    done = subprocess.run(wrapped, check=False, env={**os.environ, LOOPBACK_ENV: "1"}, capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["workers"] == 2 and figures["partitions"] == 2
    assert figures["single"] > figures["shuffled"] + 0.2  # it learnt the signal
    assert abs(figures["dask"] - figures["single"]) <= 0.002
    assert figures["single_xendcg"] > figures["shuffled"] + 0.2  # the other objective trains on Dask too
    assert abs(figures["dask_xendcg"] - figures["single_xendcg"]) <= 0.002
    assert figures["trees_saved"] == figures["best_iteration"] and figures["reload_same"]
