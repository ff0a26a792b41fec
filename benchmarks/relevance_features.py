"""Relevance-feature benchmark on a real judged catalog (default: ../shared/data/homedepot).

Prints, as JSON: the hardware; the seconds and RSS growth of
``CatalogText.from_index`` over the whole catalog; p50/p95/p99 milliseconds of
``relevance_features`` for each query's hybrid top ``--candidates``, cold (the
first call for that query and list) and warm (the same calls again), in wall
time and in this thread's CPU time (the gap is other processes on the cores);
and, as a sanity check, the mean of each feature over judged relevant
(grade >= ``--relevant``) and irrelevant (grade <= ``--irrelevant``) products of
the same queries, with the AUC of each feature between the two groups
(0.5: no separation; NaN rows left out).

    python benchmarks/relevance_features.py [--dataset DIR] [--queries 300] [--candidates 100]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, peak_rss_gib, percentiles
from core.query import Analysis
from core.settings import Settings
from evaluation.dataset import EvalDataset, load_dataset
from ranking.relevance import RELEVANCE_FEATURES, CatalogText, relevance_features
from retrieval.analyzer import Analyzer
from retrieval.index import ProductIndex
from retrieval.vocabulary import Vocabulary
from serving.loading import open_engine

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "homedepot"


def catalog_analyzer(index: ProductIndex) -> Analyzer:
    """The index's analyzer when it has one; else one over its live catalog."""
    if isinstance(getattr(index, "analyzer", None), Analyzer):
        return index.analyzer  # type: ignore[attr-defined]
    live = index.live_products()
    columns = {c: live[c].tolist() if c in live.columns else None for c in ("description", "brand", "category")}
    return Analyzer(Vocabulary.build(live["title"].tolist(), columns["description"], columns["brand"],
                                     columns["category"]))


def build(index: ProductIndex) -> tuple[CatalogText, dict[str, float]]:
    gc.collect()
    before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    catalog = CatalogText.from_index(index)
    seconds = time.perf_counter() - started
    gc.collect()
    arrays = sum(a.nbytes for f in catalog.fields.values()
                 for a in (f.present, f.words.ptr, f.words.values, f.grams.ptr, f.grams.values, f.idf))
    return catalog, {"seconds": round(seconds, 2), "rss_growth_mib": round(
        (psutil.Process().memory_info().rss - before) / 2**20, 1), "array_mib": round(arrays / 2**20, 1),
        "fields": sorted(catalog.fields), "rows": catalog.rows}


def timed(analyses: list[Analysis], lists: list[np.ndarray], catalog: CatalogText) -> dict[str, list[float]]:
    wall, cpu = [], []
    for analysis, docs in zip(analyses, lists):
        started, started_cpu = time.perf_counter(), time.thread_time()
        relevance_features(analysis, docs, catalog)
        wall.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
    return {"wall": wall, "cpu": cpu}


def separation(dataset: EvalDataset, queries: list[tuple[str, str]], analyses: list[Analysis],
               index: ProductIndex, catalog: CatalogText, relevant: int, irrelevant: int) -> dict[str, dict]:
    """Per feature: mean over relevant and irrelevant judged products, their AUC, NaN shares."""
    frames = []
    for (qid, _), analysis in zip(queries, analyses):
        judged = [(index.doc_of(pid), grade) for pid, grade in dataset.qrels.get(qid, {}).items()]
        judged = [(doc, grade) for doc, grade in judged if doc is not None]
        if judged:
            frame = pd.DataFrame(relevance_features(analysis, np.array([d for d, _ in judged]), catalog),
                                 columns=RELEVANCE_FEATURES)
            frames.append(frame.assign(grade=[g for _, g in judged]))
    rows = pd.concat(frames, ignore_index=True)
    good, bad = rows[rows["grade"] >= relevant], rows[rows["grade"] <= irrelevant]
    out: dict[str, dict] = {"_counts": {"relevant": len(good), "irrelevant": len(bad)}}
    for name in RELEVANCE_FEATURES:
        if rows[name].isna().all():
            continue
        a, b = good[name].dropna(), bad[name].dropna()
        ranks = pd.concat([a, b]).rank().to_numpy()  # Mann-Whitney U / (n_a n_b) = AUC
        auc = (ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(b)) if len(a) and len(b) else None
        out[name] = {"relevant": round(float(a.mean()), 3), "irrelevant": round(float(b.mean()), 3),
                     "auc": None if auc is None else round(float(auc), 3),
                     "nan_relevant": round(float(good[name].isna().mean()), 3),
                     "nan_irrelevant": round(float(bad[name].isna().mean()), 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--relevant", type=int, default=6, help="lowest grade counted relevant")
    parser.add_argument("--irrelevant", type=int, default=3, help="highest grade counted irrelevant")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    dataset = load_dataset(args.dataset)
    engine = open_engine(Settings(progress=False), dataset.products, models=False)
    index, hybrid = engine.index, engine.pipeline("hybrid")
    queries = dataset.select(args.split)[: args.queries]
    analyzer = catalog_analyzer(index)
    own_analyzer = analyzer is not getattr(index, "analyzer", None)
    analyses = [analyzer.analyze(text) for _, text in queries]
    lists = [hybrid.search(text, args.candidates).docs for _, text in queries]
    catalog, built = build(index)

    cold = timed(analyses, lists, catalog)
    warm = timed(analyses, lists, catalog)
    report = {
        "benchmark": "relevance_features",
        "command": " ".join([*(f"{k}={os.environ[k]}" for k in ("HF_HUB_OFFLINE", "SHOPRANK_HOME") if k in os.environ),
                             Path(sys.executable).name, *sys.argv]),
        "hardware": hardware(),
        "dataset": str(args.dataset),
        "products": index.count,
        "queries": len(queries),
        "candidates_mean": round(float(np.mean([len(d) for d in lists])), 1),
        "features": len(RELEVANCE_FEATURES),
        "analyzer": "built here from the index's titles" if own_analyzer else "the index's",
        "catalog_text_build": built,
        "latency_ms": {f"{name}_{clock}": percentiles(values[clock])
                       for name, values in (("cold", cold), ("warm", warm)) for clock in ("wall", "cpu")},
        "peak_rss_gib": peak_rss_gib(),
        "separation": separation(dataset, queries, analyses, index, catalog, args.relevant, args.irrelevant),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
