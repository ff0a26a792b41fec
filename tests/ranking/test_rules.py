"""Business rules on a hand-made list with known outcomes."""

from __future__ import annotations

import numpy as np

from core.query import Filters, Query
from ranking.facts import ProductFacts
from ranking.rules import QueryRule, RulesConfig, RulesStage, apply_rules
from retrieval.types import Candidates

IDS = ["a", "b", "c", "d", "e"]
SCORES = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
STOCK = np.array([1, 0, 1, 1, 1], dtype=float)
PROMO = np.zeros(5)
CATS = np.array(["tools", "tools", "paint", "tools", "paint"], dtype=object)
BRANDS = np.array(["acme", None, "acme", "bolt", "bolt"], dtype=object)
PRICES = np.array([10.0, 20.0, 30.0, 40.0, np.nan])
FACTS = ProductFacts(CATS, BRANDS, PRICES, STOCK, PROMO, np.zeros(5))


def run(config: RulesConfig, query: str = "drill", promoted: np.ndarray = PROMO, filters: Filters = Filters()):  # type: ignore[no-untyped-def]
    keep = FACTS.matching(filters) if filters.active() else None
    result = apply_rules(query, IDS, SCORES, STOCK, promoted, config, keep)
    return [IDS[i] for i in result.order], result.notes


def test_out_of_stock_modes() -> None:
    assert run(RulesConfig(out_of_stock="none", promo_boost=0))[0] == ["a", "b", "c", "d", "e"]
    order, notes = run(RulesConfig(out_of_stock="demote", promo_boost=0))
    assert order == ["a", "c", "d", "e", "b"] and notes[-1] == ["out_of_stock_demoted"]
    assert run(RulesConfig(out_of_stock="hide", promo_boost=0))[0] == ["a", "c", "d", "e"]


def test_promotion_boost_is_bounded_in_positions() -> None:
    promoted = np.array([0, 0, 0, 0, 1], dtype=float)
    order, notes = run(RulesConfig(out_of_stock="none", promo_boost=5.0, max_promo_positions=2), promoted=promoted)
    assert order.index("e") == 2  # gained exactly 2 positions despite a huge boost
    assert notes[2][0].startswith("promotion_boost(+")
    order, _ = run(RulesConfig(out_of_stock="none", promo_boost=0.0), promoted=promoted)
    assert order[-1] == "e"


def test_pins_buries_and_filters() -> None:
    config = RulesConfig(out_of_stock="none", promo_boost=0,
                         queries={"drill": QueryRule(pin=["d", "zz"], bury=["a"])})
    order, notes = run(config, query="  Drill ")
    assert order == ["d", "b", "c", "e", "a"]
    assert notes[0] == ["pinned(1)"] and notes[-1] == ["buried"]
    order, _ = run(RulesConfig(out_of_stock="none"), filters=Filters(category="tools", max_price=25))
    assert order == ["a", "b"]
    order, notes = run(RulesConfig(out_of_stock="none"), filters=Filters(in_stock=True, min_price=15))
    assert order == ["c", "d"]  # b is out of stock, e has no price
    order, _ = run(RulesConfig(out_of_stock="none"), filters=Filters(brand=("bolt", "nope"), category="paint"))
    assert order == ["e"]
    order, _ = run(RulesConfig(out_of_stock="none"), filters=Filters(brand=["acme", "bolt"], max_price=35))
    assert order == ["a", "c"]  # b's brand is unknown, d costs 40, e has no price
    assert not Filters(in_stock=False).active() and Filters(brand="x").brand == ("x",)


def test_rows_past_the_rules_depth_keep_their_order_and_places_less_the_filtered() -> None:
    n = 8
    facts = ProductFacts(np.array(["tools", "paint"] * 4, dtype=object), np.array([None] * n, dtype=object),
                         np.arange(n, dtype=float), np.array([1, 1, 0, 1, 1, 0, 1, 1], dtype=float), np.zeros(n),
                         np.zeros(n))

    class Facts:
        def __call__(self, candidates: Candidates) -> ProductFacts:
            return facts.take(candidates.docs)

        known = __call__

    candidates = Candidates(np.arange(n), [f"p{i}" for i in range(n)], "rrf", {"rrf": np.linspace(1, 0, n)},
                            {"rrf": np.arange(1, n + 1)})

    def ids(config: RulesConfig, filters: Filters = Filters(), depth: int = 4) -> list[str]:
        return RulesStage(config, Facts(), depth=depth)(Query("q", filters=filters), candidates).candidates.product_ids

    assert ids(RulesConfig(out_of_stock="demote", promo_boost=0)) == ["p0", "p1", "p3", "p2", "p4", "p5", "p6", "p7"]
    assert ids(RulesConfig(out_of_stock="hide", promo_boost=0)) == ["p0", "p1", "p3", "p4", "p6", "p7"]
    assert ids(RulesConfig(promo_boost=0), Filters(category="tools")) == ["p0", "p2", "p4", "p6"]  # p2: demoted alone
    assert ids(RulesConfig(promo_boost=0), Filters(max_price=5.5), depth=2) == ["p0", "p1", "p2", "p3", "p4", "p5"]
