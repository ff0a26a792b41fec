"""Catalog encoding on a local Dask cluster gives the vectors of the in-process path, in product order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInput
from core.settings import Settings
from retrieval.dask_encoding import fill_cache_on_dask, split
from retrieval.embedding_cache import EmbeddingCache, encode_cached
from retrieval.encoder import EnsembleEncoder, OnnxEncoder
from retrieval.index import product_texts
from tests.fakes import HashingEncoder
from tests.helpers import needs_bf16_path
from tests.retrieval.test_encoder import tiny_model


@pytest.fixture(scope="module")
def reference(real_encoder, demo_products: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The in-process path's vectors of the demo catalog, from an empty cache."""
    cache = EmbeddingCache(tmp_path_factory.mktemp("reference") / "emb.sqlite", real_encoder.dim)
    return encode_cached(real_encoder, product_texts(demo_products), cache, batch_size=32)


def test_split_covers_every_row_once() -> None:
    assert split(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert split(2, 5) == [(0, 1), (1, 2)]
    with pytest.raises(InvalidInput, match="partitions=0"):
        split(10, 0)


def test_workers_fill_the_cache_with_the_in_process_vectors(dask_local_client, real_encoder, settings: Settings,  # type: ignore[no-untyped-def]
                                                            demo_products: pd.DataFrame, reference: np.ndarray,
                                                            tmp_path: Path) -> None:
    texts = product_texts(demo_products)
    cache = EmbeddingCache(tmp_path / "emb.sqlite", real_encoder.dim)
    work = tmp_path / "shards"
    encoded = fill_cache_on_dask(dask_local_client, real_encoder, texts, cache, work, settings.paths.cache,
                                 partitions=5)
    assert encoded == len(set(texts))
    vectors, found = cache.get_many(texts)
    assert found.all()
    assert np.allclose(vectors, reference, atol=1e-5)
    assert not work.exists()  # shards are removed once in the cache
    assert fill_cache_on_dask(dask_local_client, real_encoder, texts, cache, work, settings.paths.cache, 5) == 0


@needs_bf16_path
def test_workers_encode_in_bf16_when_asked(dask_local_client, real_encoder, settings: Settings,  # type: ignore[no-untyped-def]
                                          demo_products: pd.DataFrame, reference: np.ndarray, tmp_path: Path) -> None:
    texts = product_texts(demo_products)[:64]
    cache = EmbeddingCache(tmp_path / "emb.sqlite", real_encoder.dim)
    assert fill_cache_on_dask(dask_local_client, real_encoder, texts, cache, tmp_path / "shards",
                              settings.paths.cache, partitions=2, precision="bf16") == len(set(texts))
    vectors, found = cache.get_many(texts)
    assert found.all()
    cosine = (vectors * reference[:64]).sum(axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference[:64],
                                                                                            axis=1)
    assert cosine.min() > 0.999, f"bf16 vectors from the workers drift from fp32's: cosine {cosine.min():.5f}"
    assert not np.array_equal(vectors, reference[:64]), "the workers did not encode on the bf16 path"


def test_a_non_loadable_encoder_is_refused(dask_local_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    encoder = HashingEncoder()
    cache = EmbeddingCache(tmp_path / "emb.sqlite", encoder.dim)
    with pytest.raises(InvalidInput, match="HashingEncoder"):
        fill_cache_on_dask(dask_local_client, encoder, ["a drill"], cache, tmp_path / "w", tmp_path, 2)


def test_index_built_on_dask_matches_the_in_process_one(settings: Settings, real_encoder,  # type: ignore[no-untyped-def]
                                                        demo_products: pd.DataFrame, reference: np.ndarray,
                                                        tmp_path: Path) -> None:
    """`shoprank index` with compute.scheduler=local: its own cluster, a fresh embedding cache."""
    from serving import indexing

    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "onnx").symlink_to(settings.paths.cache / "onnx", target_is_directory=True)
    on_dask = Settings(home=home, progress=False, compute={"scheduler": "local", "workers": 2, "partitions": 3},
                       retrieval={"catalog_precision": "fp32"})  # as the reference: the same vectors
    index = indexing.build_index(on_dask, demo_products, tmp_path / "index", real_encoder)
    ids = [index.product_id(row) for row in range(len(demo_products))]
    assert ids == demo_products["product_id"].tolist()
    assert np.allclose(np.asarray(index.dense.vectors), reference, atol=1e-5)
    assert not on_dask.paths.encoding("x").parent.exists() or not any(on_dask.paths.encoding("x").parent.iterdir())

    # a second model joined (retrieval.second_encoder): the workers encode it into its own cache, and MiniLM's
    # vectors come from the cache the build above filled
    second = OnnxEncoder(tiny_model(tmp_path / "second", "mpnet", "mean"), on_dask.paths.cache)
    joined = indexing.build_index(on_dask, demo_products, tmp_path / "joined",
                                  EnsembleEncoder(real_encoder, second, 1.0))
    vectors = np.asarray(joined.dense.vectors)
    assert np.allclose(vectors[:, : real_encoder.dim], reference, atol=1e-5)
    assert np.allclose(vectors[:, real_encoder.dim :], second.encode(product_texts(demo_products)), atol=1e-4)
