"""Batch jobs in one process vs on a local Dask cluster: catalog encoding and LambdaMART training.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dask_jobs.py [--catalog FILE] [--workers 2] [--queries 1000]

Encoding: the catalog (default: a generated demo store of 5,000 products, SIMULATED) is
encoded from an empty embedding cache in this process (ONNX Runtime, every core), then on
a local cluster of ``--workers`` processes (one ONNX thread each); prints seconds, products
per second and the largest difference between the two sets of vectors. LambdaMART: SIMULATED
ranking data (``simulation/ranking_data.py``: ``--queries`` queries, 60% train, 20% dev for
early stopping, 20% held out), the default configuration, trained both ways; prints seconds,
rounds and held-out NDCG@10. Cluster start-up is timed apart. Prints JSON with the CPU and
the command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import hardware
from core.compute import LOOPBACK_ENV, dask_client, loopback_command
from core.service_settings import ComputeSettings
from core.settings import Settings
from ranking.dask_lambdamart import ndcg
from ranking.lambdamart import LambdaMART, LambdaMARTConfig
from retrieval.catalog import read_catalog
from retrieval.dask_encoding import fill_cache_on_dask
from retrieval.embedding_cache import EmbeddingCache, encode_cached
from retrieval.index import product_texts
from serving.indexing import open_encoder
from simulation.demo import write_demo
from simulation.ranking_data import split_groups, synthetic_ranking_data


def encoding(settings: Settings, catalog: Path, client, work: Path) -> dict:  # type: ignore[no-untyped-def]
    products, _ = read_catalog(catalog)
    texts = product_texts(products)
    if settings.retrieval.second_encoder is not None:
        raise SystemExit("the encoding benchmark times one model: unset retrieval.second_encoder")
    encoder = open_encoder(settings, "onnx")
    batch = settings.retrieval.encode_batch_size
    single_cache = EmbeddingCache(work / "single.sqlite", encoder.dim)
    started = time.perf_counter()
    single = encode_cached(encoder, texts, single_cache, batch_size=batch)
    single_s = time.perf_counter() - started
    dask_cache = EmbeddingCache(work / "dask.sqlite", encoder.dim)
    workers = len(client.scheduler_info()["workers"])
    started = time.perf_counter()
    fill_cache_on_dask(client, encoder, texts, dask_cache, work / "shards", settings.paths.cache, 2 * workers, batch)
    on_dask, _ = dask_cache.get_many(texts)
    dask_s = time.perf_counter() - started
    return {"catalog": str(catalog), "products": len(texts), "encoder": encoder.name,
            "single_process_s": round(single_s, 1), "dask_s": round(dask_s, 1),
            "single_products_per_s": round(len(texts) / single_s), "dask_products_per_s": round(len(texts) / dask_s),
            "max_abs_diff": float(np.abs(single - on_dask).max())}


def lambdamart(client, queries: int) -> dict:  # type: ignore[no-untyped-def]
    train, dev, held_out = split_groups(synthetic_ranking_data(queries, seed=0), 0.6, 0.2)
    config = LambdaMARTConfig(max_grade=4)
    out: dict[str, object] = {"queries": {"train": len(train.groups), "dev": len(dev.groups),
                                          "held_out": len(held_out.groups)}, "train_rows": len(train.labels)}
    for name, where in (("single_process", None), ("dask", client)):
        started = time.perf_counter()
        model = LambdaMART.fit(train, dev, config, client=where)
        seconds = time.perf_counter() - started
        out[name] = {"s": round(seconds, 1), "best_iteration": model.history["best_iteration"],
                     "rounds_trained": model.history["rounds"],
                     "held_out_ndcg@10": round(ndcg(held_out.groups, held_out.labels, model.predict(held_out.features)), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=None, help="CSV/Parquet/JSONL catalog (default: 5,000 "
                        "generated demo products)")
    parser.add_argument("--home", type=Path, default=None, help="artifact home holding the ONNX export (default: "
                        "$SHOPRANK_HOME or ./artifacts)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--queries", type=int, default=1000, help="SIMULATED ranking queries for LambdaMART")
    args = parser.parse_args()
    settings = Settings(progress=False, **({"home": args.home} if args.home else {}))
    with tempfile.TemporaryDirectory(prefix="dask-bench-") as tmp:
        work = Path(tmp)
        catalog = args.catalog or write_demo(work / "demo", n_products=5000, n_queries=10) / "products.csv"
        started = time.perf_counter()
        with dask_client(ComputeSettings(scheduler="local", workers=args.workers)) as client:
            start_s = time.perf_counter() - started
            result = {"hardware": hardware(), "command": " ".join(
                [*(f"{k}={os.environ[k]}" for k in ("HF_HUB_OFFLINE",) if k in os.environ), Path(sys.executable).name,
                 *sys.argv]), "dask_workers": args.workers, "cluster_start_s": round(start_s, 1),
                "encoding": encoding(settings, catalog, client, work), "lambdamart": lambdamart(client, args.queries)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    # LightGBM's training sockets listen on every interface: run in a namespace with loopback only
    if (wrapped := loopback_command([sys.executable, *sys.argv])) is not None:
        os.execvpe(wrapped[0], wrapped, {**os.environ, LOOPBACK_ENV: "1"})
    main()
