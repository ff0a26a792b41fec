"""Product facts for filters and rules: the store's values over the catalog's, kept current."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from core.query import Filters
from ranking.facts import CatalogFacts
from retrieval.types import Candidates

PRODUCTS = pd.DataFrame({
    "product_id": ["a", "b", "c", "d"],
    "category": ["tools", "paint", None, "tools"],
    "brand": ["acme", "bolt", "acme", ""],
    "price": [10.0, None, 30.0, 40.0],
    "in_stock": [True, False, True, True],
})


class Reader:
    """The reads CatalogFacts makes of the online reader, over rows set by the test, and its count of
    live updates read (``changes``)."""

    facts = {"category": "category", "price": "price", "in_stock": "in_stock"}  # no brand in this store

    def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
        self.stored = rows
        self.fresh_reads = 0
        self.changes = 0
        self.position: str | None = "7"  # where it is in the live updates' change feed

    def cached_rows(self, product_ids: list[str]) -> list[dict[str, Any]]:
        return [dict(self.stored.get(p, {})) for p in product_ids]

    def rows(self, product_ids: list[str]) -> list[dict[str, Any]]:
        self.fresh_reads += 1
        return self.cached_rows(product_ids)

    def refresh_stale(self, product_ids: list[str]) -> int:
        return 0  # ``stored`` is what the store holds: nothing cached goes stale


def index(products: pd.DataFrame) -> SimpleNamespace:
    return SimpleNamespace(products=products, generation=0)


def candidates(docs: list[int]) -> Candidates:
    return Candidates(np.array(docs), [PRODUCTS["product_id"][d] for d in docs], "rrf",
                      {"rrf": np.ones(len(docs))}, {"rrf": np.arange(1, len(docs) + 1)})


def test_the_catalog_columns_alone() -> None:
    facts = CatalogFacts(index(PRODUCTS), None)  # type: ignore[arg-type]
    assert facts.allowed(Filters()) is None
    assert facts.allowed(Filters(category="tools")).tolist() == [True, False, False, True]
    assert facts.allowed(Filters(brand=["acme", "bolt"])).tolist() == [True, True, True, False]  # "" is no brand
    assert facts.allowed(Filters(min_price=5)).tolist() == [True, False, True, True]  # b has no price
    assert facts.allowed(Filters(in_stock=True, max_price=35)).tolist() == [True, False, True, False]
    mask = facts.allowed(Filters(category="tools"))
    assert mask is facts.allowed(Filters(category=("tools",))) and not mask.flags.writeable  # kept per filter
    assert facts(candidates([3, 1])).category.tolist() == ["tools", "paint"]


def test_the_store_values_win_where_it_has_them_and_follow_its_updates() -> None:
    reader = Reader({"c": {"category": "garden", "price": 12.0}, "b": {"in_stock": 1}})
    facts = CatalogFacts(index(PRODUCTS), reader, refresh_s=0.05)  # type: ignore[arg-type]
    table = facts.table()
    assert table.category.tolist() == ["tools", "paint", "garden", "tools"]
    assert table.price[2] == 12.0 and np.isnan(table.price[1]) and table.in_stock[1] == 1
    assert table.brand.tolist() == ["acme", "bolt", "acme", None]  # the store has no brand: the catalog's
    assert facts.allowed(Filters(category="garden", max_price=20)).tolist() == [False, False, True, False]
    reader.stored["a"] = {"category": "garden", "in_stock": 0}  # the store changes; the rules read it at once
    shown = facts(candidates([0, 2]))
    assert reader.fresh_reads == 1 and shown.in_stock.tolist() == [0.0, 1.0]
    assert shown.category.tolist() == ["tools", "garden"]  # categories follow within refresh_s
    time.sleep(0.06)
    facts.table()  # a search after refresh_s starts the re-read in the background
    deadline = time.monotonic() + 5
    while facts.allowed(Filters(category="garden")).tolist() != [True, False, True, False]:
        assert time.monotonic() < deadline, "the facts were not re-read"
        time.sleep(0.01)


def test_the_periodic_refresh_reads_the_stale_rows_no_search_touches_first() -> None:
    class StaleReader(Reader):
        """Its cache (``stored``) changes only when its stale rows are read again from the store (``latest``)."""

        def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
            super().__init__(rows)
            self.latest: dict[str, dict[str, Any]] = {}

        def refresh_stale(self, product_ids: list[str]) -> int:
            self.stored.update(self.latest)
            return len(self.latest)

    reader = StaleReader({"b": {"in_stock": 0}})
    facts = CatalogFacts(index(PRODUCTS), reader, refresh_s=0.05)  # type: ignore[arg-type]
    assert facts.allowed(Filters(in_stock=True)).tolist() == [True, False, True, True]  # no search reads b again
    reader.latest["b"] = {"in_stock": 1}  # back in stock in the store
    time.sleep(0.06)
    deadline = time.monotonic() + 5
    while facts.allowed(Filters(in_stock=True)).tolist() != [True] * 4:
        assert time.monotonic() < deadline, "the stale rows were not read again"
        time.sleep(0.01)


def test_a_live_update_reaches_the_filters_without_waiting_for_the_stale_rows_to_be_read() -> None:
    """Re-reading the stale rows of a large catalog takes seconds: the facts are built from the cache first."""
    import threading

    class SlowStale(Reader):
        def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
            super().__init__(rows)
            self.release = threading.Event()

        def refresh_stale(self, product_ids: list[str]) -> int:
            self.release.wait(5)  # the store's re-read, still under way
            return 0

    reader = SlowStale({"c": {"category": "garden", "price": 12.0}})
    facts = CatalogFacts(index(PRODUCTS), reader, refresh_s=3600)  # type: ignore[arg-type]
    try:
        assert facts.allowed(Filters(max_price=10)).tolist() == [True, False, False, False]
        reader.stored["c"] = {"category": "garden", "price": 8.0}
        reader.changes += 1
        facts.table()
        deadline = time.monotonic() + 2
        while facts.allowed(Filters(max_price=10)).tolist() != [True, False, True, False]:
            assert time.monotonic() < deadline, "the live update waited for the stale rows"
            time.sleep(0.01)
    finally:
        reader.release.set()


def test_a_live_update_read_by_the_reader_rebuilds_the_facts_before_refresh_s() -> None:
    reader = Reader({"c": {"category": "garden", "price": 12.0}})
    facts = CatalogFacts(index(PRODUCTS), reader, refresh_s=3600)  # type: ignore[arg-type]
    assert facts.allowed(Filters(max_price=10)).tolist() == [True, False, False, False]
    reader.stored["c"] = {"category": "garden", "price": 8.0}
    assert facts.allowed(Filters(max_price=10)).tolist() == [True, False, False, False]  # an hour to the re-read
    reader.changes += 1  # the reader read the changed products again (core.product_changes)
    facts.table()  # the next search starts the rebuild
    deadline = time.monotonic() + 5
    while facts.allowed(Filters(max_price=10)).tolist() != [True, False, True, False]:
        assert time.monotonic() < deadline, "the facts were not rebuilt"
        time.sleep(0.01)
    assert facts.position == "7"  # the feed position they hold: the key of pages shared between processes
    reader.position = "9"  # read before the rows went into a rebuild: the facts catch up to it too
    facts.table()
    while facts.position != "9":
        assert time.monotonic() < deadline, "the facts did not take the feed's position"
        time.sleep(0.01)


def test_an_index_write_rebuilds_the_facts_at_once() -> None:
    holder = index(PRODUCTS)
    facts = CatalogFacts(holder, None)  # type: ignore[arg-type]
    assert facts.allowed(Filters(category="garden")).tolist() == [False] * 4
    grown = pd.concat([PRODUCTS, pd.DataFrame({"product_id": ["e"], "category": ["garden"]})], ignore_index=True)
    holder.products, holder.generation = grown, 1  # as ProductIndex's writes do
    assert facts.allowed(Filters(category="garden")).tolist() == [False] * 4 + [True]


def test_a_price_the_store_keeps_as_float32_is_read_as_written() -> None:
    stored = float(np.float32(1795.24))  # what the online store gives back: 1795.239990234375
    reader = Reader({"a": {"price": stored}, "b": {"price": 12.5}})
    facts = CatalogFacts(index(PRODUCTS), reader, refresh_s=3600)  # type: ignore[arg-type]
    assert facts.table().price[0] == 1795.24 and facts.table().price[1] == 12.5
    assert facts.allowed(Filters(min_price=1795.24, max_price=1795.24)).tolist() == [True, False, False, False]
    assert facts(candidates([0])).price.tolist() == [1795.24]  # the rules stage's fresh read too


def test_a_filter_on_a_fact_no_product_has_is_refused_by_name() -> None:
    import pytest

    from core.errors import InvalidInput

    bare = PRODUCTS[["product_id", "category"]]  # no brand, no price
    facts = CatalogFacts(index(bare), None)  # type: ignore[arg-type]
    assert facts.allowed(Filters(category="tools")).tolist() == [True, False, False, True]
    for filters, name in ((Filters(brand="acme"), "brand"), (Filters(min_price=5), "min_price"),
                          (Filters(category="tools", max_price=5), "max_price")):
        with pytest.raises(InvalidInput, match=f"filter '{name}' cannot match"):
            facts.allowed(filters)
    assert facts.allowed(Filters(in_stock=True)).all()  # stock unknown counts as in stock: no error


def test_a_fact_the_store_supplies_is_filterable_before_its_rows_are_read() -> None:
    bare = PRODUCTS[["product_id", "category"]]  # no price column: the store supplies it
    reader = Reader({})  # nothing read yet (warming up, or the store down)
    facts = CatalogFacts(index(bare), reader)  # type: ignore[arg-type]
    assert facts.allowed(Filters(max_price=10)).tolist() == [False] * 4  # known, just not read: no 422


def test_a_rebuild_that_read_the_store_before_an_update_does_not_replace_the_facts_after_it() -> None:
    import threading

    class SlowReader(Reader):
        """Its first read of the store waits until the test lets it finish."""

        def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
            super().__init__(rows)
            self.first, self.go, self.reads = threading.Event(), threading.Event(), 0

        def cached_rows(self, product_ids: list[str]) -> list[dict[str, Any]]:
            rows = super().cached_rows(product_ids)
            self.reads += 1
            if self.reads == 2:  # the background rebuild (the first read built the facts in use)
                self.first.set()
                self.go.wait(5)
            return rows

    reader = SlowReader({"a": {"in_stock": 1}})
    facts = CatalogFacts(index(PRODUCTS), reader, refresh_s=3600)  # type: ignore[arg-type]
    assert facts.table().in_stock[0] == 1.0
    reader.changes += 1
    facts.table()  # starts the background rebuild, which reads the store as it is now
    assert reader.first.wait(5)
    reader.stored["a"] = {"in_stock": 0}  # a live update, read at once by the server's update call
    facts.refresh()
    assert facts.table().in_stock[0] == 0.0
    reader.go.set()  # the background rebuild ends with what it read before the update
    deadline = time.monotonic() + 5
    while facts._refreshing and time.monotonic() < deadline:
        time.sleep(0.01)
    assert facts.table().in_stock[0] == 0.0


def test_a_build_for_rows_an_index_write_changed_since_is_not_served() -> None:
    store = index(PRODUCTS)
    facts = CatalogFacts(store, Reader({}), refresh_s=3600)  # type: ignore[arg-type]
    early = facts._build(0)  # a refresh that read the rows before the write
    store.generation = 1  # an index write
    assert facts.table() is not None and facts._table.key == 1
    with facts._lock:
        facts._install(early)
    assert facts._table.key == 1  # the older rows' facts stay out


def test_the_digest_names_what_a_search_page_reads_and_comes_with_the_build() -> None:
    """The digest (in a shared result page's key) is worked out while the facts are built, in the background
    rebuild, not by the first search after it; it changes with what a search page reads (category, brand,
    price, stock, promotion) and not with popularity, which only listings and shelves read, so a purchase
    does not end the sharing of pages."""
    def digest(**changes: Any) -> str:
        products = PRODUCTS.assign(popularity=[5, 0, 2, 1], promoted=[0, 1, 0, 0])
        for column, (row, value) in changes.items():
            products[column] = products[column].astype(object)
            products.loc[row, column] = value
        facts = CatalogFacts(index(products), None)  # type: ignore[arg-type]
        facts.refresh()
        assert "digest" in vars(facts._table)  # a field of the build, nothing left to work out on a search
        return facts.digest

    same = digest()
    assert digest() == same and digest(popularity=(1, 9)) == same
    changed = [digest(category=(2, "paint")), digest(brand=(3, "bolt")), digest(price=(0, 11.0)),
               digest(in_stock=(0, False)), digest(promoted=(2, 1)), digest(category=(0, None))]
    assert len({same, *changed}) == 1 + len(changed)
