"""Query analyzer cost and effect on a real catalog: latency per query, share rewritten.

    python benchmarks/query_analyzer.py --dataset ../shared/data/homedepot [--split dev]

Opens the dataset's index (built on first use, as ``shoprank evaluate`` does),
times building its vocabulary, then analyzes every query of the split with the
index's analyzer and an empty cache (each query's first analysis: the cost a new
query pays) and prints JSON: CPU, command, vocabulary build seconds, latency
p50/p95/p99 in ms, the share of queries rewritten (spelling / split) and examples.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, percentiles  # noqa: E402
from core.settings import Settings  # noqa: E402
from evaluation.dataset import load_dataset  # noqa: E402
from retrieval.analyzer import Analyzer, Vocabulary  # noqa: E402
from serving.loading import open_encoder, open_index  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", default="dev")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    settings = Settings(progress=False)
    index = open_index(settings, open_encoder(settings), dataset.products)
    started = time.perf_counter()
    products = dataset.products
    vocabulary = Vocabulary.build(products["title"].tolist(), products["description"].tolist())
    build = time.perf_counter() - started
    started = time.perf_counter()
    analyzer = Analyzer(index.vocabulary, cache_size=0)  # builds the SymSpell dictionary
    speller = time.perf_counter() - started
    queries = [text for _, text in dataset.select(args.split)]
    seconds, reasons, examples = [], Counter(), []
    for text in queries:
        began = time.perf_counter()
        analysis = analyzer.analyze(text)
        seconds.append(time.perf_counter() - began)
        for rewrite in analysis.rewrites:
            reasons[rewrite.reason] += 1
        if analysis.rewrites and len(examples) < 25:
            examples.append(f"{text} -> {analysis.text}")
    rewritten = sum(1 for text in queries if analyzer.analyze(text).rewrites)
    print(json.dumps({
        "hardware": hardware(), "command": " ".join(sys.argv), "queries": len(queries),
        "vocabulary_words": len(vocabulary.counts), "brand_words": len(vocabulary.brands),
        "type_words": len(vocabulary.types), "vocabulary_build_s": round(build, 2),
        "speller_build_s": round(speller, 2), "latency_ms": percentiles(seconds),
        "queries_rewritten": rewritten, "share_rewritten": round(rewritten / max(1, len(queries)), 4),
        "rewrites_by_reason": dict(reasons), "examples": examples,
    }, indent=2))


if __name__ == "__main__":
    main()
