"""Re-ranking latency on the real catalog: each registered cross-encoder, and the cascade.

For every registered reranker / student version (or ``--models DIR ...``) and
ONNX precision, prints p50/p95/p99 of scoring the top 100 hybrid candidates of
real dev queries (tokenisation and batching included; ``--threads`` threads each) and, with fp32
among the precisions, how far each other precision's scores are from fp32's; then end-to-end latency
of the served pipelines (``rerank``, ``cascade``, ``ltr``, ``full``) with their
configured depths, and peak memory. One query at a time, 2-core CPU.

    python benchmarks/rerank_latency.py [--queries 100] [--candidates 100] [--precisions int8 bf16 fp32] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    command,
    empty_caches,
    hardware,
    peak_rss_gib,
    percentiles,
    rss_gib,
    time_each,
)
from core.hardware import limit_math_threads  # noqa: E402
from core.registry import ModelRegistry  # noqa: E402
from core.settings import Settings  # noqa: E402
from evaluation.dataset import load_dataset  # noqa: E402
from ranking.cross_encoder import CrossEncoderScorer  # noqa: E402
from serving.loading import open_engine, served_max_length, warm_store_features  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "homedepot"


def uncached(engine, pipeline: str, queries: list[str]) -> list[float]:  # type: ignore[no-untyped-def]
    """Seconds per search with every result, score and query-vector cache emptied first (the cold
    path: a query no search has seen, so each pipeline encodes it again)."""
    for query in queries[:5]:  # warm-up: sessions, threads, allocator
        engine.search(query, 10, pipeline=pipeline, use_cache=False)
    out = []
    for query in queries:
        empty_caches(engine)
        started = time.perf_counter()
        engine.search(query, 10, pipeline=pipeline, use_cache=False)
        out.append(time.perf_counter() - started)
    return out


def against_fp32(scores: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    """How far one precision's scores are from fp32's on the same lists: the largest absolute
    difference, and the mean per-query Kendall tau of the two orders."""
    from scipy.stats import kendalltau

    taus = [kendalltau(a, b).statistic for a, b in zip(scores, reference) if len(a) > 1]
    return {"max_abs_diff": round(float(max(np.abs(a - b).max() for a, b in zip(scores, reference) if len(a))), 4),
            "mean_kendall_tau": round(float(np.nanmean(taus)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--precisions", nargs="+", default=["int8", "fp32"],
                        help="int8, fp32, bf16 (OpenVINO execution provider); with fp32 among them, each other "
                             "precision's scores are also compared with fp32's")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime threads of each timed cross-encoder (0: one per core; a server process "
                             "gives each model its share of the cores, ranking.threads)")
    parser.add_argument("--pipelines", nargs="+", default=["hybrid", "rerank", "cascade", "ltr", "full"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = Settings(progress=False)
    # cold means cold: no shared score store behind the caches clear_caches() empties
    settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"score_store": "memory"})})
    math_threads = limit_math_threads(settings.serving.math_threads)  # as `shoprank serve` runs
    dataset = load_dataset(args.dataset)
    engine = open_engine(settings, dataset.products, warm_features=False)
    index = engine.index
    warm_store_features(engine)  # as a server does at start, before anything is timed
    queries = [q for _, q in dataset.select("dev")][: args.queries]
    lists = {q: [index.title(int(d)) for d in engine.hybrid.search(q, args.candidates).docs] for q in queries}
    registry = ModelRegistry(settings.paths.models)
    models, agreement = {}, {}
    for role in ("student", "reranker"):
        for entry in registry.versions(role):
            layers = entry.params.get("layers", "?")
            scores = {}
            for precision in sorted(args.precisions, key=lambda p: p != "fp32"):  # fp32 first: the reference
                scorer = CrossEncoderScorer(Path(entry.path), precision, batch_size=settings.ranking.batch_size,
                                            max_length=served_max_length(settings, entry), threads=args.threads)
                seconds = time_each(queries, lambda q, s=scorer: s.score(q, lists[q]))
                name = f"{role}:{entry.version} ({layers} layers, {precision})"
                models[name] = percentiles(seconds)
                if "fp32" in args.precisions:  # the reference to compare with: score each list once more
                    scores[precision] = [scorer.score(q, lists[q]) for q in queries]
                    if precision != "fp32":
                        agreement[name] = against_fp32(scores[precision], scores["fp32"])
    pipelines = {}
    for name in args.pipelines:
        try:
            engine.pipeline(name)
        except Exception as err:  # noqa: BLE001 - a pipeline without its model is reported, not fatal
            pipelines[name] = f"unavailable: {err}"
            continue
        pipelines[name] = percentiles(uncached(engine, name, queries))
    report = {
        "benchmark": "rerank_latency", "hardware": hardware(), "command": command(), "math_threads": math_threads,
        "products": index.count,
        "candidates_per_query": args.candidates, "queries": len(queries),
        "settings": settings.ranking.model_dump(mode="json"),
        "cross_encoder_threads": args.threads, "cross_encoder_ms_per_query": models,
        "cross_encoder_agreement_with_fp32": agreement, "pipeline_ms_top10": pipelines,
        "rss_gib": rss_gib(), "peak_rss_gib": peak_rss_gib(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
