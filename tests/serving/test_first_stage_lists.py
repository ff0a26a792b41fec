"""The first stage's lists kept between searches: in the engine, and in the shared score store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from ranking.score_backends import SqliteScoreStore
from retrieval.index import ProductIndex
from retrieval.memo import MemoizedRetriever
from serving.engine import assemble
from serving.results import SharedLists, decode_list, encode_list, list_key
from tests.retrieval.test_index import build, catalog

ROWS = [("a", "cordless drill"), ("b", "interior paint"), ("c", "garden hose"), ("d", "drill bits"),
        ("e", "paint roller")]


def test_a_list_survives_the_store_bit_for_bit(tmp_path: Path, settings: Settings) -> None:
    index, encoder, _ = build(tmp_path, settings, ROWS)
    engine = assemble(index, encoder, settings)
    try:
        listed = engine.hybrid.search("drill", 4)
        assert np.isnan(listed.scores["bm25"]).any()  # a product BM25 did not match: NaN and rank 0 survive
        ids = lambda docs: [index.product_id(d) for d in docs.tolist()]  # noqa: E731
        back = decode_list(encode_list(listed), ids)
        assert back.product_ids == listed.product_ids and back.stage == listed.stage
        assert np.array_equal(back.docs, listed.docs) and back.docs.dtype == listed.docs.dtype
        for table in ("scores", "ranks"):
            mine, theirs = getattr(listed, table), getattr(back, table)
            assert list(mine) == list(theirs)
            assert all(np.array_equal(mine[n], theirs[n], equal_nan=True) and mine[n].dtype == theirs[n].dtype
                       for n in mine)

        path = tmp_path / "scores.sqlite"
        writer, reader = SqliteScoreStore(path), SqliteScoreStore(path)  # two server processes
        key = ("scope", "drill", 4)
        SharedLists(writer, ids).put([(key, listed)])
        assert writer.flush(5)
        shared = SharedLists(reader, ids)
        found, missing = shared.get([key, ("scope", "drill", 5)])
        assert missing is None and found is not None and found.product_ids == listed.product_ids
        assert (shared.counts.hits, shared.counts.misses) == (1, 1)
        writer.put_many([(list_key(key), b"\x05\x00\x00\x00{}")])  # another release's value: searched again
        assert writer.flush(5)
        assert shared.get([key]) == [None]
        writer.close()
        reader.close()
    finally:
        engine.close()


def test_a_catalog_write_retrieves_again(tmp_path: Path, settings: Settings) -> None:
    index, encoder, cache = build(tmp_path, settings, ROWS)
    engine = assemble(index, encoder, settings)
    try:
        first = engine.pipeline("hybrid").first
        assert isinstance(first, MemoizedRetriever)
        before = engine.search("paint", 3, pipeline="hybrid").candidates.product_ids
        assert engine.search("paint", 3, pipeline="hybrid").candidates.product_ids == before
        assert (engine.caches.first_stage.hits, engine.caches.first_stage.misses) == (1, 1)
        assert "first_stage" in engine.cache_stats()

        index.upsert(catalog([("f", "paint sprayer paint")]), encoder, cache)
        after = engine.search("paint", 3, pipeline="hybrid").candidates.product_ids
        assert "f" in after and after != before  # not the list kept for the old catalog
        assert (engine.caches.first_stage.hits, engine.caches.first_stage.misses) == (1, 2)
        assert after == engine.hybrid.search("paint", 3).product_ids  # what the first stage itself returns
    finally:
        engine.close()


def test_the_keys_name_the_index_not_its_path(tmp_path: Path, settings: Settings,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The nightly job may open the home by a relative path and the server by an absolute one (and replicas
    on one Redis each by their own): they read the same lists and result pages."""
    index, encoder, _ = build(tmp_path, settings, ROWS)
    monkeypatch.chdir(tmp_path)
    relative = ProductIndex.load(Path("..") / tmp_path.name / "idx", settings.retrieval)
    engines = [assemble(index, encoder, settings), assemble(relative, encoder, settings)]
    try:
        scopes = [e.pipeline("hybrid").first.scope() for e in engines]  # type: ignore[attr-defined]
        assert index.path.is_absolute() and not relative.path.is_absolute() and scopes[0] == scopes[1]
        pages = [e.page_scope() for e in engines]  # shared result pages too
        assert pages[0] == pages[1] and str(tmp_path) not in pages[0] and index.manifest.catalog_hash in pages[0]
    finally:
        for engine in engines:
            engine.close()


def test_a_list_is_never_read_against_rows_numbered_anew(tmp_path: Path, settings: Settings) -> None:
    """A list holds row numbers: its key changes whenever they may name other products (a compaction, a rebuild
    with the rows in another order), even where the catalog and the row count come out the same."""
    index, encoder, cache = build(tmp_path, settings, ROWS)

    def scope(served: ProductIndex) -> str:
        engine = assemble(served, encoder, settings)
        try:
            return engine.pipeline("hybrid").first.scope()  # type: ignore[attr-defined]
        finally:
            engine.close()

    before = scope(index)
    index.delete(["b"])
    compacted = index.compact(encoder, cache)
    compacted.upsert(catalog([("b", "interior paint")]), encoder, cache)  # the same catalog, b now at row 4
    assert compacted.doc_of("b") == 4 and compacted.manifest.rows == 5
    assert scope(compacted) != before
    reordered = ProductIndex.build(index.path, catalog(ROWS[::-1]), encoder, settings.retrieval, cache,
                                   progress=False)
    assert reordered.doc_of("e") == 0 and scope(reordered) not in (before, scope(compacted))


def test_a_release_that_changes_what_a_list_holds_reads_other_keys(tmp_path: Path, settings: Settings,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The store keeps lists for ``score_store_ttl_days``, across an upgrade: a release whose lists differ for the
    same index and settings (another ``LIST_FORMAT``) reads other keys, for lists and result pages, so no process
    serves a list or a page the earlier release made."""
    import serving.engine
    from retrieval.hybrid import LIST_FORMAT

    index, encoder, _ = build(tmp_path, settings, ROWS)

    def scopes() -> tuple[str, str]:
        engine = assemble(index, encoder, settings)
        try:
            return engine.pipeline("hybrid").first.scope(), engine.page_scope()  # type: ignore[attr-defined]
        finally:
            engine.close()

    now = scopes()
    assert now == scopes()  # the same release: the same keys
    monkeypatch.setattr(serving.engine, "LIST_FORMAT", LIST_FORMAT - 1)
    earlier = scopes()
    assert earlier[0] != now[0] and earlier[1] != now[1]
