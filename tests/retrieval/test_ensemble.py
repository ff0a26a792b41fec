"""Two bi-encoders as one dense side (EnsembleEncoder): the score each query gives a product, and each model's
own embedding cache through builds, weights, upserts and compaction. Hashing encoders (no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.settings import Settings
from retrieval.embedding_cache import EmbeddingCache, JoinedCache, encode_cached
from retrieval.encoder import EnsembleEncoder, parts_of
from retrieval.hybrid import BM25Retriever, DenseRetriever, HybridRetriever
from retrieval.index import ProductIndex, product_texts
from tests.fakes import HashingEncoder
from tests.retrieval.test_index import catalog

ROWS = [("A", "cordless drill 18 volt"), ("B", "drill bit set"), ("C", "copper pipe 1/2 in"),
        ("D", "led flood light"), ("E", "garden hose 50 ft"), ("F", "hammer drill kit")]


def models() -> tuple[HashingEncoder, HashingEncoder]:
    first, second = HashingEncoder(64), HashingEncoder(16)  # 16 slots: other words collide, other cosines
    second.fingerprint = "hashingtest00002"
    return first, second


def searched_vectors(index: ProductIndex) -> list[np.ndarray]:
    """The query vectors each later dense search of ``index`` is given, in order."""
    seen: list[np.ndarray] = []
    search = index.dense.batch_search

    def watched(vectors: np.ndarray, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(vectors)
        return search(vectors, *args, **kwargs)

    index.dense.batch_search = watched  # type: ignore[method-assign]
    return seen


def caches(folder: Path, first: HashingEncoder, second: HashingEncoder) -> JoinedCache:
    return JoinedCache([EmbeddingCache(folder / f"{m.fingerprint}.sqlite", m.dim) for m in (first, second)])


def test_a_query_scores_a_product_by_the_first_cosine_plus_the_weighted_second(tmp_path: Path,
                                                                                settings: Settings) -> None:
    first, second = models()
    ensemble = EnsembleEncoder(first, second, 0.5)
    assert (ensemble.dim, ensemble.fingerprint, parts_of(ensemble)) == (80, "hashingtest00001+hashingtest00002",
                                                                        (first, second))
    products = catalog(ROWS)
    index = ProductIndex.build(tmp_path / "index", products, ensemble, settings.retrieval,
                               caches(tmp_path, first, second), progress=False)
    dense = DenseRetriever(index, ensemble)
    query, docs = "drill hose", list(range(len(ROWS)))
    texts = product_texts(products)
    expected = (first.encode(texts) @ first.encode([query])[0]
                + 0.5 * (second.encode(texts) @ second.encode([query])[0]))
    ranked = dense.rank(query, docs)
    np.testing.assert_allclose(ranked.scores["dense"], expected[ranked.docs], atol=1e-5)
    # the search orders the catalog by that score; the hybrid's dense column is the same
    found = dense.search(query, len(ROWS))
    np.testing.assert_allclose(found.scores["dense"], np.sort(expected)[::-1], atol=1e-5)
    fused = HybridRetriever(BM25Retriever(index), dense, depth=len(ROWS)).search(query, len(ROWS))
    np.testing.assert_allclose(fused.scores["dense"], expected[fused.docs], atol=1e-5)
    # another weight: another order from the same index (the catalog's vectors do not carry it)
    heavy = DenseRetriever(index, EnsembleEncoder(first, second, 4.0)).rank(query, docs)
    np.testing.assert_allclose(heavy.scores["dense"], (expected + 3.5 * (second.encode(texts)
                                                                         @ second.encode([query])[0]))[heavy.docs],
                               atol=1e-5)


def test_each_model_keeps_its_vectors_in_its_own_cache(tmp_path: Path, settings: Settings) -> None:
    first, second = models()
    products = catalog(ROWS)
    index = ProductIndex.build(tmp_path / "index", products, EnsembleEncoder(first, second, 0.5),
                               settings.retrieval, caches(tmp_path, first, second), progress=False)
    texts = product_texts(products)
    assert len(first.encoded) == len(second.encoded) == len(ROWS)
    for model in (first, second):  # each file holds that model's vectors, as its own index would read them
        own = EmbeddingCache(tmp_path / f"{model.fingerprint}.sqlite", model.dim)
        vectors, found = own.get_many(texts)
        assert found.all()
        np.testing.assert_allclose(vectors, model.encode(texts), atol=1e-6)
        model.encoded.clear()
    # an upsert encodes its new text once per model; a compaction and another weight's build encode nothing
    added = pd.DataFrame({"product_id": ["G"], "title": ["copper pipe cutter"], "description": [""]})
    index.upsert(added, EnsembleEncoder(first, second, 0.5), caches(tmp_path, first, second))
    assert first.encoded == second.encoded == ["copper pipe cutter"]
    index.delete(["A", "B"])
    first.encoded.clear(), second.encoded.clear()
    index = index.compact(EnsembleEncoder(first, second, 0.5), caches(tmp_path, first, second))
    ProductIndex.build(tmp_path / "other", index.live_products(), EnsembleEncoder(first, second, 2.0),
                       settings.retrieval, caches(tmp_path, first, second), progress=False)
    assert first.encoded == second.encoded == []

def test_a_model_joined_to_an_index_model_encodes_only_what_its_own_cache_lacks(tmp_path: Path,
                                                                                 settings: Settings) -> None:
    first, second = models()
    products = catalog(ROWS)
    own = EmbeddingCache(tmp_path / f"{first.fingerprint}.sqlite", first.dim)
    ProductIndex.build(tmp_path / "alone", products, first, settings.retrieval, own, progress=False)
    first.encoded.clear()
    joined = ProductIndex.build(tmp_path / "joined", products, EnsembleEncoder(first, second, 0.5),
                                settings.retrieval, caches(tmp_path, first, second), progress=False)
    # before: a text counted as cached only where both caches held it, and both models encoded it again
    assert first.encoded == [] and len(second.encoded) == len(ROWS)
    np.testing.assert_allclose(np.asarray(joined.dense.vectors)[:, : first.dim], first.encode(product_texts(products)),
                               atol=1e-6)


@pytest.mark.parametrize("weight", [0.5, 2.0])
def test_dense_feedback_weighs_the_second_models_half_of_the_feedback_as_the_query(
        tmp_path: Path, settings: Settings, weight: float) -> None:
    first, second = models()
    ensemble = EnsembleEncoder(first, second, weight)
    index = ProductIndex.build(tmp_path / "index", catalog(ROWS), ensemble, settings.retrieval,
                               caches(tmp_path, first, second), progress=False)
    dense = DenseRetriever(index, ensemble)
    hybrid = HybridRetriever(BM25Retriever(index), dense, depth=len(ROWS), feedback_docs=2, feedback_weight=1.0)
    search = index.dense.batch_search
    seen = searched_vectors(index)
    hybrid.search("drill", 3)
    query, moved = seen[0][0], seen[1][0]
    top = hybrid._fuse(index.bm25.search("drill", len(ROWS)), search(seen[0], len(ROWS))[0], 2).docs
    centre = np.asarray(index.dense.vectors[np.sort(top)]).mean(axis=0) * dense.scale
    np.testing.assert_allclose(moved, (query + centre) / np.linalg.norm(query + centre), atol=1e-5)


def test_one_model_given_two_models_cache_is_refused(tmp_path: Path) -> None:
    first, second = models()
    with pytest.raises(ValueError, match="zip"):  # not the first model's columns alone, an index too narrow
        encode_cached(first, ["drill"], caches(tmp_path, first, second))
