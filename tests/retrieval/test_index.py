from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import Conflict, InvalidInput
from core.settings import Settings
from retrieval.embedding_cache import EmbeddingCache
from retrieval.hybrid import BM25Retriever, DenseRetriever, HybridRetriever
from retrieval.index import ProductIndex
from tests.fakes import HashingEncoder


def catalog(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"product_id": [r[0] for r in rows], "title": [r[1] for r in rows],
                         "description": [""] * len(rows), "price": [1.0] * len(rows)})


def build(tmp_path: Path, settings: Settings, rows: list[tuple[str, str]]) -> tuple[ProductIndex, HashingEncoder, EmbeddingCache]:
    encoder = HashingEncoder()
    cache = EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim)
    index = ProductIndex.build(tmp_path / "idx", catalog(rows), encoder, settings.retrieval, cache, progress=False)
    return index, encoder, cache


ROWS = [("a", "cordless drill"), ("b", "interior paint"), ("c", "garden hose"), ("d", "drill bits")]


def test_build_search_and_reload(tmp_path: Path, settings: Settings) -> None:
    index, encoder, _ = build(tmp_path, settings, ROWS)
    assert index.count == 4 and index.manifest.dense_kind == "flat"
    hybrid = HybridRetriever(BM25Retriever(index), DenseRetriever(index, encoder), depth=10)
    top = list(hybrid.search("drill", 3))
    assert {c.product_id for c in top[:2]} == {"a", "d"}
    assert set(top[0].scores) >= {"bm25", "dense", "rrf"} and top[0].ranks["rrf"] == 1
    again = ProductIndex.load(tmp_path / "idx", settings.retrieval)
    assert again.manifest == index.manifest and again.doc_of("c") == index.doc_of("c")


def test_embedding_cache_makes_reindexing_unchanged_products_free(tmp_path: Path, settings: Settings) -> None:
    index, encoder, cache = build(tmp_path, settings, ROWS)
    assert len(encoder.encoded) == 4
    ProductIndex.build(tmp_path / "idx2", catalog(ROWS), encoder, settings.retrieval, cache, progress=False)
    assert len(encoder.encoded) == 4  # nothing re-encoded
    ProductIndex.build(tmp_path / "idx3", catalog([*ROWS, ("e", "ceiling fan")]), encoder, settings.retrieval,
                       cache, progress=False)
    assert encoder.encoded[4:] == ["ceiling fan"]


def test_upsert_updates_in_place_and_delete(tmp_path: Path, settings: Settings) -> None:
    index, encoder, cache = build(tmp_path, settings, ROWS)
    before = index.manifest.catalog_hash
    changes = catalog([("a", "cordless drill"), ("b", "exterior stain"), ("z", "ceiling fan")])
    changes.loc[0, "price"] = 9.0
    report = index.upsert(changes, encoder, cache)
    assert (report.added, report.updated_text, report.updated_attributes, report.unchanged) == (1, 1, 1, 0)
    assert index.count == 5 and index.manifest.rows == 6 and index.manifest.catalog_hash != before
    bm25 = BM25Retriever(index)
    assert bm25.search("stain", 5).product_ids == ["b"]
    assert len(bm25.search("interior", 5)) == 0
    assert index.products.loc[index.doc_of("a"), "price"] == 9.0
    assert DenseRetriever(index, encoder).search("ceiling fan", 1).product_ids == ["z"]
    deleted, unknown = index.delete(["z", "nope"])
    assert (deleted, unknown) == (1, ["nope"])
    assert "z" not in DenseRetriever(index, encoder).search("ceiling fan", 10).product_ids
    reloaded = ProductIndex.load(tmp_path / "idx", settings.retrieval)
    assert reloaded.count == 4 and reloaded.doc_of("z") is None


def test_an_upsert_batch_naming_a_product_twice_is_refused_before_anything_is_written(
        tmp_path: Path, settings: Settings) -> None:
    index, encoder, cache = build(tmp_path, settings, ROWS)
    before = (index.generation, index.manifest.rows, len(encoder.encoded))
    batch = catalog([("a", "red hammer"), ("a", "blue wrench"), ("n", "ceiling fan"), ("n", "floor lamp"),
                     ("z", "garden rake")])
    with pytest.raises(InvalidInput, match=r"2 product id\(s\) more than once .*\['a', 'n'\].*once per batch"):
        index.upsert(batch, encoder, cache)
    assert (index.generation, index.manifest.rows, len(encoder.encoded)) == before
    assert index.live_product_ids() == ["a", "b", "c", "d"]
    assert index.delete(["a"]) == (1, []) and index.doc_of("a") is None


def test_compaction_drops_dead_rows_without_reencoding(tmp_path: Path, settings: Settings) -> None:
    index, encoder, cache = build(tmp_path, settings, ROWS)
    index.delete(["b", "c"])
    assert index.needs_compaction()
    calls = len(encoder.encoded)
    compacted = index.compact(encoder, cache)
    assert len(encoder.encoded) == calls
    assert compacted.manifest.rows == 2 and compacted.count == 2
    assert set(BM25Retriever(compacted).search("drill", 5).product_ids) == {"a", "d"}


def test_a_compacted_index_still_reads_as_written_since_it_was_created(tmp_path: Path, settings: Settings,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A server given a catalog compares it with an index never written since it was created (updated equals
    created); one that was written, then compacted, is served as it is."""
    from retrieval import index as module

    index, encoder, cache = build(tmp_path, settings, ROWS)
    created = index.manifest.created
    monkeypatch.setattr(module, "_now", lambda: "2999-01-01T00:00:00+00:00")  # the writes come later
    index.delete(["b", "c"])
    compacted = index.compact(encoder, cache)
    assert compacted.manifest.created == created  # before: the compaction's time, as if never written since
    assert compacted.manifest.updated == "2999-01-01T00:00:00+00:00"


def test_upsert_with_another_encoder_is_refused(tmp_path: Path, settings: Settings) -> None:
    index, _, cache = build(tmp_path, settings, ROWS)
    other = HashingEncoder()
    other.fingerprint = "different0000000"
    with pytest.raises(Conflict, match="was built with encoder"):
        index.upsert(catalog([("q", "new")]), other, cache)


def test_rank_gives_products_the_ranks_the_served_search_gives_them(fake_index: ProductIndex) -> None:
    """Rerank mode and callers with their own candidates: a product's rank columns are its ranks
    in the served runs (what LambdaMART's rank features and the adaptive depth see in a served
    list), not its place among the few given; one the served search misses comes last, rank 0."""
    hybrid = HybridRetriever(BM25Retriever(fake_index), DenseRetriever(fake_index, HashingEncoder()), depth=20)
    served = hybrid.search("cordless drill", 20)
    missed = next(d for d in range(len(fake_index.products)) if d not in set(served.docs.tolist()))
    given = [missed, *served.docs[[15, 2, 9]].tolist()]
    ranked = hybrid.rank("cordless drill", given)
    assert ranked.docs.tolist() == [*served.docs[[2, 9, 15]].tolist(), missed]
    for run in ("bm25", "dense", "rrf"):
        assert ranked.ranks[run][:3].tolist() == served.ranks[run][[2, 9, 15]].tolist()
    assert ranked.ranks["rrf"].tolist() == [3, 10, 16, 0]
    assert ranked.scores["rrf"][3] == 0.0 and ranked.scores["rrf"][0] == pytest.approx(served.scores["rrf"][2])
    assert not np.isnan(ranked.scores["bm25"]).any() and not np.isnan(ranked.scores["dense"]).any()  # exact for all
    assert len(hybrid.rank("cordless drill", [])) == 0


def test_a_deeper_hybrid_search_appends_rows_below_the_ones_a_shallower_one_returned(  # type: ignore[no-untyped-def]
        tmp_path: Path, settings: Settings, demo_products) -> None:
    """Past each source's ``depth`` the fused list of the ``depth``-deep runs comes first as it is, and the rows
    only deeper runs hold follow it: a page read deeper (past the depth, or where the rules hide rows) finds the
    rows above where a shallower read put them, with the same columns (what a re-ranking stage reads)."""
    retrieval = settings.retrieval.model_copy(update={"flat_scan": "f32"})  # exact: ties broken by row
    encoder = HashingEncoder()
    index = ProductIndex.build(tmp_path / "index", demo_products, encoder, retrieval,
                               EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim), progress=False)
    for feedback_docs in (0, 5):
        hybrid = HybridRetriever(BM25Retriever(index), DenseRetriever(index, encoder), depth=20,
                                 feedback_docs=feedback_docs)
        for query in ("cordless drill", "paint"):
            deepest = hybrid.search(query, 300)
            assert len(deepest) == 300 and len(set(deepest.docs.tolist())) == 300  # every product, once
            for k in (5, 20, 33, 80, 150):
                shallow = hybrid.search(query, k)
                assert shallow.docs.tolist() == deepest.docs[:k].tolist()
                for table in ("scores", "ranks"):
                    for name, column in getattr(shallow, table).items():
                        assert np.array_equal(column, getattr(deepest, table)[name][:k], equal_nan=True)
            assert deepest.ranks["bm25"].max() <= 20 and deepest.ranks["dense"].max() <= 20  # of the served runs


def test_rows_below_the_fused_list_have_the_fused_rank_rank_gives_them(  # type: ignore[no-untyped-def]
        tmp_path: Path, settings: Settings, demo_products) -> None:
    """A row listed below the fused list (only a deeper run found it) was not retrieved by the fusion: fused
    score and rank 0, as :meth:`HybridRetriever.rank` gives the same product (a rank of its place there would
    make it look fused, as high as any fused row, in LambdaMART's ``rank_rrf``)."""
    encoder = HashingEncoder()
    index = ProductIndex.build(tmp_path / "index", demo_products, encoder, settings.retrieval,
                               EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim), progress=False)
    hybrid = HybridRetriever(BM25Retriever(index), DenseRetriever(index, encoder), depth=20)
    listed = hybrid.search("cordless drill", 200)
    below = listed.scores["rrf"] == 0
    fused = int((~below).sum())
    assert 20 <= fused < 200 and not below[:fused].any()  # the fused list, then the rows only deeper runs hold
    assert listed.ranks["rrf"].tolist() == [*range(1, fused + 1), *[0] * (200 - fused)]
    ranked = hybrid.rank("cordless drill", listed.docs)
    place = {doc: i for i, doc in enumerate(ranked.docs.tolist())}
    same = ranked.take(np.array([place[doc] for doc in listed.docs.tolist()]))
    for name in ("bm25", "dense", "rrf"):
        assert np.array_equal(same.ranks[name], listed.ranks[name])
    assert np.array_equal(same.scores["rrf"], listed.scores["rrf"])


def test_dense_feedback_reaches_products_worded_like_the_first_results(tmp_path: Path, settings: Settings) -> None:
    rows = [("a", "cordless drill"), ("b", "cordless drill lithium battery pack"), ("c", "lithium battery pack"),
            ("d", "garden hose")]
    index, encoder, _ = build(tmp_path, settings, rows)
    bm25, dense = BM25Retriever(index), DenseRetriever(index, encoder)

    def dense_scores(feedback_docs: int) -> dict[str, float]:
        hybrid = HybridRetriever(bm25, dense, depth=10, feedback_docs=feedback_docs, feedback_weight=0.5)
        top = hybrid.search("cordless drill", 4)
        return dict(zip(top.product_ids, top.scores["dense"].tolist()))

    plain, moved = dense_scores(0), dense_scores(2)
    assert plain["c"] == pytest.approx(0.0) and plain["d"] == pytest.approx(0.0)  # no word of the query
    assert moved["c"] > 0.1 and moved["d"] == pytest.approx(0.0)  # the battery pack shares the top two's words
    assert moved["a"] > moved["c"] and moved["b"] > moved["c"]


def test_a_filtered_search_ranks_only_the_products_the_filter_keeps(fake_index: ProductIndex) -> None:
    """A filter's products are searched as if the catalog held only them: every source's run and
    ranks, and the fused list, are theirs (LambdaMART's rank features mean what they mean unfiltered)."""
    bm25, dense = BM25Retriever(fake_index), DenseRetriever(fake_index, HashingEncoder())
    hybrid = HybridRetriever(bm25, dense, depth=50)
    brushes = (fake_index.products["category"] == "Paint > Brushes").to_numpy()
    assert not brushes[hybrid.search("cordless drill", 20).docs].any()  # none among the unfiltered best
    for retriever in (bm25, dense, hybrid):
        found = retriever.search("cordless drill brush", 10, brushes)
        assert len(found) and brushes[found.docs].all()
    found = hybrid.search("cordless drill", 100, brushes)
    assert sorted(found.docs.tolist()) == np.flatnonzero(brushes).tolist()  # the dense run reaches them all
    assert found.ranks["rrf"].tolist() == list(range(1, len(found) + 1))
    for run in ("bm25", "dense"):
        ranks = found.ranks[run][found.ranks[run] > 0]
        assert sorted(ranks.tolist()) == list(range(1, len(ranks) + 1))
    assert not len(hybrid.search("cordless drill", 10, np.zeros(len(brushes), dtype=bool)))


def test_every_write_moves_the_generation_and_the_facts_follow_it(tmp_path: Path, settings: Settings) -> None:
    """Two attribute-only writes in one second leave the manifest's `updated` (one-second steps) and
    row count as they were; what is derived from the catalog in memory must still follow both."""
    from core.query import Filters
    from ranking.facts import CatalogFacts

    index, encoder, cache = build(tmp_path, settings, ROWS)
    facts = CatalogFacts(index, None)
    assert index.generation == 0 and facts.allowed(Filters(max_price=5)).sum() == 4
    for price in (9.0, 2.0):
        changes = catalog([("a", "cordless drill")])
        changes.loc[0, "price"] = price
        index.upsert(changes, encoder, cache)
        assert facts.table().price[index.doc_of("a")] == price  # read after each write
    assert index.generation == 2 and index.manifest.rows == 4
    assert facts.allowed(Filters(max_price=5)).sum() == 4
    index.delete(["b"])
    assert index.generation == 3


def test_words_of_every_script_are_searched_and_latin_accents_fold(tmp_path: Path, settings: Settings) -> None:
    from retrieval.vocabulary import tokenize

    assert tokenize("Größe Café naïve 2×4") == ["grosse", "cafe", "naive", "2", "x", "4"]
    assert tokenize("Дрель аккумуляторная ドリル") == ["дрель", "аккумуляторная", "ドリル"]
    # vowel signs and viramas are combining marks: they stay in their word (were split off as the word's end)
    assert tokenize("हिन्दी किताब, สวัสดีครับ") == ["हिन्दी", "किताब", "สวัสดีครับ"]
    from retrieval.suggest import ended
    from retrieval.vocabulary import is_word

    assert is_word("किताब") and is_word("drill") and not is_word("12v")  # "किताब".isalpha() is False: a mark
    assert not ended("कि") and ended("कि ")  # a vowel sign ends no word
    rows = [("a", "Café table"), ("b", "Дрель аккумуляторная"), ("c", "Größe 10 mm Schraube"), ("d", "garden hose"),
            ("e", "हिन्दी किताब"), ("f", "दीपक लैंप")]
    index, _, _ = build(tmp_path, settings, rows)
    bm25 = BM25Retriever(index)
    for query, found in (("cafe", "a"), ("CAFÉ", "a"), ("дрель", "b"), ("Дрель", "b"), ("grosse schraube", "c"),
                         ("größe", "c")):
        assert [c.product_id for c in bm25.search(index.analyzer.analyze(query).text, 2)][:1] == [found], query
    assert index.bm25.analyzer.analyze("हिन्दी किताब") == ["हिन्दी", "किताब"]  # BM25's own words likewise
    for query, found in (("हिन्दी", ["e"]), ("दीपक", ["f"]), ("लैंप", ["f"])):  # whole words, no shared fragments
        assert [c.product_id for c in bm25.search(index.analyzer.analyze(query).text, 5)] == found, query


def test_an_upsert_changes_only_the_columns_its_file_gives(tmp_path: Path, settings: Settings) -> None:
    from retrieval.catalog import read_catalog

    full = tmp_path / "full.csv"
    full.write_text("product_id,title,description,category,brand,price,in_stock\n"
                    "P1,Cordless drill,Strong 20V drill,Tools,DeWalt,99.5,yes\n"
                    "P2,Garden hose,50 ft,Garden,Flexi,30,no\n")
    encoder = HashingEncoder()
    cache = EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim)
    index = ProductIndex.build(tmp_path / "idx", read_catalog(full)[0], encoder, settings.retrieval, cache,
                               progress=False)
    feed = tmp_path / "prices.csv"  # a price feed: ids, titles and prices only; P2's title changes
    feed.write_text("product_id,title,price\nP1,Cordless drill,89\nP2,Garden hose 50 ft,25\n")
    report = index.upsert(read_catalog(feed)[0], encoder, cache)
    assert (report.updated_attributes, report.updated_text) == (1, 1)  # before: both read as text changes
    rows = index.live_products().set_index("product_id")
    assert rows.loc["P1", ["description", "category", "brand", "price", "in_stock"]].tolist() == [
        "Strong 20V drill", "Tools", "DeWalt", 89.0, True]  # before: description, category, brand and stock wiped
    assert rows.loc["P2", ["title", "description", "category", "price", "in_stock"]].tolist() == [
        "Garden hose 50 ft", "50 ft", "Garden", 25.0, False]
    titles = tmp_path / "titles.csv"  # a new product from a file without prices: no price, and prices stay numbers
    titles.write_text("product_id,title\nP3,Step ladder\n")
    with warnings.catch_warnings():  # before: pandas warned that an all-missing column of None will make it object
        warnings.simplefilter("error", FutureWarning)
        index.upsert(read_catalog(titles)[0], encoder, cache)
    assert index.products["price"].dtype == "float64"
    assert pd.isna(index.live_products().set_index("product_id").loc["P3", "price"])


def test_an_upsert_of_a_value_its_column_type_cannot_hold_widens_the_column(tmp_path: Path,
                                                                            settings: Settings) -> None:
    """A decimal price into whole ones is kept as written, through a save, as a rebuild from the updated catalog
    would read it (pandas warned on such a write, and will refuse it)."""
    from retrieval.catalog import read_catalog

    full = tmp_path / "full.csv"
    full.write_text("product_id,title,price\nP1,Cordless drill,99\nP2,Garden hose,30\n")
    encoder = HashingEncoder()
    cache = EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim)
    index = ProductIndex.build(tmp_path / "idx", read_catalog(full)[0], encoder, settings.retrieval, cache,
                               progress=False)
    feed = tmp_path / "feed.csv"
    feed.write_text("product_id,title,price\nP1,Cordless drill,89.99\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        report = index.upsert(read_catalog(feed)[0], encoder, cache)
    assert report.updated_attributes == 1
    index.save()
    rows = ProductIndex.load(tmp_path / "idx", settings.retrieval).live_products().set_index("product_id")
    assert rows.loc["P1", "price"] == 89.99 and rows.loc["P2", "price"] == 30


def test_a_filter_on_a_fact_only_deleted_products_had_is_refused(tmp_path: Path, settings: Settings) -> None:
    from core.errors import InvalidInput
    from core.query import Filters
    from ranking.facts import CatalogFacts

    frame = catalog(ROWS).assign(brand=["Bosch", None, None, None])
    encoder = HashingEncoder()
    index = ProductIndex.build(tmp_path / "idx", frame, encoder, settings.retrieval,
                               EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim), progress=False)
    facts = CatalogFacts(index, None)
    assert facts.allowed(Filters(brand=("Bosch",))) is not None
    index.delete(["a"])
    with pytest.raises(InvalidInput, match="no product of this catalog has a brand"):
        CatalogFacts(index, None).allowed(Filters(brand=("Bosch",)))  # before: an empty page


def bm25_files(index: ProductIndex) -> dict[str, tuple[int, int]]:
    """Each file of the index's BM25 folder: (modified time in ns, size)."""
    return {f.name: (f.stat().st_mtime_ns, f.stat().st_size) for f in (index.path / "bm25").iterdir()}


@pytest.mark.parametrize("incoming", [[("z", "ceiling fan remote"), ("b", "exterior stain")],
                                      [("b", "exterior stain")]], ids=["rows-added", "text-only"])
def test_a_write_killed_before_its_commit_leaves_the_index_as_it_was(tmp_path: Path, settings: Settings,
                                                                     caplog: pytest.LogCaptureFixture,
                                                                     incoming: list[tuple[str, str]]) -> None:
    """A process killed after an upsert appended its vectors and committed BM25 but before it saved: the next
    load serves the committed rows (vectors and BM25 rows past them are not read) and writes nothing to BM25;
    the next write puts BM25 back in line with the committed catalog and goes on from there. ``text-only``:
    the upsert changes a product's text and adds no product."""
    import subprocess
    import sys

    index, encoder, cache = build(tmp_path, settings, ROWS)
    root = Path(__file__).resolve().parents[2]
    killed = {"index": str(index.path), "settings": settings.retrieval.model_dump_json(),
              "cache": str(tmp_path / "child.sqlite"), "incoming": incoming}
    child = f"""
import os
from pathlib import Path
from core.settings import RetrievalSettings
from retrieval.embedding_cache import EmbeddingCache
from retrieval.index import ProductIndex
from tests.fakes import HashingEncoder
from tests.retrieval.test_index import catalog
killed = {killed!r}
index = ProductIndex.load(Path(killed["index"]), RetrievalSettings.model_validate_json(killed["settings"]))
ProductIndex._after_write = lambda self: os._exit(9)  # killed (kill -9) once BM25 and the vectors were written
encoder = HashingEncoder()
index.upsert(catalog(killed["incoming"]), encoder, EmbeddingCache(Path(killed["cache"]), encoder.dim))
"""
    done = subprocess.run([sys.executable, "-c", child], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                          timeout=120)
    assert done.returncode == 9
    before = bm25_files(index)
    with caplog.at_level("WARNING"):
        again = ProductIndex.load(index.path, settings.retrieval)  # before: "cannot reshape array"
    assert "did not finish" in caplog.text  # what was recovered is said
    assert bm25_files(again) == before  # a load never writes BM25 (another process may be writing it)
    assert again.count == 4 and again.live_product_ids() == ["a", "b", "c", "d"]
    bm25, dense = BM25Retriever(again), DenseRetriever(again, encoder)
    assert bm25.search("exterior stain remote", 5).product_ids == []  # before: rows that do not exist (a 500)
    assert sorted(dense.search("ceiling fan remote", 10).product_ids) == ["a", "b", "c", "d"]

    again.upsert(catalog([("y", "ceiling fan remote")]), encoder, cache)  # the next write puts BM25 in line
    reloaded = ProductIndex.load(index.path, settings.retrieval)
    assert reloaded.count == 5 and len(reloaded.dense.vectors) == len(reloaded.products) == 5  # vectors cut off
    bm25 = BM25Retriever(reloaded)
    assert bm25.search("interior paint", 5).product_ids == ["b"]  # b's text as committed
    assert bm25.search("exterior stain", 5).product_ids == []
    assert bm25.search("ceiling remote", 5).product_ids == ["y"]
    assert sorted(reloaded.bm25.docs().tolist()) == [0, 1, 2, 3, 4]
    assert DenseRetriever(reloaded, encoder).search("ceiling fan remote", 1).product_ids == ["y"]


def test_a_bm25_index_a_write_changed_but_did_not_commit_is_indexed_again_by_the_next_write(
        tmp_path: Path, settings: Settings) -> None:
    """BM25 holding another text for a committed row, as many rows as the catalog and none past it (a count
    cannot tell): the next write finds it marked as being written and indexes the committed text again."""
    from retrieval.bm25 import BM25Index

    index, encoder, cache = build(tmp_path, settings, ROWS)
    (index.path / "bm25.commit").write_text("writing")  # a write began ...
    BM25Index(index.path / "bm25").upsert([(1, "exterior stain", "")], replace=[1])  # ... and died here
    before = bm25_files(index)
    loaded = ProductIndex.load(index.path, settings.retrieval)
    assert bm25_files(loaded) == before and loaded.bm25.num_docs == 4

    loaded.delete(["c"])
    again = ProductIndex.load(index.path, settings.retrieval)
    assert BM25Retriever(again).search("interior paint", 5).product_ids == ["b"]
    assert BM25Retriever(again).search("exterior stain", 5).product_ids == []
    assert (index.path / "bm25.commit").read_text() == again.manifest.commit


def test_a_replica_loading_while_a_write_commits_serves_the_commit_and_leaves_bm25_to_the_writer(
        tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica reads the products of one commit; a writer (holding the lock) changes BM25 before the replica
    opens it and commits after, then lets the lock go. The replica reads the index again, and BM25 keeps the
    committed text (before: the replica put BM25 back to the products it had read, and the text the writer
    committed was never found)."""
    from retrieval.bm25 import BM25Index
    from retrieval.dense import DenseIndex
    from retrieval.index import write_lock

    index, encoder, cache = build(tmp_path, settings, ROWS)
    writer = ProductIndex.load(index.path, settings.retrieval)
    lock = write_lock(index.path)
    lock.__enter__()
    opened, loaded = BM25Index.__init__, DenseIndex.load.__func__
    steps: list[str] = []

    def opens_bm25(self: BM25Index, path: Path, *args: object) -> None:
        if not steps:  # the writer's upsert, up to its save
            steps.append("written")
            monkeypatch.setattr(writer, "save", lambda: None)
            writer.upsert(catalog([("b", "exterior stain")]), encoder, cache)
            monkeypatch.delattr(writer, "save")
        opened(self, path, *args)

    def loads_dense(cls: type[DenseIndex], path: Path, retrieval: object) -> DenseIndex:
        dense = loaded(cls, path, retrieval)
        if steps == ["written"]:  # the writer's save, then it lets the lock go
            steps.append("committed")
            writer.save()
            lock.__exit__(None, None, None)
        return dense

    monkeypatch.setattr(BM25Index, "__init__", opens_bm25)
    monkeypatch.setattr(DenseIndex, "load", classmethod(loads_dense))
    replica = ProductIndex.load(index.path, settings.retrieval)
    monkeypatch.undo()
    assert steps == ["written", "committed"]
    assert replica.manifest.commit == writer.manifest.commit and len(replica.products) == 5
    for served in (replica, ProductIndex.load(index.path, settings.retrieval)):
        assert BM25Retriever(served).search("exterior stain", 5).product_ids == ["b"]
        assert BM25Retriever(served).search("interior paint", 5).product_ids == []


def test_a_load_that_a_write_commits_in_the_middle_of_reads_the_index_again(
        tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole upsert lands between a load's read of the products and its read of BM25 and the vectors: the load
    reads the index again (before: the products of one commit, the live rows of the next, and an IndexError in
    the dense search); writes that keep landing make it give up with a clear error."""
    from core.errors import NotReady
    from retrieval.bm25 import BM25Index

    index, encoder, cache = build(tmp_path, settings, ROWS)
    writer = ProductIndex.load(index.path, settings.retrieval)
    opened = BM25Index.__init__
    writes = iter([("z", "ceiling fan remote")])

    def opens_bm25(self: BM25Index, path: Path, *args: object) -> None:
        row = next(writes, None)
        if row is not None:
            writer.upsert(catalog([row]), encoder, cache)
        opened(self, path, *args)

    monkeypatch.setattr(BM25Index, "__init__", opens_bm25)
    reader = ProductIndex.load(index.path, settings.retrieval)
    assert len(reader.products) == len(reader.dense.live) == reader.manifest.rows == 5
    assert DenseRetriever(reader, encoder).search("ceiling fan remote", 1).product_ids == ["z"]
    assert BM25Retriever(reader).search("ceiling fan remote", 5).product_ids == ["z"]

    writes = iter([(f"w{n}", f"wall plate {n}") for n in range(100)])  # a write in every read
    with pytest.raises(NotReady, match="changed or disagreed with itself in each of 5 reads"):
        ProductIndex.load(index.path, settings.retrieval)


def test_two_processes_finishing_one_commit_both_load(tmp_path: Path, settings: Settings,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A write committed but had not moved its files in; a load finds them waiting and, just then, the writer
    moves them all in and removes their folder: the load goes on (before: FileNotFoundError)."""
    from retrieval import index as module
    from retrieval.index import Manifest

    index, encoder, cache = build(tmp_path, settings, ROWS)
    finish = module._finish_commit
    monkeypatch.setattr(module, "_finish_commit", lambda *args, **kwargs: None)  # the manifest, not the moves
    index.upsert(catalog([("z", "ceiling fan remote")]), encoder, cache)
    monkeypatch.undo()
    is_dir, finished = Path.is_dir, []

    def the_writer_finishes_first(self: Path) -> bool:
        answer = is_dir(self)
        if answer and self.name.startswith(module.PENDING) and not finished:  # right after the load looked
            finished.append(self.name)
            finish(index.path, Manifest.read(index.path))
        return answer

    monkeypatch.setattr(Path, "is_dir", the_writer_finishes_first)
    again = ProductIndex.load(index.path, settings.retrieval)
    monkeypatch.undo()
    assert finished and again.count == 5 and not list(index.path.glob(module.PENDING + "*"))


def test_a_manifest_with_fields_a_later_release_added_is_read(tmp_path: Path, settings: Settings,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    import json

    index, _, _ = build(tmp_path, settings, ROWS)
    file = index.path / "manifest.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "shards": 4}))
    with caplog.at_level("DEBUG", logger="retrieval.index"):
        again = ProductIndex.load(index.path, settings.retrieval)  # before: TypeError
    assert again.count == 4 and "['shards']" in caplog.text


def test_a_write_killed_after_its_commit_is_finished_by_the_next_load(tmp_path: Path, settings: Settings,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest is the commit point: once it is written, a load moves in the files the write left waiting."""
    from retrieval import index as module

    index, encoder, cache = build(tmp_path, settings, ROWS)
    monkeypatch.setattr(module, "_finish_commit", lambda *args, **kwargs: None)  # dies right after the manifest
    index.upsert(catalog([("z", "ceiling fan remote")]), encoder, cache)
    monkeypatch.undo()
    assert len(list(index.path.glob("pending-*"))) == 1
    again = ProductIndex.load(index.path, settings.retrieval)
    assert again.count == 5 and BM25Retriever(again).search("remote", 5).product_ids == ["z"]
    assert not list(index.path.glob("pending-*"))


def test_appended_vectors_are_on_disk_before_the_manifest_commits_them(tmp_path: Path, settings: Settings,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An upsert appends its vectors in place, not in the folder of files its commit moves in: they are flushed
    to disk before the manifest counts them, and an index whose vectors file lost committed rows anyway (a disk
    that lied about its cache) is refused, naming the file and what to run."""
    from core.errors import NotReady

    index, encoder, cache = build(tmp_path, settings, ROWS)
    synced: list[int] = []  # the inodes of the files and folders flushed, in order
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd))[1])
    index.upsert(catalog([("z", "ceiling fan remote")]), encoder, cache)
    monkeypatch.undo()
    vectors, manifest = (index.path / "vectors.f32").stat().st_ino, (index.path / "manifest.json").stat().st_ino
    assert vectors in synced and synced.index(vectors) < synced.index(manifest)  # before: never flushed
    os.truncate(index.path / "vectors.f32", 4 * encoder.dim * 4)  # the appended row lost
    with pytest.raises(NotReady, match=r"vectors\.f32 holds the vectors of 4 of its 5 committed rows; rebuild it "
                                       r"with the command that built it \(`shoprank \[--store NAME\] index"):
        ProductIndex.load(index.path, settings.retrieval)  # before: ValueError, "cannot reshape array"


def test_an_index_that_lost_vectors_names_the_command_of_its_store_and_name(tmp_path: Path,
                                                                             settings: Settings) -> None:
    """The advice names what the home's layout says of the folder: a store's index is built with --store, one
    of another name with --name (before: `shoprank index --catalog FILE`, which builds the default store's)."""
    from core.errors import NotReady
    from core.paths import Home, rebuild_advice

    encoder = HashingEncoder()
    path = Home(tmp_path / "home", "acme").index("main", encoder.fingerprint)
    ProductIndex.build(path, catalog(ROWS), encoder, settings.retrieval, EmbeddingCache(tmp_path / "cache.sqlite",
                       encoder.dim), progress=False)
    os.truncate(path / "vectors.f32", 3 * encoder.dim * 4)
    with pytest.raises(NotReady, match=r"3 of its 4 committed rows; rebuild it with `shoprank --store acme index "
                                       r"--name main --catalog FILE`"):
        ProductIndex.load(path, settings.retrieval)
    default = Home(tmp_path / "home").index("default", encoder.fingerprint)
    assert rebuild_advice(default) == "rebuild it with `shoprank index --name default --catalog FILE`"
    evaluation = Home(tmp_path / "home").eval_index("0" * 64, "1" * 64, encoder.fingerprint)
    assert "evaluation dataset" in rebuild_advice(evaluation)
