"""Filtered searches: searched within the filter (served) against filtering the unfiltered list.

    python benchmarks/filtered_search.py --dataset ../shared/data/homedepot [--home DIR] [--queries 400]

Two scenarios per dev query, with the served pipeline (``full``) of the home:

- ``own category``: the shopper searches inside the category of the query's best judged
  product (as after choosing it in a storefront's menu). Scored on the query's judged
  products of that category: NDCG@10 (condensed, as ``shoprank evaluate``), MRR@10 and
  Recall@100, paired over the queries, with 95% paired bootstrap intervals.
- ``other category``: a category drawn at random among the catalog's (seed 0): a filter the
  query's best matches mostly miss. Scored by how full the first page (k = 10) is.

"searched within" is the served search with the filter (the first stage searches only the
products the filter keeps, ``ranking/facts.py``). "filtered after" asks the same pipeline for
its whole list (first-stage depth, every stage, no filter) and keeps the products that match,
in order: what a search engine that filters its results, not its search, can show.
Categories are the facts the server filters on (feature store, else catalog). Prints JSON with
the CPU, the command, the figures and per-search latency of each way (p50 / p95 / p99 ms), whole
and of the first stage; BM25 alone under a filter both ways (tantivy matching the allowed rows, or
reading every match), and a rebuild of the catalog facts. Every search is cold: the engine's caches
are emptied before it (untimed), and it runs without a score store (``serving.score_store`` memory),
so no search reads a query vector, first-stage list or score that the query's other searches or an
earlier run kept.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import empty_caches, hardware, percentiles, served_engine, time_each  # noqa: E402
from core.hardware import limit_math_threads  # noqa: E402
from core.query import Filters, Query  # noqa: E402
from core.settings import Settings  # noqa: E402
from evaluation.compare import compare  # noqa: E402
from evaluation.dataset import load_dataset  # noqa: E402
from evaluation.harness import Thresholds  # noqa: E402
from evaluation.metrics import condense, grade_threshold, mrr_at_k, ndcg_at_k, recall_at_k  # noqa: E402
from serving.engine import SearchEngine  # noqa: E402

K = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--pipeline", default="full")
    args = parser.parse_args()
    settings = Settings(progress=False, **({"home": args.home} if args.home else {}))
    # cold means cold: no shared score store behind the caches empty_caches() empties
    settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"score_store": "memory"})})
    math_threads = limit_math_threads(settings.serving.math_threads)  # as `shoprank serve` runs
    dataset = load_dataset(args.dataset)
    engine = served_engine(settings, dataset.products)
    table = engine.facts.table()  # type: ignore[union-attr]
    category = dict(zip(engine.index.products["product_id"], table.category))
    names = sorted({c for c in table.category if c is not None})
    if not names:
        raise SystemExit(f"no product of {args.dataset} has a category (feature store or catalog column)")
    hit, relevant = (grade_threshold(t, dataset.max_grade) for t in (Thresholds().mrr, Thresholds().recall))
    depth = settings.ranking.first_stage_depth
    rng = random.Random(0)
    figures: dict[str, dict[str, list[float]]] = {"within": {}, "after": {}}
    fill: dict[str, list[float]] = {"within": [], "after": []}
    seconds: dict[str, list[float]] = {"within": [], "after": []}
    first_stage: dict[str, list[float]] = {"within": [], "after": []}
    scored = 0
    for qid, text in dataset.select(args.split)[: args.queries]:
        grades = dataset.qrels.get(qid, {})
        best = max(grades, key=lambda p: grades[p], default=None)
        own = category.get(best) if best is not None else None
        if own is None:
            continue
        other = rng.choice([n for n in names if n != own])
        empty_caches(engine)
        started = time.perf_counter()
        result = engine.search(Query(text), depth, pipeline=args.pipeline)
        seconds["after"].append(time.perf_counter() - started)
        first_stage["after"].append(result.timings["first_stage"])
        unfiltered = result.candidates.product_ids
        for name, wanted in (("own", own), ("other", other)):
            empty_caches(engine)  # else the unfiltered search's query vector (and scores) are read, not made
            started = time.perf_counter()
            result = engine.search(Query(text, filters=Filters(category=wanted)), 100, pipeline=args.pipeline)
            seconds["within"].append(time.perf_counter() - started)
            first_stage["within"].append(result.timings["first_stage"])
            within = result.candidates.product_ids
            after = [p for p in unfiltered if category.get(p) == wanted][:100]
            if name == "other":
                fill["within"].append(min(len(within), K) / K)
                fill["after"].append(min(len(after), K) / K)
                continue
            inside = {p: g for p, g in grades.items() if category.get(p) == own}
            if recall_at_k(list(inside), inside, 100, relevant) is None:
                continue
            scored += 1
            for way, ranked in (("within", within), ("after", after)):
                row = figures[way]
                row.setdefault("ndcg@10", []).append(ndcg_at_k(condense(ranked, inside), inside, K))
                row.setdefault("mrr@10", []).append(mrr_at_k(ranked, inside, K, hit))
                row.setdefault("recall@100", []).append(recall_at_k(ranked, inside, 100, relevant) or 0.0)
    # mean_a: filtered after, mean_b: searched within, diff: within - after
    own_category = {metric: compare(figures["after"][metric], values).to_json()
                    for metric, values in figures["within"].items()}
    parts = parts_ms(engine, dataset.select(args.split)[:60], names)
    print(json.dumps({
        "hardware": hardware(), "math_threads": math_threads, "command": " ".join(sys.argv),
        "home": str(settings.home), "pipeline": args.pipeline, "versions": engine.versions,
        "categories": len(names), "first_stage_depth": depth,
        "own_category": {"queries": scored, **own_category},
        "other_category": {"searches": len(fill["within"]),
                           "full_first_page": {way: round(float(np.mean([f == 1 for f in v])), 4)
                                               for way, v in fill.items()},
                           "mean_first_page": {way: round(float(np.mean(v)) * K, 2) for way, v in fill.items()}},
        "ms": {"searched_within (one filtered search)": percentiles(seconds["within"]),
               "filtered_after (one unfiltered search, whole list)": percentiles(seconds["after"]),
               "first stage, searched_within": percentiles(first_stage["within"]),
               "first stage, filtered_after": percentiles(first_stage["after"]), **parts},
    }, indent=2))


def parts_ms(engine: SearchEngine, queries: list[tuple[str, str]], names: list[str]) -> dict[str, object]:
    """BM25 alone under a random category, with tantivy matching the allowed rows and reading every
    match (``TERM_SET_MAX`` 0, as a first version did), and one rebuild of the catalog facts."""
    from retrieval import bm25 as module

    rng = random.Random(1)
    picked = [(engine.index.analyzer.analyze(text).text, rng.choice(names)) for _, text in queries]
    masks = [(text, engine.facts.allowed(Filters(category=name))) for text, name in picked]
    served = module.TERM_SET_MAX
    out: dict[str, object] = {}
    for label, limit in (("BM25 alone, one random category, tantivy matching the allowed rows", served),
                         ("BM25 alone, one random category, every match read, then kept", 0)):
        module.TERM_SET_MAX = limit
        try:
            out[label] = percentiles(time_each(masks, lambda m: engine.index.bm25.search(m[0], 1000, m[1])))
        finally:
            module.TERM_SET_MAX = served
    refreshes = time_each(list(range(5)), lambda _: engine.facts.refresh(), warmup=1)
    out["catalog facts rebuilt from the reader's cache"] = percentiles(refreshes)
    return out


if __name__ == "__main__":
    main()
