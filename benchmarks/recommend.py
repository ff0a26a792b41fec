"""What recommendations find and cost (``/v1/recommend``).

    python benchmarks/recommend.py --dataset ../shared/data/homedepot [--split dev] [--home DIR]

**Quality of "similar" on human judgments.** For each judged query of the split with at least
two products of grade >= ``--grade`` (6 of 8 by default), the best-graded one (ties by id) is
the seed, and the query's other such products are what a "more like this" shelf should hold:
products a shopper searching for the seed would also take. Reported: hit@10 (a shelf of 10
holds at least one of them) and recall@10, for the served ``similar`` (the seed's vector and its
title's BM25 run, fused: :func:`serving.recommendations.similar`) against the seed's vector
alone (its nearest bi-encoder vectors), BM25 with the seed's title as the query, and the served
first stage with the title as the query (the title encoded again), each without the seed.
Paired 95% bootstrap intervals of similar minus each.

**Cost.** Per-call latency of :func:`serving.recommendations.recommend` for ``similar``,
``bought_together`` and ``for_you`` (k 10, uncached), the together kinds over a synthetic
neighbour file (``--shoppers`` shoppers with Zipf-distributed products, counted by
:func:`online_learning.cooccurrence.neighbours`, whose time is the nightly job's counting step).
Prints JSON with the CPU and the command.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, percentiles, served_engine  # noqa: E402
from core.settings import Settings  # noqa: E402
from evaluation.dataset import load_dataset  # noqa: E402
from online_learning.cooccurrence import neighbours, write_together  # noqa: E402
from serving.recommendations import recommend, similar  # noqa: E402

METHODS = ("similar", "served", "vector_only", "bm25", "first_stage")


def shelves(engine, dataset, split: str, grade: int,  # type: ignore[no-untyped-def]
            k: int) -> tuple[dict[str, dict[str, np.ndarray]], int]:
    """Per method, hit@k and recall@k over the queries with two or more products of ``grade``."""
    index = engine.index
    out: dict[str, dict[str, list[float]]] = {m: {"hit": [], "recall": []} for m in METHODS}
    pairs = 0
    for query_id, _ in dataset.select(split):
        judged = dataset.qrels.get(query_id, {})
        good = sorted((p for p, g in judged.items() if g >= grade and index.doc_of(p) is not None),
                      key=lambda p: (-judged[p], p))
        if len(good) < 2:
            continue
        seed, targets = good[0], set(good[1:])
        pairs += 1
        title = index.title(index.doc_of(seed))
        doc = index.doc_of(seed)
        seed_vector = engine.dense.weigh(index.dense.vectors[[doc]])  # as served (two models: weighted)
        vector = index.dense.batch_search(seed_vector.astype(np.float32), k + 1)[0].docs
        others = np.ones(index.count, dtype=bool)
        others[doc] = False
        alike = similar(index, [doc], k, others, engine.settings.retrieval.rrf_k, engine.dense.scale)
        found = {
            "similar": [index.product_id(int(d)) for d in alike.docs],
            "served": recommend(engine, Path("/nonexistent"), "similar", [seed], k, fill=False,
                                use_cache=False).candidates.product_ids,
            "vector_only": [p for p in (index.product_id(int(d)) for d in vector if d >= 0) if p != seed][:k],
            "bm25": [p for p in index.candidates(index.bm25.search(title, k + 1), "bm25").product_ids if p != seed][:k],
            "first_stage": [p for p in engine.hybrid.search(title, k + 1).product_ids if p != seed][:k],
        }
        for method, ids in found.items():
            hits = len(targets & set(ids))
            out[method]["hit"].append(float(hits > 0))
            out[method]["recall"].append(hits / len(targets))
    return {m: {name: np.asarray(v) for name, v in values.items()} for m, values in out.items()}, pairs


def paired(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, float]:
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (10_000, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"diff": round(float(diff.mean()), 4), "ci95": [round(float(low), 4), round(float(high), 4)]}


def synthetic_actions(products: list[str], shoppers: int, seed: int = 0) -> pd.DataFrame:
    """``shoppers`` shoppers, 1-12 products each, products drawn by a Zipf law over the catalog."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 13, shoppers)
    weights = 1.0 / np.arange(1, len(products) + 1) ** 1.05
    drawn = rng.choice(len(products), counts.sum(), p=weights / weights.sum())
    return pd.DataFrame({"shopper": np.repeat(np.arange(shoppers).astype(str), counts),
                         "product_id": np.asarray(products)[drawn], "timestamp": pd.Timestamp("2026-12-01", tz="UTC")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--grade", type=int, default=6)
    parser.add_argument("--shoppers", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    if args.calls < 1:
        parser.error(f"--calls {args.calls}: pass at least 1")
    settings = Settings(progress=False, **({"home": args.home} if args.home else {}))
    dataset = load_dataset(args.dataset)
    engine = served_engine(settings, dataset.products)
    found, pairs = shelves(engine, dataset, args.split, args.grade, 10)
    quality = {m: {f"{name}@10": round(float(v.mean()), 4) for name, v in values.items()}
               for m, values in found.items()}
    for other in METHODS[2:]:
        quality[f"similar - {other}"] = {f"{name}@10": paired(found["similar"][name], found[other][name])
                                         for name in ("hit", "recall")}

    products = engine.index.live_product_ids()
    started = time.perf_counter()
    table = neighbours(synthetic_actions(products, args.shoppers), min_shoppers=2, top=50)
    counting_s = time.perf_counter() - started
    rng = np.random.default_rng(1)
    calls = min(args.calls, len(products))  # distinct seeds: at most one per live product
    if calls < args.calls:
        print(f"--calls {args.calls} exceeds the {len(products)} live products: timing {calls} calls per kind, "
              "one per product", file=sys.stderr)
    seeds = [products[i] for i in rng.choice(len(products), calls, replace=False)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "together.json"
        write_together(path, {"bought": table, "viewed": {}})
        recommend(engine, path, "bought_together", seeds[:1], 10)  # reads the file once
        seconds: dict[str, list[float]] = {}
        for kind in ("similar", "bought_together", "for_you"):
            for seed in seeds:
                started = time.perf_counter()
                recommend(engine, path, kind, [seed], 10, use_cache=False)  # each shelf worked out
                seconds.setdefault(kind, []).append(time.perf_counter() - started)
        for seed in seeds:  # the same product pages again, from the results cache
            recommend(engine, path, "similar", [seed], 10)
            started = time.perf_counter()
            recommend(engine, path, "similar", [seed], 10)
            seconds.setdefault("similar, cached", []).append(time.perf_counter() - started)
        popular = [seed for seed in seeds if table.get(seed)]
    print(json.dumps({
        "hardware": hardware(), "command": " ".join(sys.argv), "home": str(settings.home),
        "products": engine.index.count, "encoder": engine.index.manifest.encoder, "split": args.split,
        "seed_queries": pairs, "quality": quality,
        "synthetic_log": {"shoppers": args.shoppers, "products_with_neighbours": len(table),
                          "pairs_kept": sum(map(len, table.values())), "counting_s": round(counting_s, 2),
                          "timed_seeds_with_neighbours": len(popular)},
        "calls_per_kind": calls,
        "ms": {kind: percentiles(s) for kind, s in seconds.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
