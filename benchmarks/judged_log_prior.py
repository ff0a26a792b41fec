"""A data audit: per-product counts from the judged log look like a large LambdaMART gain, and leak.

A "log prior" is a product's count of judged pairs in the training queries (how often the
engine that collected the judgments showed it), the kind of exposure count a store's
impression log gives. Here it is computed leave-one-query-out (a training query's own
judgments are taken off its rows) and added to the saved LambdaMART rows as one more
feature; the model with it is trained and scored as ``benchmarks/ltr_search.py`` does and
compared with the model without it, paired.

The audit also prints, for each count, how often a row of a served list is a judged pair
of its query. When a dataset's catalog is the union of the products its queries judged
(plus a few others), a product no other query judged is in the catalog *because* a held-out
query judged it: the count then tells the model which products the held-out judgments hold,
not what shoppers want. A judged rate that falls from count 0 to count 1 is that leak; on
a store's real catalog most products have never been shown, and count 0 says nothing.

    python benchmarks/judged_log_prior.py --dataset D --rows ROWS   # ROWS: shoprank train ltr --save-data

JSON on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware  # noqa: E402
from benchmarks.ltr_search import per_query, summary  # noqa: E402
from evaluation.dataset import EvalDataset, load_dataset  # noqa: E402
from evaluation.subsets import subset_ids  # noqa: E402
from ranking.lambdamart import LambdaMART, RankingData, training_config  # noqa: E402
from ranking.training.ltr_data import load_ranking_data  # noqa: E402

BUCKETS = ((0, 0), (1, 1), (2, 2), (3, 5), (6, None))


def judged_counts(dataset: EvalDataset, queries: set[str]) -> Counter[str]:
    """Judged pairs per product over ``queries``."""
    return Counter(p for qid, grades in dataset.qrels.items() if qid in queries for p in grades)


def prior_column(data: RankingData, dataset: EvalDataset, counts: Counter[str], own_split: set[str]) -> np.ndarray:
    """Each row's product count, less the row's own judgment when its query is one of ``own_split``."""
    values = np.empty(len(data.labels))
    for qid, part in data.lists():
        own = dataset.qrels.get(qid, {}) if qid in own_split else {}
        values[part] = [counts[product] - (product in own) for product in data.product_ids[part]]
    return values


def judged_rows(data: RankingData, dataset: EvalDataset) -> np.ndarray:
    """Whether each row is a judged pair of its query."""
    judged = np.zeros(len(data.labels), dtype=bool)
    for qid, part in data.lists():
        grades = dataset.qrels.get(qid, {})
        judged[part] = [p in grades for p in data.product_ids[part]]
    return judged


def buckets(counts: np.ndarray, judged: np.ndarray) -> list[dict[str, object]]:
    rows = []
    for low, high in BUCKETS:
        chosen = (counts >= low) & (counts <= (np.inf if high is None else high))
        rows.append({"count": f"{low}" if low == high else f"{low}-{high}" if high else f"{low}+",
                     "rows": int(chosen.sum()),
                     "judged_rate": round(float(judged[chosen].mean()), 4) if chosen.any() else None})
    return rows


def with_column(data: RankingData, name: str, column: np.ndarray) -> RankingData:
    return RankingData(np.column_stack([data.features, column]), data.labels, data.groups, [*data.names, name],
                       data.query_ids, data.product_ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, type=Path)
    parser.add_argument("--rows", required=True, type=Path, help="a folder written by shoprank train ltr --save-data")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    meta = json.loads((args.rows / "lists.json").read_text())
    train, dev = load_ranking_data(args.rows / "train.npz"), load_ranking_data(args.rows / "dev.npz")
    dataset = load_dataset(args.dataset)
    train_split = meta.get("split", "train")
    own = {qid for qid, _ in dataset.select(train_split)}
    counts = judged_counts(dataset, own)
    columns = {"train": prior_column(train, dataset, counts, own), "dev": prior_column(dev, dataset, counts, own)}
    catalog = set(dataset.products["product_id"])
    held_out = {p for qid, grades in dataset.qrels.items() if qid not in own for p in grades}
    never = catalog - set(counts)  # products no train query judged
    listed = set(dev.query_ids)
    dev_queries = [(q, t) for q, t in dataset.select(meta.get("dev_split", "dev")) if q in listed]
    misspelled = subset_ids(dataset, dev_queries, "misspelled")
    subsets = {"misspelled": misspelled, "correct": listed - misspelled}
    runs, reference = [], None
    for name, (train_rows, dev_rows) in {"without": (train, dev),
                                         "with log_judged": (with_column(train, "log_judged", columns["train"]),
                                                             with_column(dev, "log_judged", columns["dev"]))}.items():
        config = training_config(train_rows.names, dataset.max_grade, meta["depth"], seed=args.seed)
        started = time.perf_counter()
        model = LambdaMART.fit(train_rows, dev_rows, config)
        values = per_query(dataset, dev_rows, model.predict(dev_rows.features))
        runs.append({"model": name, "train_seconds": round(time.perf_counter() - started, 1),
                     "best_iteration": model.history["best_iteration"],
                     "metrics": summary(values, reference, subsets)})
        reference = reference or values
        print(f"{name}: {runs[-1]['train_seconds']} s", file=sys.stderr, flush=True)
    print(json.dumps({
        "benchmark": "judged_log_prior", "hardware": hardware(),
        "command": " ".join(["python", "benchmarks/judged_log_prior.py", *(argv or sys.argv[1:])]),
        "catalog": {"products": len(catalog), f"judged by {train_split} queries": len(catalog - never),
                    "judged only by other queries": len(never & held_out),
                    "judged by no query": len(never - held_out),
                    f"share of products {train_split} never judged that other queries judged":
                        round(len(never & held_out) / max(1, len(never)), 4)},
        "judged_rate_by_count": {split: buckets(columns[split], judged_rows(data, dataset))
                                 for split, data in (("train", train), ("dev", dev))},
        "lambdamart": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
