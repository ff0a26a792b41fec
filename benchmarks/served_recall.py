"""Where the served list's Recall@100 misses lie, and the first stage's order blended back in.

Runs ``--pipeline`` (default ``ltr``: the first stage, LambdaMART on its top
``ranking.ltr_depth``) on every judged query of ``--split`` with a relevant product (grade
>= 0.6 of the maximum, as ``shoprank evaluate`` counts Recall@100), 1,000 deep, and prints:

- where the relevant products sit, each query's weighing 1 in all: in the served top 100;
  served at 101 to the re-ranked depth; below it (the first stage's order, 1,000 deep); not
  retrieved at all;
- of those in the served top 100, how many the first stage had in its own top 100, and how
  many the re-ranker brought up from below; and the first stage's top-100 products the
  re-ranker pushed out;
- the served order re-fused with the first stage's (``1 / (k + served rank) + w / (k + first-stage
  rank)``, k = 60, w 0.3 / 0.5 / 1; the top 10 kept as served), each with Recall@100 and
  condensed NDCG@10 against the served order, paired bootstrap 95% CI. NDCG@10 here is over
  the same queries (those with a relevant product), fewer than ``shoprank evaluate`` averages.

    HF_HUB_OFFLINE=1 SHOPRANK_HOME=artifacts/ft3 python benchmarks/served_recall.py --dataset D [--split dev] [--pipeline ltr]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import hardware
from core.errors import NotReady
from core.settings import get_settings
from evaluation.compare import compare
from evaluation.dataset import load_dataset
from evaluation.harness import Thresholds
from evaluation.metrics import condense, grade_threshold, ndcg_at_k, recall_at_k
from serving.loading import open_engine

DEPTH = 1000
K = 60


def blended(ids: list[str], first: np.ndarray, weight: float, keep: int = 10) -> list[str]:
    """The served order ``ids`` re-fused with the first stage's ranks ``first`` (0: not ranked by it)."""
    served = np.arange(1, len(ids) + 1)
    first = np.where(first > 0, first, 10 * DEPTH).astype(float)
    fused = 1 / (K + served) + weight / (K + first)
    fused[:keep] = np.inf  # the top ``keep`` stay as served
    order = np.lexsort((served, -fused))
    return [ids[i] for i in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--pipeline", default="ltr")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    settings = get_settings()
    dataset = load_dataset(args.dataset)
    relevant = grade_threshold(Thresholds().recall, dataset.max_grade)
    engine = open_engine(settings, dataset.products)
    try:
        pipeline = engine.pipeline(args.pipeline)
    except NotReady as err:  # the home has no such model: say so, with the fix, not a traceback
        parser.exit(2, f"{parser.prog}: error: {err} (or pass another --pipeline)\n")
    reranked = settings.ranking.ltr_depth
    lists = []
    for qid, query in tqdm(dataset.select(args.split)[: args.limit], desc="served lists", unit="q"):
        grades = dataset.qrels.get(qid, {})
        if any(grade >= relevant for grade in grades.values()):
            candidates = pipeline.search(query, DEPTH)
            first = np.asarray(candidates.ranks.get("rrf", np.zeros(len(candidates))))
            lists.append((grades, candidates.product_ids, first))
    where = dict.fromkeys(("served top 100", f"served 101-{reranked}", f"first stage {reranked + 1}-{DEPTH}",
                           f"not in the first stage's {DEPTH}"), 0.0)
    moves = dict.fromkeys(("top 100 in both", "brought up from 101+", "pushed out of the first stage's top 100"),
                          0.0)
    for grades, ids, first in lists:
        wanted = {p for p, g in grades.items() if g >= relevant}
        served_rank = {p: i + 1 for i, p in enumerate(ids)}
        first_rank = dict(zip(ids, first.tolist()))
        for product in wanted:
            share, rank, before = 1 / len(wanted), served_rank.get(product), first_rank.get(product, 0)
            key = (f"not in the first stage's {DEPTH}" if rank is None else "served top 100" if rank <= 100
                   else f"served 101-{reranked}" if rank <= reranked else f"first stage {reranked + 1}-{DEPTH}")
            where[key] += share
            if rank is not None and rank <= 100:
                moves["top 100 in both" if 0 < before <= 100 else "brought up from 101+"] += share
            elif 0 < before <= 100:
                moves["pushed out of the first stage's top 100"] += share
    n = len(lists)

    def scored(order) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
        recall = [recall_at_k(order(ids, first), grades, 100, relevant) for grades, ids, first in lists]
        ndcg = [ndcg_at_k(condense(order(ids, first), grades, 100), grades, 10) for grades, ids, first in lists]
        return np.array(recall, dtype=float), np.array(ndcg)

    served_recall, served_ndcg = scored(lambda ids, first: ids)
    blends = {}
    for weight in (0.3, 0.5, 1.0):
        recall, ndcg = scored(lambda ids, first, w=weight: blended(ids, first, w))
        blends[f"w={weight}"] = {"recall@100": round(float(recall.mean()), 4),
                                 "recall@100 vs served": compare(served_recall, recall).to_json(),
                                 "ndcg@10": round(float(ndcg.mean()), 4),
                                 "ndcg@10 vs served": compare(served_ndcg, ndcg).to_json()}
    print(json.dumps({"benchmark": "served_recall", "hardware": hardware(), "command": " ".join(sys.argv),
                      "home": str(settings.home), "pipeline": args.pipeline, "versions": engine.versions,
                      "queries": n, "reranked_depth": reranked,
                      "served": {"recall@100": round(float(served_recall.mean()), 4),
                                 "ndcg@10": round(float(served_ndcg.mean()), 4)},
                      "relevant_products": {k: round(v / n, 4) for k, v in where.items()},
                      "served_top_100": {k: round(v / n, 4) for k, v in moves.items()},
                      "blended_with_first_stage": blends}, indent=2))


if __name__ == "__main__":
    main()
