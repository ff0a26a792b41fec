"""What LambdaMART costs per search: query analysis + features + scoring of the top N.

    python benchmarks/ltr_latency.py --dataset ../shared/data/homedepot [--home DIR] [--candidates 100]

Opens the engine of the home (its active LambdaMART and feature store), warms the
store-feature cache as a server does at start (timed), takes the hybrid top N of
each dev query, and times, per query: the analyzer (no cache),
the featurizer (every feature group of the model: scores, ranks, text features,
store features; the cross-encoders' scores are read from the candidates, as served, not
computed) and the model's prediction. Prints JSON with the CPU, the command
and p50/p95/p99 in ms of each part and of their sum.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, percentiles  # noqa: E402
from core.hardware import limit_math_threads  # noqa: E402
from core.query import Query  # noqa: E402
from core.settings import Settings  # noqa: E402
from evaluation.dataset import load_dataset  # noqa: E402
from retrieval.analyzer import Analyzer  # noqa: E402
from serving.loading import open_engine, warm_store_features  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    settings = Settings(progress=False, **({"home": args.home} if args.home else {}))
    math_threads = limit_math_threads(settings.serving.math_threads)  # as `shoprank serve` runs
    dataset = load_dataset(args.dataset)
    engine = open_engine(settings, dataset.products, warm_features=False)
    if engine.ltr is None:
        raise SystemExit(f"no LambdaMART in {settings.home}: train one with `shoprank train ltr --dataset DIR`")
    warm_seconds = None
    if engine.models.features is not None:  # as a server does at start (in the background there)
        started = time.perf_counter()
        warm_store_features(engine)
        warm_seconds = round(time.perf_counter() - started, 1)
    model = engine.ltr.model
    # as served: the cross-encoder stages run before LambdaMART and leave their scores on the
    # candidates, so the featurizer scores nothing (a training featurizer would run the teacher on
    # the rows no stage scored, and its time would count here); these hybrid candidates carry no
    # cross-encoder score, as under overload
    featurizer = engine.featurizer(model.names, score_missing=False)  # type: ignore[attr-defined]
    first = engine.pipeline("hybrid")
    analyzer = Analyzer(engine.index.vocabulary, cache_size=0)
    texts = [t for _, t in dataset.select("dev")][: args.queries]
    lists = [(t, first.search(t, args.candidates)) for t in texts]
    featurizer(first.analyze(Query(texts[0])), lists[0][1])  # builds the catalog text once
    parts: dict[str, list[float]] = {"analyzer": [], "features": [], "predict": [], "total": []}
    for text, candidates in lists:
        t0 = time.perf_counter()
        analysis = analyzer.analyze(text)
        t1 = time.perf_counter()
        rows = featurizer(Query(analysis.text or text, "u1", analysis=analysis), candidates)
        t2 = time.perf_counter()
        model.predict(rows)  # type: ignore[attr-defined]
        t3 = time.perf_counter()
        for name, seconds in (("analyzer", t1 - t0), ("features", t2 - t1), ("predict", t3 - t2), ("total", t3 - t0)):
            parts[name].append(seconds)
    print(json.dumps({"hardware": hardware(), "math_threads": math_threads, "command": " ".join(sys.argv), "home": str(settings.home),
                      "ltr": engine.ltr.version, "features": len(model.names),  # type: ignore[attr-defined]
                      "store_features": featurizer.store_names != [], "store_warm_s": warm_seconds,
                      "candidates": args.candidates,
                      "queries": len(lists), "ms": {name: percentiles(s) for name, s in parts.items()}}, indent=2))


if __name__ == "__main__":
    main()
