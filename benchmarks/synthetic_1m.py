"""First stage at 1,000,000 products (synthetic catalog; real queries).

The catalog is SYNTHETIC: each product derives from one of the real Home Depot
products (``--dataset``): its title gets 1-2 words swapped for words drawn from
the real title vocabulary (by frequency) plus a model number, and its vector is
the real product's MiniLM vector plus Gaussian noise (cosine ~0.9 to the
original), re-normalised. Queries are real dev queries, encoded by the real
encoder. Vectors are not re-encoded from the synthetic titles (that would take
~1.5 h on 2 cores); BM25 indexes the synthetic titles.

Reports index build time and memory, ANN recall@10/100/1000 against exact
search, and first-stage latency (encode + BM25 + ANN + RRF, 1,000 deep).

    python benchmarks/synthetic_1m.py [--products 1000000] [--kind hnsw|ivfpq]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

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
from core.settings import Settings  # noqa: E402
from evaluation.dataset import load_dataset  # noqa: E402
from retrieval.embedding_cache import EmbeddingCache  # noqa: E402
from retrieval.index import ProductIndex  # noqa: E402
from serving.indexing import open_encoder, open_index  # noqa: E402
from serving.loading import open_engine  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "homedepot"


def synthetic_catalog(titles: list[str], vectors: np.ndarray, n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    counts = Counter(w for t in titles for w in t.split())
    vocab = np.array(list(counts))
    weights = np.array([counts[w] for w in vocab], dtype=np.float64)
    weights /= weights.sum()
    base = rng.integers(0, len(titles), n)
    swaps = rng.choice(vocab, size=(n, 2), p=weights)
    out_titles = []
    for i in tqdm(range(n), desc="synthetic titles", mininterval=5):
        words = titles[base[i]].split()
        for j in range(1 + i % 2):
            words[rng.integers(0, len(words))] = swaps[i, j]
        out_titles.append(" ".join(words) + f" Model {i:07d}")
    out = np.empty((n, vectors.shape[1]), dtype=np.float32)
    for start in tqdm(range(0, n, 100_000), desc="synthetic vectors"):
        rows = base[start : start + 100_000]
        chunk = vectors[rows] + rng.normal(0, 0.0245, size=(len(rows), vectors.shape[1])).astype(np.float32)
        out[start : start + len(rows)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    products = pd.DataFrame({"product_id": [f"S{i:07d}" for i in range(n)], "title": out_titles,
                             "description": [""] * n})
    return products, out


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 25) -> list[set[int]]:
    out = []
    for start in tqdm(range(0, len(queries), chunk), desc="exact search"):
        scores = queries[start : start + chunk] @ vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for row, idx in zip(scores, top):
            out.append(idx[np.argsort(-row[idx])])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--kind", choices=("hnsw", "ivfpq"), default="hnsw")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--ef-search", type=int, default=None, help="HNSW efSearch (default: settings)")
    parser.add_argument("--nprobe", type=int, default=None, help="IVF nprobe (default: settings)")
    parser.add_argument("--keep", action="store_true", help="keep the built index for later runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = Settings(progress=False)
    # cold means cold: no shared score store hands over the query vectors empty_caches() forgets
    settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"score_store": "memory"})})
    updates = {"dense_index": args.kind}
    if args.ef_search:
        updates["hnsw_ef_search"] = args.ef_search
    if args.nprobe:
        updates["ivf_nprobe"] = args.nprobe
    settings = settings.model_copy(update={"retrieval": settings.retrieval.model_copy(update=updates)})
    dataset = load_dataset(args.dataset)
    encoder = open_encoder(settings)
    real = open_index(settings, encoder, dataset.products)
    real_live = real.products["live"].to_numpy()
    products, vectors = synthetic_catalog(real.products["title"][real_live].tolist(),
                                          np.asarray(real.dense.vectors[real_live]), args.products)
    del real
    path = settings.paths.index(f"synthetic-{args.products}-{args.kind}", encoder.fingerprint)
    reuse = args.keep and (path / "manifest.json").is_file()
    started = time.perf_counter()
    cache = EmbeddingCache(settings.paths.embeddings("unused"), encoder.dim)
    if reuse:
        index = ProductIndex.load(path, settings.retrieval)
    else:
        index = ProductIndex.build(path, products, encoder, settings.retrieval, cache, progress=False, vectors=vectors)
    build_seconds = time.perf_counter() - started
    disk_gib = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30
    engine = open_engine(settings, models=False, encoder=encoder, index=index)
    queries = [q for _, q in dataset.select("dev")][: args.queries]
    qvecs = encoder.encode(queries)
    by_query = dict(zip(queries, qvecs))
    exact = exact_top(vectors, qvecs, args.depth)
    approx = [index.dense.search(v, args.depth).docs for v in qvecs]
    recall = {f"recall@{k}": round(float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact)])), 4)
              for k in (10, 100, args.depth)}
    hybrid = engine.pipeline("hybrid")
    steps = {
        "query_encode": time_each(queries, lambda q: encoder.encode([q])),
        f"bm25_{args.depth}": time_each(queries, lambda q: index.bm25.search(q, args.depth)),
        f"{args.kind}_{args.depth}": time_each(queries, lambda q: index.dense.search(by_query[q], args.depth)),
        "hybrid_first_stage": time_each(queries, lambda q: hybrid.search(q, args.depth),
                                        before=lambda: empty_caches(engine)),  # cold: encodes each query
    }
    rs = settings.retrieval
    report = {
        "benchmark": "synthetic_1m",
        "hardware": hardware(),
        "command": command(),
        "products": index.count,
        "catalog": "synthetic (derived from Home Depot titles and vectors; see docstring)",
        "dense_index": args.kind,
        "params": {"hnsw_m": rs.hnsw_m, "ef_construction": rs.hnsw_ef_construction, "ef_search": rs.hnsw_ef_search}
        if args.kind == "hnsw" else {"nlist": int(index.dense.index.nlist), "pq_m": rs.pq_m, "nprobe": rs.ivf_nprobe},
        "build_seconds": round(build_seconds, 1) if not reuse else "reused",
        "index_disk_gib": round(disk_gib, 2),
        "rss_gib": rss_gib(),
        "peak_rss_gib": peak_rss_gib(),
        "ann_vs_exact": recall,
        "queries": len(queries),
        "latency_ms": {name: percentiles(values) for name, values in steps.items()},
    }
    print(json.dumps(report, indent=2))
    cache.close()
    if not args.keep:
        shutil.rmtree(path)


if __name__ == "__main__":
    main()
