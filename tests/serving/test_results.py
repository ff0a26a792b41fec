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
