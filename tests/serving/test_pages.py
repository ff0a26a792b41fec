"""The pages of one search: walked a page at a time, whatever depth each page reads, they are one list."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from core.query import Filters
from core.settings import Settings
from ranking.rules import RulesConfig
from retrieval.embedding_cache import EmbeddingCache
from retrieval.index import ProductIndex
from serving.engine import assemble
from tests.fakes import HashingEncoder


def test_pages_walked_one_at_a_time_are_one_list_past_every_read_depth(
        tmp_path: Path, settings: Settings, demo_products: pd.DataFrame) -> None:
    """Out-of-stock products are hidden, so pages read deeper than the first stage's depth, and past each
    source's ``retrieval.depth``: each page reads as deep as it needs, and a deeper read only appends rows
    below the ones a shallower read ranked (before, it fused deeper runs and moved them: repeats and gaps)."""
    retrieval = settings.retrieval.model_copy(update={"depth": 30, "flat_scan": "f32"})
    ranking = settings.ranking.model_copy(update={"first_stage_depth": 20, "rerank_depth": 20})
    home = settings.model_copy(update={"home": tmp_path, "retrieval": retrieval, "ranking": ranking})
    encoder = HashingEncoder()
    index = ProductIndex.build(tmp_path / "index", demo_products, encoder, retrieval,
                               EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim), progress=False)
    home.paths.rules.parent.mkdir(parents=True, exist_ok=True)
    RulesConfig(out_of_stock="hide").save(home.paths.rules)
    engine = assemble(index, encoder, home)
    try:
        stocked = set(demo_products.loc[demo_products["in_stock"].astype(bool), "product_id"])
        assert len(stocked) < len(demo_products)
        for query in ("cordless drill", "paint"):
            walked = [p for offset in range(0, 250, 10) for p in engine.search(query, 10, offset=offset).candidates
                      .product_ids]
            assert len(walked) == 250 and len(set(walked)) == 250 and set(walked) <= stocked
            assert walked == engine.search(query, 250).candidates.product_ids  # one page of them all, the same
            assert walked[95:145] == engine.search(query, 50, offset=95).candidates.product_ids
    finally:
        engine.close()


def test_pages_on_one_rung_of_read_depths_are_one_list_with_an_hnsw_index(
        tmp_path: Path, settings: Settings, demo_products: pd.DataFrame) -> None:
    """A graph search finds more of the nearest products the deeper it reads (its candidate list grows with the
    depth), so the rows past ``retrieval.depth`` come in another order at another read depth. The first stage
    reads them at a ladder of depths (``retrieval.depth`` times a power of two): every page whose read lands on
    one rung shows a part of one list (before, each page read its own depth: repeats and gaps)."""
    retrieval = settings.retrieval.model_copy(update={
        "depth": 30, "dense_index": "hnsw", "hnsw_m": 4, "hnsw_ef_construction": 8, "hnsw_ef_search": 8})  # rough
    ranking = settings.ranking.model_copy(update={"first_stage_depth": 20, "rerank_depth": 20})
    home = settings.model_copy(update={"home": tmp_path, "retrieval": retrieval, "ranking": ranking})
    encoder = HashingEncoder()
    index = ProductIndex.build(tmp_path / "index", demo_products, encoder, retrieval,
                               EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim), progress=False)
    assert index.dense.kind == "hnsw"
    engine = assemble(index, encoder, home)
    try:
        assert [engine.hybrid.read_depth(k) for k in (31, 60, 61, 120, 121, 9_000, 12_000)] == [
            60, 60, 120, 120, 240, 10_000, 12_000]  # at most MAX_FETCH, but never short of k
        for query in ("cordless drill", "paint", "led light bulb"):
            head = engine.search(query, 30).candidates.product_ids  # the fused list of the 30-deep runs
            rung = engine.search(query, 120).candidates.product_ids  # rows 61..120 all read 120 deep
            walked = [p for offset in range(0, 120, 10) for p in engine.search(query, 10, offset=offset).candidates
                      .product_ids]
            assert walked[:30] == head == rung[:30]
            assert walked[60:] == rung[60:] and len(set(rung)) == 120
            assert engine.search(query, 45, offset=70).candidates.product_ids == rung[70:115]
    finally:
        engine.close()


def test_a_pin_past_the_first_page_is_at_its_place_on_every_page_for_a_query_the_analyzer_corrects(
        tmp_path: Path, settings: Settings, demo_products: pd.DataFrame) -> None:
    """A rule reached only through a spelling correction: every page reads down to its farthest ``pin_at``
    place (before, the typed text found no rule, so pages read to their own depth and the pinned product moved
    with it: a product twice in the walk, another missing), and hidden rows above the place do not move it up."""
    from ranking.rules import QueryRule

    encoder = HashingEncoder()
    index = ProductIndex.build(tmp_path / "index", demo_products, encoder, settings.retrieval,
                               EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim), progress=False)
    home = settings.model_copy(update={"home": tmp_path})
    home.paths.rules.parent.mkdir(parents=True, exist_ok=True)
    plain = assemble(index, encoder, home)
    try:
        listed = plain.search("cordless drill", 200).candidates.product_ids
    finally:
        plain.close()
    pinned = listed[180]
    RulesConfig(out_of_stock="hide", hide=listed[10:15],
                queries={"cordless drill": QueryRule(pin_at={pinned: 150})}).save(home.paths.rules)
    engine = assemble(index, encoder, home)
    try:
        for query in ("cordless drill", "cordles drill"):
            one = engine.search(query, 220).candidates.product_ids
            assert one.index(pinned) == 149, query
            for k in (10, 13):
                walked = [p for offset in range(0, 220, k) for p in engine.search(query, k, offset=offset).candidates
                          .product_ids][:220]
                assert walked == one, (query, k)
    finally:
        engine.close()


class _SoldOutNow:
    """Product facts whose stock read now (what the rules read) says ``sold_out`` are out of stock, while the
    facts as last built (``known``: what the listing was made from) do not know it yet."""

    def __init__(self, facts, sold_out: set[str]) -> None:  # type: ignore[no-untyped-def]
        self.facts, self.sold_out = facts, sold_out

    def known(self, candidates):  # type: ignore[no-untyped-def]
        return self.facts.known(candidates)

    def __call__(self, candidates):  # type: ignore[no-untyped-def]
        read = self.facts(candidates)
        stock = np.where([p in self.sold_out for p in candidates.product_ids], 0.0, read.in_stock)
        return replace(read, in_stock=stock.astype(read.in_stock.dtype))


def test_listing_pages_are_one_list_when_the_rules_drop_products_sold_out_since_the_listing_was_built(
        tmp_path: Path, settings: Settings, demo_products: pd.DataFrame) -> None:
    """Two products in a listing's first rows sold out since the facts were last built: the rules (stock read
    now, ``out_of_stock: hide``) drop them. Every page is a slice of one list, the rules over the listing's first
    rows whatever the page: the pages are full, each product is on one of them, and the total counts what they
    show (before, each page ran the rules over a head as deep as it asked: pages came back short, the products
    past them were on no page, and the total counted the dropped ones)."""
    encoder = HashingEncoder()
    index = ProductIndex.build(tmp_path / "index", demo_products, encoder, settings.retrieval,
                               EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim), progress=False)
    home = settings.model_copy(update={"home": tmp_path})
    home.paths.rules.parent.mkdir(parents=True, exist_ok=True)
    RulesConfig(out_of_stock="hide").save(home.paths.rules)
    engine = assemble(index, encoder, home)
    try:
        listed = engine.browse(Filters(), 300).candidates.product_ids
        assert engine.rules is not None and engine.rules.depth == 100 and len(listed) > 150
        sold_out = set(listed[10:12])
        engine.rules = replace(engine.rules, facts=_SoldOutNow(engine.facts, sold_out))
        one = engine.browse(Filters(), 300)
        shown = one.candidates.product_ids
        assert set(shown) == set(listed) - sold_out
        for k in (10, 7):
            pages = [engine.browse(Filters(), k, offset) for offset in range(0, len(shown), k)]
            assert [p for page in pages for p in page.candidates.product_ids] == shown, k
            assert {page.total_candidates for page in pages} == {one.total_candidates} == {len(listed) - 2}
    finally:
        engine.close()
