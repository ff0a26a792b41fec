"""LambdaMART settings searched on saved feature rows: each trained on the train rows, scored on dev.

``shoprank train ltr --save-data ROWS`` writes the rows of the served lists once (building them
is most of a training run); each setting here trains on ``ROWS/train.npz`` with early stopping
on ``ROWS/dev.npz``, as ``shoprank train ltr`` does, and re-orders every dev query's served list
(the first stage's top ``depth``) by its scores. The metrics are the harness's retrieval-mode
ones of that list: condensed NDCG@10 and MRR@10, NDCG@10 with unjudged products as grade 0,
judged@10 and Recall@100, as ``shoprank evaluate --mode retrieval --pipeline ltr`` computes them
(up to the cross-encoder's adaptive depth and the rules; not Recall@1000: the list ends at
``depth``), on the dev queries that have a list: those with two judged products or more and a
judged product in the served top ``depth``. That leaves out the queries no order of the list
could help, so the means run higher than the harness's over every dev query; the paired
differences are what to read. The first stage's own order (``rank_rrf``) is the row
"first_stage". Every setting is compared with the first one (the defaults unless ``--grid``
says otherwise), and the first with the first stage: paired bootstrap 95% CI; the same on the
misspelled subset and the rest.

    HF_HUB_OFFLINE=1 SHOPRANK_HOME=H shoprank train ltr --dataset D --save-data ROWS   # once
    python benchmarks/ltr_search.py --dataset D --rows ROWS [--grid num_leaves=31,63 learning_rate=0.05,0.1]

``--grid``: NAME=V1,V2,... of ``shoprank train ltr --param`` settings, or ``gains`` (linear,
exponential: ``--gains``), ``objective`` (lambdarank, rank_xendcg: ``--objective``) and
``truncation_level`` (``--truncation``; default the list depth);
every combination is trained (the first value of each is the reference). ``--train-rows OTHER``
also trains the first setting on ``OTHER/train.npz``, training rows of the same features built
another way (``shoprank train ltr --fold-encoders ... --save-data OTHER``: cross-fitted lists), and
scores it on ``ROWS/dev.npz`` like the rest. ``feature_orders`` gives each model score's and the
fused rank's own order of the train lists and of the dev lists: a score much better on the train
lists than on the dev ones comes from a model trained on the train queries (in-sample).
JSON on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware  # noqa: E402
from evaluation.compare import compare  # noqa: E402
from evaluation.dataset import EvalDataset, load_dataset  # noqa: E402
from evaluation.harness import Thresholds, query_metrics  # noqa: E402
from evaluation.metrics import grade_threshold  # noqa: E402
from evaluation.subsets import subset_ids  # noqa: E402
from ranking.lambdamart import (  # noqa: E402
    GAINS,
    OBJECTIVES,
    LambdaMART,
    RankingData,
    parse_tunable,
    training_config,
)
from ranking.training.ltr_data import load_ranking_data  # noqa: E402

DEFAULT_GRID = ["num_leaves=31,15,63", "min_data_in_leaf=40,200", "learning_rate=0.05,0.1"]
METRICS = ("ndcg@10", "mrr@10", "ndcg@10_unjudged_as_0", "judged@10", "recall@100")


def setting(name: str, value: str) -> tuple[str, float | int | str]:
    """One grid value: a ``--param`` setting, or ``gains`` / ``objective`` / ``truncation_level`` (``--gains``,
    ``--objective``, ``--truncation``)."""
    allowed = {"gains": GAINS, "objective": OBJECTIVES}.get(name)
    if allowed is not None:
        if value not in allowed:
            raise ValueError(f"{name}={value!r}: one of {', '.join(allowed)}")
        return name, value
    if name == "truncation_level":
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"truncation_level={value!r}: a whole number >= 1")
        return name, int(value)
    return parse_tunable(f"{name}={value}")


def grid_settings(grid: list[str]) -> list[dict[str, float | int | str]]:
    """Every combination of NAME=V1,V2 values, the first values' combination first."""
    axes = []
    for spec in grid:
        name, _, values = spec.partition("=")
        axes.append([setting(name.strip(), value.strip()) for value in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def per_query(dataset: EvalDataset, dev: RankingData, scores: np.ndarray) -> dict[str, dict[str, float]]:
    """Each dev query's metrics with its served list re-ordered by ``scores`` (higher first)."""
    hit = grade_threshold(Thresholds().mrr, dataset.max_grade)
    relevant = grade_threshold(Thresholds().recall, dataset.max_grade)
    out: dict[str, dict[str, float]] = {m: {} for m in METRICS}
    ids = np.asarray(dev.product_ids)
    for qid, part in dev.lists():
        grades = dataset.qrels.get(qid, {})
        if not any(grades.values()):
            continue
        ranked = ids[part][np.argsort(-scores[part], kind="stable")].tolist()
        for metric, value in query_metrics("retrieval", ranked, grades, hit, relevant).items():
            if metric in out:
                out[metric][qid] = value
    return out


def summary(values: dict[str, dict[str, float]], reference: dict[str, dict[str, float]] | None,
            subsets: dict[str, set[str]]) -> dict[str, object]:
    """Means (every query, then each subset) and, against ``reference``, the paired differences."""

    def figures(metric: str, qids: list[str]) -> dict[str, object]:
        if not qids:
            return {"queries": 0}
        b = [values[metric][q] for q in qids]
        out: dict[str, object] = {"mean": round(float(np.mean(b)), 4), "queries": len(qids)}
        if reference is not None:
            paired = compare([reference[metric][q] for q in qids], b)
            out |= {"diff": round(paired.diff, 4), "ci95": [round(paired.ci_low, 4), round(paired.ci_high, 4)],
                    "p_value": float(f"{paired.p_value:.4g}")}
        return out

    out: dict[str, object] = {}
    for metric in METRICS:
        qids = sorted(values[metric])
        row = figures(metric, qids)
        for name, members in subsets.items():
            row[name] = figures(metric, [q for q in qids if q in members])
        out[metric] = row
    return out


ORDERED_BY = ("bm25", "dense", "teacher", "rank_rrf")


def order_by(data: RankingData, name: str) -> np.ndarray:
    """Scores that order each list by the feature ``name`` alone (a rank: lowest first; missing: last)."""
    column = data.features[:, data.names.index(name)]
    if name.startswith("rank"):
        return -np.nan_to_num(column, nan=np.inf, posinf=1e9)
    return np.nan_to_num(column, nan=-1e9)


def feature_orders(dataset: EvalDataset, parts: dict[str, RankingData]) -> dict[str, dict[str, float]]:
    """Each split's lists ordered by one feature alone (:func:`order_by`), mean metrics."""
    out: dict[str, dict[str, float]] = {}
    for name in ORDERED_BY:
        for split, data in parts.items():
            if name not in data.names:
                continue
            values = per_query(dataset, data, order_by(data, name))
            out.setdefault(name, {}).update({f"{split} {m}": round(float(np.mean(list(v.values()))), 4)
                                             for m, v in values.items() if v})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, type=Path)
    parser.add_argument("--rows", required=True, type=Path, help="a folder written by shoprank train ltr --save-data")
    parser.add_argument("--grid", nargs="+", default=DEFAULT_GRID, metavar="NAME=V1,V2")
    parser.add_argument("--train-rows", type=Path, nargs="*", default=[], metavar="OTHER",
                        help="also train the first setting on OTHER/train.npz (same features, lists built another way)")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    try:
        settings_list = grid_settings(args.grid)
    except ValueError as error:
        parser.error(str(error))
    meta = json.loads((args.rows / "lists.json").read_text())
    train, dev = load_ranking_data(args.rows / "train.npz"), load_ranking_data(args.rows / "dev.npz")
    dataset = load_dataset(args.dataset)
    split = dataset.select(meta.get("dev_split", "dev"))
    listed = set(dev.query_ids)
    dev_queries = [(q, t) for q, t in split if q in listed]
    scorable = sum(1 for q, _ in split if any(dataset.qrels.get(q, {}).values()))
    misspelled = subset_ids(dataset, dev_queries, "misspelled")
    subsets = {"misspelled": misspelled, "correct": {q for q, _ in dev_queries} - misspelled}
    first_stage = per_query(dataset, dev, order_by(dev, "rank_rrf")) if "rank_rrf" in dev.names else None
    others = {str(folder): load_ranking_data(folder / "train.npz") for folder in args.train_rows}
    for folder, rows in others.items():
        if rows.names != train.names:
            parser.error(f"--train-rows {folder}: its features are not those of {args.rows}")
    runs = [(overrides, train, None) for overrides in settings_list]
    runs += [(settings_list[0], rows, folder) for folder, rows in others.items()]
    results, reference = [], None
    for number, (overrides, rows, folder) in enumerate(runs, start=1):
        config = training_config(rows.names, dataset.max_grade, meta["depth"], seed=args.seed, **overrides)
        started = time.perf_counter()
        model = LambdaMART.fit(rows, dev, config)
        seconds = time.perf_counter() - started
        values = per_query(dataset, dev, model.predict(dev.features))
        results.append({"settings": overrides, "train_rows": folder or str(args.rows),
                        "train_seconds": round(seconds, 1),
                        "best_iteration": model.history["best_iteration"],
                        "dev_ndcg@10_lightgbm": model.history["dev_ndcg@10"],
                        "metrics": summary(values, reference, subsets)})
        reference = reference or values
        print(f"[{number}/{len(runs)}] {overrides} {folder or ''}: {seconds:.0f} s, NDCG@10 "
              f"{results[-1]['metrics']['ndcg@10']['mean']}, uncondensed "
              f"{results[-1]['metrics']['ndcg@10_unjudged_as_0']['mean']}, R@100 "
              f"{results[-1]['metrics']['recall@100']['mean']}", file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "ltr_search", "hardware": hardware(),
                      "command": " ".join(["python", "benchmarks/ltr_search.py", *(argv or sys.argv[1:])]),
                      "rows": {"train": len(train.labels), "dev": len(dev.labels), "features": train.names,
                               "dev_queries": len(dev.query_ids), "dev_queries_the_harness_scores": scorable,
                               "lists": meta},
                      "first_stage": summary(first_stage, None, subsets) if first_stage else None,
                      "feature_orders": feature_orders(dataset, {"train": train, "dev": dev}
                                                       | {f"train {f}": rows for f, rows in others.items()}),
                      "reference_vs_first_stage": summary(reference, first_stage, subsets) if first_stage else None,
                      "settings": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
