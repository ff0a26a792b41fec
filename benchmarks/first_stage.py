"""First-stage benchmark on a real judged catalog (default: ../shared/data/homedepot).

Prints build time and memory of the index, then per-query latency (p50/p95/p99,
one query at a time) of each first-stage step and of the whole hybrid first
stage: query encoding + BM25 (1,000 deep) + dense search (1,000 deep) + RRF.

    python benchmarks/first_stage.py [--dataset DIR] [--queries 500] [--cold]

``--cold`` builds into a fresh artifacts home, so the build time includes
encoding every product (otherwise the embedding cache makes rebuilds cheap).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

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
from core.settings import Settings  # noqa: E402
from evaluation.dataset import load_dataset  # noqa: E402
from serving.indexing import open_encoder, open_index  # noqa: E402
from serving.loading import open_engine  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "homedepot"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--cold", action="store_true", help="build in a fresh home (encode everything)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = Settings(progress=False)
    # cold means cold: no shared score store hands over the query vectors empty_caches() forgets
    settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"score_store": "memory"})})
    if args.cold:
        settings = settings.model_copy(update={"home": Path(tempfile.mkdtemp(prefix="shoprank-bench-"))})
    math_threads = limit_math_threads(settings.serving.math_threads)  # as `shoprank serve` runs
    dataset = load_dataset(args.dataset)
    encoder = open_encoder(settings)
    started = time.perf_counter()
    index = open_index(settings, encoder, dataset.products)
    load_or_build = time.perf_counter() - started
    engine = open_engine(settings, models=False, encoder=encoder, index=index)
    queries = [q for _, q in dataset.select(args.split)][: args.queries]
    vectors = engine.dense.weigh(encoder.encode(queries))  # not the engine's cache: the hybrid's timing encodes
    by_query = dict(zip(queries, vectors))
    hybrid = engine.pipeline("hybrid")

    steps = {
        "query_encode": time_each(queries, lambda q: encoder.encode([q])),
        "bm25_1000": time_each(queries, lambda q: index.bm25.search(q, args.depth)),
        "dense_1000": time_each(queries, lambda q: index.dense.search(by_query[q], args.depth)),
        "hybrid_first_stage": time_each(queries, lambda q: hybrid.search(q, args.depth),
                                        before=lambda: empty_caches(engine)),  # cold: encodes each query
    }
    report = {
        "benchmark": "first_stage",
        "hardware": hardware(), "command": command(), "math_threads": math_threads,
        "dataset": str(args.dataset),
        "products": index.count,
        "dense_index": index.manifest.dense_kind,
        "queries": len(queries),
        "build_seconds": index.manifest.build_seconds,
        "load_or_build_seconds": round(load_or_build, 2),
        "rss_gib": rss_gib(),
        "peak_rss_gib": peak_rss_gib(),
        "latency_ms": {name: percentiles(values) for name, values in steps.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
