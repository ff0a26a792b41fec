"""Exact dense search over the served catalog: the float32 scan against the fp16 scan + exact re-score.

Embeds ``--queries`` real queries of ``--split`` with the home's encoder, then times the top
``--k`` search under ``retrieval.flat_scan`` f32 and fp16, one query at a time on one thread
(p50 / p95), and ``--threads`` threads searching side by side (searches a second); and checks
that both return the same rows. For reference it also times FAISS ``IndexFlatIP`` over the
same vectors (``faiss-flat``), the structure the served flat scan does without.

    HF_HUB_OFFLINE=1 SHOPRANK_HOME=artifacts/ft python benchmarks/dense_scan.py --dataset D
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import command, hardware
from core.settings import get_settings
from evaluation.dataset import load_dataset
from retrieval.dense import DenseIndex
from serving.loading import open_engine

DATA = ROOT.parent / "shared" / "data" / "homedepot"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATA)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    settings = get_settings()
    dataset = load_dataset(args.dataset)
    engine = open_engine(settings, dataset.products, models=False, warm_features=False)
    texts = [t for _, t in dataset.select(args.split)][: args.queries]
    vectors = engine.hybrid.dense.embed(texts)
    path = engine.index.dense.path
    print(f"CPU: {hardware()}\ncommand: {command()}\n{len(engine.index.dense.live)} vectors, {len(texts)} queries, "
          f"k={args.k}", flush=True)
    found: dict[str, list[set[int]]] = {}
    with threadpool_limits(1):
        faiss.omp_set_num_threads(1)
        for scan in ("f32", "fp16", "f32", "fp16"):  # twice each, alternating
            dense = DenseIndex.load(path, settings.retrieval.model_copy(update={"flat_scan": scan}))
            seconds = []
            for vector in vectors:
                started = time.perf_counter()
                dense.search(vector, args.k)
                seconds.append(time.perf_counter() - started)
            found[scan] = [set(dense.search(v, args.k).docs.tolist()) for v in vectors]
            with ThreadPoolExecutor(args.threads) as pool:
                started = time.perf_counter()
                list(pool.map(lambda v: dense.search(v, args.k), vectors))
                per_s = len(vectors) / (time.perf_counter() - started)
            row = {"p50_ms": round(float(np.median(seconds)) * 1e3, 2),
                   "p95_ms": round(float(np.percentile(seconds, 95)) * 1e3, 2),
                   f"searches_per_s_{args.threads}_threads": round(per_s, 1)}
            print(scan, json.dumps(row), flush=True)
    flat = faiss.IndexFlatIP(engine.index.dense.dim)
    flat.add(np.ascontiguousarray(engine.index.dense.vectors, dtype=np.float32))
    with threadpool_limits(1):
        faiss.omp_set_num_threads(1)
        seconds = []
        for vector in vectors:
            started = time.perf_counter()
            flat.search(vector[None, :].astype(np.float32), args.k)
            seconds.append(time.perf_counter() - started)
    row = {"p50_ms": round(float(np.median(seconds)) * 1e3, 2), "p95_ms": round(float(np.percentile(seconds, 95)) * 1e3, 2)}
    print("faiss-flat", json.dumps(row), flush=True)
    same = float(np.mean([len(a & b) / max(len(a), 1) for a, b in zip(found["f32"], found["fp16"])]))
    print(f"share of the f32 top {args.k} the fp16 scan returns: {same:.4f}")
    engine.close()


if __name__ == "__main__":
    main()
