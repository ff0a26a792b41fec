"""Catalog encoding on a Dask cluster: partitions of texts encoded in parallel on the workers.

The driver splits the texts the embedding cache lacks into partitions and submits one
task per partition. Each worker loads the bi-encoder itself, once per process, from a
folder it can read (the bundled MiniLM or a registry model folder: the path is sent, not
the model), encodes its partition and writes the vectors as one ``.npy`` shard in a work
folder under the artifact home (``Home.encoding``). As tasks complete, the driver reads
each shard into the embedding cache; :meth:`retrieval.index.ProductIndex.build` then finds
every vector there and encodes nothing. A shard left by an interrupted run is reused.

Workers need ShopRank importable and the model folder, the ONNX export cache and the work
folder at the same paths (one machine, or a shared filesystem): see docs/batch_jobs.md.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.compute import dask_client, partition_count
from core.errors import InvalidInput
from core.settings import Settings
from retrieval.catalog import catalog_hash
from retrieval.embedding_cache import EmbeddingCache, VectorCache, per_model
from retrieval.encoder import Encoder, OnnxEncoder, TorchEncoder, resolve_catalog_precision
from retrieval.index import product_texts

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)


def encoder_spec(encoder: Encoder) -> tuple[Path, str]:
    """The model folder and backend a worker loads to encode as ``encoder`` does."""
    if isinstance(encoder, OnnxEncoder):
        return encoder.model_dir, "onnx"
    if isinstance(encoder, TorchEncoder):
        return encoder.model_dir, "torch"
    raise InvalidInput(f"encoder {encoder.name!r} is a {type(encoder).__name__}; Dask workers load only the "
                       "'onnx' or 'torch' bi-encoder from its model folder: unset compute.scheduler to encode "
                       "in this process")


@lru_cache(maxsize=2)
def _worker_encoder(model_dir: str, backend: str, onnx_cache: str, precision: str) -> Encoder:
    """The encoder of a worker process, loaded on its first partition and kept for the next ones;
    ``precision`` (retrieval.catalog_precision) resolved for the worker's own CPU."""
    if backend == "onnx":  # one thread per task: the worker's Dask threads are its parallelism
        return OnnxEncoder(Path(model_dir), Path(onnx_cache), threads=1,
                           bf16=resolve_catalog_precision(precision) == "bf16")
    return TorchEncoder(Path(model_dir))


def encode_shard(model_dir: str, backend: str, onnx_cache: str, texts: list[str], shard: str,
                 batch_size: int, precision: str = "fp32") -> tuple[int, float]:
    """A worker task: encode ``texts`` and save the vectors at ``shard``; returns (rows, seconds)."""
    started = time.perf_counter()
    vectors = _worker_encoder(model_dir, backend, onnx_cache, precision).encode(texts, batch_size=batch_size)
    tmp = Path(shard).with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(shard)  # a shard is whole or absent
    return len(texts), time.perf_counter() - started


def split(count: int, partitions: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of at most ``partitions`` contiguous, near-equal, non-empty parts of ``count`` rows."""
    if partitions < 1:
        raise InvalidInput(f"partitions={partitions}: pass a whole number >= 1")
    edges = np.linspace(0, count, min(partitions, count) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in pairwise(edges)]


def _shard_name(texts: Sequence[str]) -> str:
    digest = hashlib.sha1()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return f"{digest.hexdigest()[:20]}.npy"


def fill_cache_on_dask(client: Client, encoder: Encoder, texts: Sequence[str], cache: EmbeddingCache,
                       work: Path, onnx_cache: Path, partitions: int, batch_size: int = 32,
                       progress: bool = False, precision: str = "fp32") -> int:
    """Encode the texts missing from ``cache`` on the cluster and store their vectors in it.

    Args:
        client: A connected ``distributed.Client``.
        encoder: The driver's encoder; workers load the same model folder and backend.
        work: Folder for the shards (removed once every shard is in the cache).
        onnx_cache: The artifact home's cache folder holding the ONNX export.
        partitions: How many tasks the missing texts are split into.
        precision: ``retrieval.catalog_precision`` (fp32, bf16 or auto, which each worker resolves
            for its own CPU; the ONNX backend only).

    Returns:
        How many distinct texts were encoded.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    model_dir, backend = encoder_spec(encoder)
    _, found = cache.get_many(texts)
    missing = list(dict.fromkeys(t for t, hit in zip(texts, found) if not hit))
    if not missing:
        logger.info("all %d texts are in the embedding cache; nothing to encode on Dask", len(texts))
        return 0
    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    parts = {}
    for start, stop in split(len(missing), partitions):
        chunk = missing[start:stop]
        shard = work / _shard_name(chunk)
        if shard.is_file():  # written by an interrupted run
            cache.put_many(chunk, _read_shard(shard, len(chunk), encoder.dim))
            continue
        future = client.submit(encode_shard, str(model_dir), backend, str(onnx_cache), chunk, str(shard),
                               batch_size, precision, pure=False)
        parts[future] = (chunk, shard)
    logger.info("encoding %d texts in %d partitions on %d Dask workers (%d partitions reused)", len(missing),
                len(parts), len(client.scheduler_info()["workers"]), len(split(len(missing), partitions)) - len(parts))
    with tqdm(total=len(missing), disable=not progress, desc="encode (dask)", unit="text") as bar:
        bar.update(len(missing) - sum(len(c) for c, _ in parts.values()))
        for future in as_completed(parts):
            rows, seconds = future.result()
            chunk, shard = parts[future]
            cache.put_many(chunk, _read_shard(shard, len(chunk), encoder.dim))
            logger.debug("partition of %d rows encoded in %.1f s", rows, seconds)
            bar.update(rows)
    shutil.rmtree(work, ignore_errors=True)
    logger.info("encoded %d texts on Dask in %.1f s", len(missing), time.perf_counter() - started)
    return len(missing)


def _read_shard(shard: Path, rows: int, dim: int) -> np.ndarray:
    vectors = np.load(shard)
    if vectors.shape != (rows, dim):
        raise InvalidInput(f"shard {shard} holds vectors of shape {vectors.shape}, not ({rows}, {dim}): the worker "
                           "loaded another model; delete the shard and check the workers read the same model folder")
    return vectors


def encode_catalog(settings: Settings, products: pd.DataFrame, encoder: Encoder, cache: VectorCache) -> int:
    """Fill ``cache`` with the vectors of ``products`` on the cluster of ``settings.compute``
    (a local cluster is started and stopped here; two models joined: each model's own cache, on one
    cluster); returns how many texts were encoded."""
    models = per_model(encoder, cache)
    texts = product_texts(products)
    with dask_client(settings.compute) as client:
        if client is None:
            raise InvalidInput("compute.scheduler is not set: encode_catalog needs 'local' or 'tcp://HOST:PORT'")
        partitions = partition_count(settings.compute, len(client.scheduler_info()["workers"]))
        return sum(fill_cache_on_dask(client, model, texts, own,
                                      settings.paths.encoding(f"{model.fingerprint}-{catalog_hash(products)[:12]}"),
                                      settings.paths.cache, partitions, settings.retrieval.encode_batch_size,
                                      settings.progress, settings.retrieval.catalog_precision)
                   for model, own in models)
