"""Result pages: the JSON codec and the shared tier's keys (fast; the engines sharing pages are in
tests/serving/test_warm_scores.py)."""

from __future__ import annotations

import numpy as np

from core.query import Analysis, Rewrite
from retrieval.types import Candidates
from serving.results import SearchResult, SharedResults, decode, encode


def page() -> SearchResult:
    candidates = Candidates(np.array([7, 3], dtype=np.int64), ["p7", "p3"], "ltr",
                            {"ltr": np.array([1.5, 0.25], dtype=np.float32),
                             "bm25": np.array([np.nan, 2.0], dtype=np.float32)},
                            {"ltr": np.array([1, 2], dtype=np.int32), "bm25": np.array([0, 1], dtype=np.int32)})
    analysis = Analysis("cordles drill", "cordless drill", ("cordless", "drill"),
                        (Rewrite("cordles", "cordless", "spelling"),), (), ("drill",), ())
    facets = {"counted": 120, "brand": [{"value": "Acme", "count": 2}],
              "price": {"min": 1.0, "max": 9.5, "products": 2}}
    return SearchResult(candidates, "full", 120, {"ltr": 0.004}, {"p3": ["pinned"]}, [], False, analysis, facets)


def test_a_page_survives_the_round_trip_exactly() -> None:
    original = page()
    back = decode(encode(original))
    c, b = original.candidates, back.candidates
    assert b.product_ids == c.product_ids and b.stage == c.stage and np.array_equal(b.docs, c.docs)
    for name in ("ltr", "bm25"):
        assert b.scores[name].dtype == c.scores[name].dtype and b.ranks[name].dtype == c.ranks[name].dtype
        np.testing.assert_array_equal(b.scores[name], c.scores[name])  # NaN stays NaN
        np.testing.assert_array_equal(b.ranks[name], c.ranks[name])
    assert (back.pipeline, back.total_candidates, back.notes, back.analysis) == ("full", 120, {"p3": ["pinned"]},
                                                                                original.analysis)
    assert back.timings == {} and back.degraded == [] and not back.cached
    assert back.facets == original.facets


def test_a_page_key_names_the_scope_the_versions_and_the_request() -> None:
    request = ("full", None, "drill", True, None, None, 10, 0)
    key = SharedResults.key("index\x1fcatalog-a\x1fsettings", {"reranker": "v1", "ltr": "v2"}, request)
    assert key.startswith("rp:")
    assert key == SharedResults.key("index\x1fcatalog-a\x1fsettings", {"ltr": "v2", "reranker": "v1"}, request)
    others = [SharedResults.key("index\x1fcatalog-b\x1fsettings", {"reranker": "v1", "ltr": "v2"}, request),
              SharedResults.key("index\x1fcatalog-a\x1fsettings", {"reranker": "v2", "ltr": "v2"}, request),
              SharedResults.key("index\x1fcatalog-a\x1fother", {"reranker": "v1", "ltr": "v2"}, request),
              SharedResults.key("index\x1fcatalog-a\x1fsettings", {"reranker": "v1", "ltr": "v2"},
                                request[:-2] + (20, 0))]
    assert len({key, *others}) == 5


class Pages:
    """A page store shared by two engines (the score store's page methods; unit test double)."""

    def __init__(self) -> None:
        self.pages: dict[str, bytes] = {}

    def get_page(self, key: str, max_age_s: float):  # type: ignore[no-untyped-def]
        found = self.pages.get(key)
        return (found, 0.0) if found is not None else None

    def put_page(self, key: str, payload: bytes) -> int:
        self.pages[key] = payload
        return 1


class Counts:
    def add(self, hits: int, misses: int) -> None:
        pass


def test_processes_share_pages_whatever_their_own_facts_builds(  # type: ignore[no-untyped-def]
        fake_index, settings) -> None:
    from serving.engine import assemble
    from tests.fakes import HashingEncoder

    store, encoder = Pages(), HashingEncoder()
    first, second = assemble(fake_index, encoder, settings), assemble(fake_index, encoder, settings)
    for engine in (first, second):
        engine.shared_results = SharedResults(store, 60, Counts())  # type: ignore[arg-type]
    first.facts.refresh()  # a periodic rebuild in one process: its own build number moves, the facts do not
    assert first.facts_version() != second.facts_version() and first.page_scope() == second.page_scope()
    first.search("drill", 5, pipeline="hybrid", use_cache=True)
    assert second.search("drill", 5, pipeline="hybrid", use_cache=True).cached  # ranked once, shared


def test_a_page_is_not_shared_with_another_build_or_other_facts(  # type: ignore[no-untyped-def]
        tmp_path, settings, demo_products) -> None:
    """Replicas on one store that serve an index of the same name: another build (its rows numbered otherwise)
    or other stock and prices (the catalog's, which the catalog hash leaves out) read other keys, so no page
    names rows of another build or shows a product another replica knows is out of stock."""
    from dataclasses import replace as copy

    from ranking.rules import RulesConfig
    from retrieval.embedding_cache import EmbeddingCache
    from retrieval.index import ProductIndex
    from serving.engine import assemble
    from tests.fakes import HashingEncoder

    store, encoder = Pages(), HashingEncoder()

    def replica(name: str, products):  # type: ignore[no-untyped-def]
        home = settings.model_copy(update={"home": tmp_path / name})
        home.paths.rules.parent.mkdir(parents=True, exist_ok=True)
        RulesConfig(out_of_stock="hide").save(home.paths.rules)
        index = ProductIndex.build(tmp_path / name / "shop" / "index", products, encoder, home.retrieval,
                                   EmbeddingCache(tmp_path / name / "cache.sqlite", encoder.dim), progress=False)
        engine = assemble(index, encoder, home)
        engine.shared_results = SharedResults(store, 60, Counts())  # type: ignore[arg-type]
        return engine

    first = replica("a", demo_products)
    shown = first.search("cordless drill", 5, use_cache=True).candidates.product_ids
    rebuilt = replica("b", demo_products)  # the same catalog built again: the same row numbers, another build
    assert rebuilt.index.key_name == first.index.key_name and rebuilt.page_scope() != first.page_scope()
    assert not rebuilt.search("cordless drill", 5, use_cache=True).cached
    restocked = demo_products.copy()
    restocked.loc[restocked["product_id"] == shown[0], ["in_stock", "quantity"]] = [False, 0]
    other = replica("c", restocked)
    other.index.manifest.build = first.index.manifest.build  # the same build but for the stock of one product
    assert other.index.manifest.catalog_hash == first.index.manifest.catalog_hash
    found = other.search("cordless drill", 5, use_cache=True)
    assert not found.cached and shown[0] not in found.candidates.product_ids
    assert copy(first, settings=settings.model_copy(update={"store": "outlet"})).page_scope() != first.page_scope()
    for engine in (first, rebuilt, other):
        engine.close()


def test_a_live_update_is_not_undone_by_a_shared_page_without_a_change_feed(  # type: ignore[no-untyped-def]
        fake_index, settings) -> None:
    """No change feed followed (``features.changes_poll_s`` 0): a product set out of stock here rebuilds this
    process's facts, and the page shared before the update names other facts, so it is not served again."""
    from ranking.rules import RulesConfig
    from serving.engine import assemble
    from tests.fakes import HashingEncoder

    class Reader:  # the online feature reader's part the facts read, following no change feed
        facts = {"in_stock": "product_attributes:in_stock"}
        changes, position = 0, None

        def __init__(self) -> None:
            self.stock: dict[str, float] = {}

        def cached_rows(self, ids: list[str]) -> list[dict[str, float]]:
            return [{"product_attributes:in_stock": self.stock[p]} if p in self.stock else {} for p in ids]

        rows = cached_rows  # the rules' fresh read of the rows they show

    home = settings.model_copy(update={"home": fake_index.path.parent / "home"})
    home.paths.rules.parent.mkdir(parents=True, exist_ok=True)
    RulesConfig(out_of_stock="hide").save(home.paths.rules)
    engine = assemble(fake_index, HashingEncoder(), home)
    reader = Reader()
    engine.facts.reader = reader  # type: ignore[union-attr, assignment]
    engine.facts.refresh()  # type: ignore[union-attr]
    engine.shared_results = SharedResults(Pages(), 60, Counts())  # type: ignore[arg-type]
    try:
        shown = engine.search("cordless drill", 5, use_cache=True).candidates.product_ids
        reader.stock[shown[0]] = 0.0  # what update_facts writes and reads back, then the facts rebuilt
        engine.facts.refresh()  # type: ignore[union-attr]
        again = engine.search("cordless drill", 5, use_cache=True)
        assert not again.cached and shown[0] not in again.candidates.product_ids
        assert engine.search("cordless drill", 5, use_cache=True).cached  # the new page is cached in its turn
    finally:
        engine.close()
