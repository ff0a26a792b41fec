from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import InvalidInput
from core.settings import RetrievalSettings
from retrieval.dense import DenseIndex, choose_kind


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


SETTINGS = RetrievalSettings(pq_m=8, ivf_nlist=16, ivf_nprobe=16, hnsw_ef_search=64)


@pytest.mark.parametrize("kind", ["flat", "flat-fp16", "hnsw", "ivfpq"])
def test_search_finds_itself_and_skips_deleted_rows(tmp_path: Path, kind: str) -> None:
    vectors = unit_vectors(4000, 32)
    settings = SETTINGS.model_copy(update={"flat_scan": "fp16" if kind == "flat-fp16" else "f32"})
    kind = kind.split("-")[0]
    dense = DenseIndex.build(tmp_path, vectors, settings, kind=kind)
    top = [int(dense.search(vectors[i], 1).docs[0]) for i in range(0, 4000, 400)]
    assert top == list(range(0, 4000, 400))
    dense.remove([0, 400])
    for i in (0, 400):
        hits = dense.search(vectors[i], 5)
        assert i not in hits.docs and len(hits) == 5
    new = dense.add(vectors[:1])
    assert list(new) == [4000]
    assert dense.search(vectors[0], 1).docs[0] == 4000
    dense.save()
    again = DenseIndex.load(tmp_path, settings)
    assert again.kind == kind and again.search(vectors[0], 1).docs[0] == 4000
    assert 0 not in again.search(vectors[0], 10).docs
    np.testing.assert_allclose(again.score(vectors[5], [5, 6]), [1.0, float(vectors[5] @ vectors[6])], rtol=1e-5)


def test_hnsw_recall_against_exact(tmp_path: Path) -> None:
    vectors = unit_vectors(5000, 32, seed=1)
    queries = unit_vectors(50, 32, seed=2)
    exact = DenseIndex.build(tmp_path / "f", vectors, SETTINGS, kind="flat").batch_search(queries, 10)
    approx = DenseIndex.build(tmp_path / "h", vectors, SETTINGS, kind="hnsw").batch_search(queries, 10)
    recall = np.mean([len(set(a.docs) & set(e.docs)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9


def test_flat_is_exact_and_ordered(tmp_path: Path) -> None:
    vectors = unit_vectors(500, 16, seed=3)
    hits = DenseIndex.build(tmp_path, vectors, SETTINGS, kind="flat").search(vectors[7], 500)
    expected = np.argsort(-(vectors @ vectors[7]), kind="stable")
    assert hits.docs.tolist() == expected.tolist()
    np.testing.assert_allclose(hits.scores, (vectors @ vectors[7])[expected], rtol=1e-5)


def test_flat_fp16_scan_returns_the_exact_top_with_exact_scores(tmp_path: Path) -> None:
    vectors = unit_vectors(5000, 32, seed=4)
    queries = unit_vectors(20, 32, seed=5)
    exact = DenseIndex.build(tmp_path / "f", vectors, SETTINGS.model_copy(update={"flat_scan": "f32"}),
                             kind="flat").batch_search(queries, 100)
    half = DenseIndex.build(tmp_path / "h", vectors, SETTINGS.model_copy(update={"flat_scan": "fp16"}),
                            kind="flat").batch_search(queries, 100)
    for query, e, h in zip(queries, exact, half):
        assert set(h.docs.tolist()) == set(e.docs.tolist())  # the half-precision scan lost no row ...
        np.testing.assert_allclose(h.scores, vectors[h.docs] @ query, rtol=1e-6)  # ... scores are float32's
        assert (np.diff(h.scores) <= 0).all()


def test_auto_kind_and_ivfpq_limits(tmp_path: Path) -> None:
    assert choose_kind(10, RetrievalSettings()) == "flat"
    assert choose_kind(10**6, RetrievalSettings()) == "hnsw"
    assert choose_kind(10, RetrievalSettings(dense_index="ivfpq")) == "ivfpq"
    with pytest.raises(InvalidInput, match="ivfpq needs at least"):
        DenseIndex.build(tmp_path, unit_vectors(100, 32), SETTINGS, kind="ivfpq")
    with pytest.raises(InvalidInput, match="pq_m=7 does not divide"):
        DenseIndex.build(tmp_path, unit_vectors(5000, 32), RetrievalSettings(pq_m=7), kind="ivfpq")


@pytest.mark.parametrize("kind", ["flat", "flat-fp16", "hnsw"])
def test_a_filtered_search_returns_the_best_of_the_allowed_rows(tmp_path: Path, kind: str) -> None:
    vectors = unit_vectors(3000, 32, seed=6)
    queries = unit_vectors(10, 32, seed=7)
    settings = SETTINGS.model_copy(update={"flat_scan": "fp16" if kind == "flat-fp16" else "f32"})
    dense = DenseIndex.build(tmp_path, vectors, settings, kind=kind.split("-")[0])
    dense.remove([7])
    allow = np.zeros(3000, dtype=bool)
    allow[::7] = True  # 429 rows, one of them deleted
    allowed = np.flatnonzero(allow & dense.live)
    overlap = []
    for query, hits in zip(queries, dense.batch_search(queries, 20, allow)):
        exact = allowed[np.argsort(-(vectors[allowed] @ query), kind="stable")[:20]]
        assert len(hits) == 20 and set(hits.docs.tolist()) <= set(allowed.tolist())
        if kind != "hnsw":
            assert hits.docs.tolist() == exact.tolist()
        overlap.append(len(set(hits.docs.tolist()) & set(exact.tolist())) / 20)
    assert np.mean(overlap) >= 0.9
    assert not len(dense.search(queries[0], 10, np.zeros(3000, dtype=bool)))
    short = dense.search(queries[0], 3000, allow[:1000])  # rows past the filter's end are not in it
    assert set(short.docs.tolist()) <= set(allowed[allowed < 1000].tolist())
    if kind != "hnsw":  # exact: every one of them
        assert set(short.docs.tolist()) == set(allowed[allowed < 1000].tolist())


@pytest.mark.parametrize(("kind", "block"), [("hnsw", 32_768), ("ivfpq", 32_768), ("hnsw", 16)])
def test_a_filter_keeping_rows_far_from_the_query_still_returns_k_of_them(tmp_path: Path, kind: str, block: int,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph walk (or the probed IVF lists) near the query meets none of the allowed rows: those are
    scored exactly instead, a block of rows at a time, so the search returns the best k of them, not fewer."""
    monkeypatch.setattr("retrieval.dense.EXACT_BLOCK", block)  # 16: the 49 rows in four blocks
    rng = np.random.default_rng(0)
    n, dim = 12_000, 32
    toward = np.eye(dim, dtype=np.float32)[0] * 5  # two clusters: the query's, and the filter's opposite it
    vectors = np.vstack([rng.normal(size=(n // 2, dim)) + toward, rng.normal(size=(n // 2, dim)) - toward])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    settings = SETTINGS.model_copy(update={"ivf_nlist": 64, "ivf_nprobe": 2})  # the lists near the query only
    dense = DenseIndex.build(tmp_path, vectors, settings, kind=kind)
    allow = np.zeros(n, dtype=bool)
    allow[n // 2 : n // 2 + 50] = True
    dense.remove([n // 2])  # one allowed row deleted: 49 left
    allowed = np.flatnonzero(allow & dense.live)
    hits = dense.search(vectors[0], 20, allow)
    exact = allowed[np.argsort(-(vectors[allowed] @ vectors[0]), kind="stable")[:20]]
    assert hits.docs.tolist() == exact.tolist()
    np.testing.assert_allclose(hits.scores, vectors[exact] @ vectors[0], rtol=1e-5)
    assert sorted(dense.search(vectors[0], 100, allow).docs.tolist()) == allowed.tolist()  # all 49, no more



@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_an_index_reads_its_own_vectors_after_its_folder_is_swapped(tmp_path: Path, kind: str) -> None:
    """A server's index, its folder swapped by another process (an artifact pull, a rebuild) before its first
    read of the exact vectors: before, the read went by path and took the new index's rows (an hnsw index's
    recommendation shelf answered with another catalog's products, or failed: mmap length beyond the file)."""
    import shutil

    old, new = unit_vectors(300, 8, seed=1), unit_vectors(200, 8, seed=2)
    folder = tmp_path / "fp"
    DenseIndex.build(folder, old, SETTINGS, kind=kind).save()
    served = DenseIndex.load(folder, SETTINGS)
    DenseIndex.build(tmp_path / "fp.building", new, SETTINGS, kind=kind).save()
    folder.rename(tmp_path / "fp.old")  # the swap, as core.files.replace_folder makes it
    (tmp_path / "fp.building").rename(folder)
    shutil.rmtree(tmp_path / "fp.old")
    np.testing.assert_array_equal(served.vectors, old)
    np.testing.assert_array_equal(DenseIndex.load(folder, SETTINGS).vectors, new)
