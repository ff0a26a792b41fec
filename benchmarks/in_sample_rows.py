"""LambdaMART training rows without one model's in-sample scores.

A model trained on some of the training queries (the teacher of ``shoprank train reranker --limit
N`` trains on the split's first N judged queries) scores those queries' products better than it
will score a new query's, and LambdaMART, trained on the same queries, learns to trust it as much.
From rows written by ``shoprank train ltr --save-data ROWS`` this writes two other sets of training
rows for ``benchmarks/ltr_search.py --train-rows``:

- ``OUT/masked``: ``--feature`` missing on the rows of the model's training queries, so LightGBM
  learns how far to trust it from the other queries alone;
- ``OUT/out-of-sample``: the model's training queries left out.

It prints, for the model's queries and the others, how well the feature alone orders the rows it
scored (NDCG@10), beside the dense score and the fused rank on the same rows.

    HF_HUB_OFFLINE=1 python benchmarks/in_sample_rows.py --dataset D --rows ROWS --feature teacher \
        --first 4000 --out OUT
    python benchmarks/ltr_search.py --dataset D --rows ROWS --grid num_leaves=31 \
        --train-rows OUT/masked OUT/out-of-sample
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware  # noqa: E402
from benchmarks.ltr_search import order_by  # noqa: E402
from evaluation.dataset import load_dataset  # noqa: E402
from evaluation.metrics import ndcg_at_k  # noqa: E402
from ranking.lambdamart import RankingData  # noqa: E402
from ranking.training.data import groups_from  # noqa: E402
from ranking.training.ltr_data import load_ranking_data, save_ranking_data  # noqa: E402

COMPARED = ("dense", "rank_rrf")


def order_quality(data: RankingData, feature: str, queries: set[str]) -> dict[str, float | int]:
    """Mean NDCG@10 of ``feature``'s order, and of each COMPARED column's, over the rows ``feature``
    scored, in the lists of ``queries`` with a graded row there."""
    orders = {name: order_by(data, name) for name in (feature, *COMPARED) if name in data.names}
    found = np.isfinite(data.features[:, data.names.index(feature)])
    values: dict[str, list[float]] = {name: [] for name in orders}
    for qid, rows in data.lists():
        if qid not in queries:
            continue
        scored = found[rows]
        grades = {str(i): int(g) for i, g in enumerate(data.labels[rows][scored]) if g > 0}
        if not grades:
            continue
        for name, scores in orders.items():
            order = np.argsort(-scores[rows][scored], kind="stable")
            values[name].append(ndcg_at_k([str(i) for i in order], grades, 10))
    return {"queries": len(values[feature]), **{name: round(float(np.mean(v)), 4) for name, v in values.items()}}


def without(data: RankingData, queries: set[str], feature: str | None) -> RankingData:
    """``data`` with ``feature`` missing on ``queries``' rows, or (``feature`` None) without those lists."""
    inside = np.repeat(np.array([q in queries for q in data.query_ids]), data.groups)
    if feature is not None:
        features = data.features.copy()
        features[inside, data.names.index(feature)] = np.nan
        return RankingData(features, data.labels, list(data.groups), list(data.names), list(data.query_ids),
                           list(data.product_ids))
    kept = [i for i, q in enumerate(data.query_ids) if q not in queries]
    return RankingData(data.features[~inside], data.labels[~inside], [data.groups[i] for i in kept], list(data.names),
                       [data.query_ids[i] for i in kept],
                       [p for p, keep in zip(data.product_ids, ~inside) if keep] if data.product_ids else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, type=Path)
    parser.add_argument("--rows", required=True, type=Path, help="a folder written by shoprank train ltr --save-data")
    parser.add_argument("--feature", default="teacher", help="the in-sample model's column (default teacher)")
    parser.add_argument("--split", default="train", help="the split the model trained on (default train)")
    parser.add_argument("--first", required=True, type=int, metavar="N",
                        help="the model trained on the split's first N judged queries (its --limit)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    train = load_ranking_data(args.rows / "train.npz")
    if args.feature not in train.names:
        parser.error(f"--feature {args.feature!r} is not a column of {args.rows}; "
                     f"the columns: {', '.join(train.names)}")
    model_queries = {g.qid for g in groups_from(load_dataset(args.dataset), args.split, 1)[: args.first]}
    others = set(train.query_ids) - model_queries
    save_ranking_data(args.out / "masked" / "train.npz", without(train, model_queries, args.feature))
    save_ranking_data(args.out / "out-of-sample" / "train.npz", without(train, model_queries, None))
    print(json.dumps({"cpu": hardware(), "command": " ".join(sys.argv if argv is None else argv),
                      "feature": args.feature,
                      "lists": {"model's queries": sum(q in model_queries for q in train.query_ids),
                                "other queries": len(others)},
                      "order of the scored rows, NDCG@10": {
                          "model's queries": order_quality(train, args.feature, model_queries),
                          "other queries": order_quality(train, args.feature, others)},
                      "written": [str(args.out / "masked"), str(args.out / "out-of-sample")]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
