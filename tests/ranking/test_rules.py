"""Business rules on a hand-made list with known outcomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from core.errors import InvalidInput
from core.query import Analysis, Filters, Query
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
    rule = config.rule_for(Query(query))
    lift = FACTS.matching(rule.boost.filters()) if rule is not None and rule.boost is not None else None
    result = apply_rules(rule, IDS, SCORES, STOCK, promoted, config, keep, lift)
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
    ids = ["a", "b", "c", "d", "e", "f", "p"]  # five rows tied above the promoted one (a pin's filled score, RRF)
    tied = apply_rules(None, ids, np.array([10, 3.1, 3.1, 3.1, 3.1, 3.1, 3.0]), np.ones(7), np.eye(7)[6],
                       RulesConfig(out_of_stock="none"))
    assert [ids[i] for i in tied.order] == ["a", "b", "c", "p", "d", "e", "f"]  # before: 5 places up, to 2nd
    assert tied.notes[3] == ["promotion_boost(+3 places)"]
    both = apply_rules(None, ["a", "b", "c"], np.array([3.0, 2.8, 1.0]), np.ones(3), np.array([1.0, 1.0, 0.0]),
                       RulesConfig())  # two promoted rows keep their order
    assert both.order.tolist() == [0, 1, 2]


def test_pins_buries_and_filters() -> None:
    config = RulesConfig(out_of_stock="none", promo_boost=0,
                         queries={"drill": QueryRule(pin=["d", "zz", "d"], bury=["a", "d"])})  # a pin twice: once
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


def test_rule_queries_match_as_the_analyzer_normalizes_and_bad_ones_are_named() -> None:
    config = RulesConfig(queries={'3/4" PVC': QueryRule(pin=["a"]), "Café Table": QueryRule(redirect="/tables")})
    assert config.rule_for(Query("3/4 in. pvc")) is config.queries['3/4" PVC']
    assert config.rule_for(Query("  CAFE   table ")).redirect == "/tables"
    assert config.rule_for(Query("cafe tables")) is None
    typed = Query("cafe table", analysis=Analysis(original="cafe tabel", text="cafe table"))
    assert config.rule_for(typed).redirect == "/tables"  # the corrected text matches when the typed one does not
    with pytest.raises(ValidationError, match="'Drill' and 'drill ' are the same query"):
        RulesConfig(queries={"Drill": QueryRule(), "drill ": QueryRule()})
    with pytest.raises(ValidationError, match="'!!' has no word left"):
        RulesConfig(queries={"!!": QueryRule()})
    with pytest.raises(ValidationError, match="at most 1000 items"):
        QueryRule(pin=["p"] * 1001)


def test_hidden_products_leave_every_list_and_a_query_hides_its_own() -> None:
    config = RulesConfig(out_of_stock="none", promo_boost=0, hide=["b"], queries={"drill": QueryRule(hide=["d"])})
    assert run(config, query="hammer")[0] == ["a", "c", "d", "e"]
    assert run(config, query="drill")[0] == ["a", "c", "e"]
    assert run(config, query="saw")[0] == ["a", "c", "d", "e"]


def test_a_pin_adds_the_product_the_search_did_not_find_and_moves_one_from_below_the_depth() -> None:
    n = 6
    facts = ProductFacts(np.array(["tools"] * 9, dtype=object), np.array([None] * 9, dtype=object),
                         np.arange(9, dtype=float), np.ones(9), np.zeros(9), np.zeros(9))

    def read(candidates: Candidates) -> ProductFacts:
        return facts.take(candidates.docs)

    candidates = Candidates(np.arange(n), [f"p{i}" for i in range(n)], "rrf", {"rrf": np.linspace(1, 0, n)},
                            {"rrf": np.arange(1, n + 1)})
    config = RulesConfig(promo_boost=0, queries={"drill": QueryRule(pin=["p8", "p5", "gone"], hide=["p1"])})
    stage = RulesStage(config, read, depth=3, doc_of=lambda p: int(p[1:]) if p in {f"p{i}" for i in range(9)} else None)
    ruled = stage(Query("drill"), candidates)
    assert ruled.candidates.product_ids == ["p8", "p5", "p0", "p2", "p3", "p4"]  # p1 hidden, p5 moved up
    assert ruled.notes["p8"] == ["pinned(1)"] and ruled.notes["p5"] == ["pinned(2)"]
    assert np.isnan(ruled.candidates.score[0])  # the added product has no score of the search
    # a pinned product that fails the filters is not shown
    assert "p8" not in stage(Query("drill", filters=Filters(max_price=7)), candidates).candidates.product_ids
    assert stage(Query("saw"), candidates).candidates.product_ids == [f"p{i}" for i in range(n)]
    by_price = stage(Query("drill", sort="price_desc"), candidates).candidates.product_ids
    assert "p8" not in by_price and "p1" not in by_price  # a price order adds no pin; the query's hide holds
    assert stage.hidden_docs(Query("drill")).tolist() == [1] and stage.hidden_docs(Query("saw")).tolist() == []
    placed = RulesStage(RulesConfig(promo_boost=0, queries={"saw": QueryRule(pin_at={"p7": 2})}), read, depth=3,
                        doc_of=stage.doc_of)(Query("saw"), candidates).candidates.product_ids
    assert placed[:3] == ["p0", "p7", "p1"]  # not found by the search: added at its place
    assert stage.hidden_docs().tolist() == [] and RulesStage(RulesConfig(hide=["p3", "x"]), read,
                                                             doc_of=stage.doc_of).hidden_docs().tolist() == [3]


def test_numeric_product_ids_written_by_hand_are_read_as_ids(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("max_promo_positions: 2\npromo_boost: 1\nhide: [100001, 0755, 01234567]\n"
                                         "queries:\n  drill: {pin: [100002], pin_at: {100003: 2}}\n")
    config = RulesConfig.from_file(tmp_path / "rules.yaml")
    assert config.hide == ["100001", "0755", "01234567"]  # as written: not the octal numbers 493 and 342391
    assert config.queries["drill"].pin == ["100002"] and config.queries["drill"].pin_at == {"100003": 2}
    assert config.max_promo_positions == 2 and config.promo_boost == 1.0
    with pytest.raises(ValidationError, match="hide.0"):  # a yes/no is not an id
        RulesConfig.model_validate({"hide": [True]})


def test_rules_round_trip_through_their_file(tmp_path: Path) -> None:
    config = RulesConfig(hide=["z"], queries={"Café": QueryRule(pin=["a"], redirect="/cafe")})
    config.save(tmp_path / "rules" / "rules.yaml")
    assert RulesConfig.from_file(tmp_path / "rules" / "rules.yaml") == config
    assert config.product_ids() == ["z", "a"]
    (tmp_path / "bad.yaml").write_text("queries:\n  drill:\n    pinn: [a]\n")
    with pytest.raises(InvalidInput, match=r"bad.yaml is not valid: queries.drill.pinn: Extra inputs are not "
                                           r"permitted \(got \['a'\]\)"):
        RulesConfig.from_file(tmp_path / "bad.yaml")
    (tmp_path / "bad.yaml").write_text("hide: [a\n")
    with pytest.raises(InvalidInput, match="bad.yaml is not YAML"):
        RulesConfig.from_file(tmp_path / "bad.yaml")


def test_a_saved_file_whose_queries_a_newer_normalization_reads_alike_still_loads(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two rules written apart (``12,000 btu`` and ``12000 btu``) that normalize alike now: a store started on
    the file serves the first and says so; a change through the API must merge them."""
    (tmp_path / "rules.yaml").write_text("queries:\n  12,000 btu air conditioner: {pin: [a]}\n"
                                         "  12000 btu air conditioner: {pin: [b]}\n  drill: {pin: [c]}\n")
    config = RulesConfig.from_file(tmp_path / "rules.yaml")
    assert list(config.queries) == ["12,000 btu air conditioner", "drill"]
    assert "12000 btu air conditioner" in caplog.text and "merge them" in caplog.text
    with pytest.raises(ValidationError, match="the same query once normalized"):
        RulesConfig.model_validate({"queries": {"12,000 btu": {"pin": ["a"]}, "12000 btu": {"pin": ["b"]}}})


def test_a_boost_lifts_a_brand_within_stock_and_a_rule_holds_in_its_window_only() -> None:
    boost = QueryRule(boost={"brand": ["bolt"]})
    config = RulesConfig(out_of_stock="demote", promo_boost=0, queries={"drill": boost})
    order, notes = run(config)
    assert order == ["d", "e", "a", "c", "b"] and notes[0] == ["boosted"]  # bolt first, b still last (no stock)
    boosted = FACTS.matching(boost.boost.filters())
    both = apply_rules(boost, IDS, SCORES, STOCK, PROMO, config, FACTS.matching(Filters(category="tools")), boosted)
    assert [IDS[i] for i in both.order] == ["d", "a", "b"]
    with pytest.raises(ValidationError, match="at least one category or brand"):
        QueryRule(boost={})
    sale = QueryRule(pin=["e"], start="2026-11-27T00:00:00", end="2026-11-30T00:00:00+00:00")
    assert sale.start.tzinfo is not None  # no offset: UTC
    config = RulesConfig(queries={"drill": sale})
    from datetime import datetime, timezone

    def at(when: str) -> QueryRule | None:
        return config.rule_for(Query("drill"), datetime.fromisoformat(when).replace(tzinfo=timezone.utc))

    assert at("2026-11-26T23:59:59") is None and at("2026-11-27T00:00:00") is sale and at("2026-11-30T00:00:00") is None
    always = QueryRule(pin=["a"])  # a corrected text's rule, and an ended one for the typo it is searched for
    config = RulesConfig(queries={"black friday": always, "blak friday": QueryRule(pin=["e"], end="2025-12-01")})
    typo = Query("black friday", analysis=Analysis("blak friday", "black friday"))
    assert config.rule_for(typo, datetime(2026, 11, 27, tzinfo=timezone.utc)) is always  # before: none
    with pytest.raises(ValidationError, match="ends .* before it starts"):
        QueryRule(start="2026-11-30T00:00:00Z", end="2026-11-27T00:00:00Z")


def test_a_product_pinned_at_a_place_is_shown_there() -> None:
    config = RulesConfig(out_of_stock="none", promo_boost=0,
                         queries={"drill": QueryRule(pin=["e"], pin_at={"d": 2, "a": 99, "zz": 1}, bury=["d"])})
    order, notes = run(config)
    assert order == ["e", "d", "b", "c", "a"]  # e first, d at place 2 (pinned beats buried), a past the end: last
    assert notes[0] == ["pinned(1)"] and notes[1] == ["pinned(2)"] and notes[-1] == ["pinned(5)"]
    with pytest.raises(ValidationError, match="less than or equal to 1000"):
        QueryRule(pin_at={"a": 1001})
    assert RulesConfig(queries={"x": QueryRule(pin_at={"q": 3})}).product_ids() == ["q"]
    with pytest.raises(ValidationError, match="pin_at puts 'a' and 'b' both at place 3"):
        QueryRule(pin_at={"a": 3, "b": 3})
    order, notes = run(RulesConfig(out_of_stock="none", promo_boost=0,
                                   queries={"drill": QueryRule(pin=["e"], pin_at={"c": 1})}))
    assert order[:2] == ["c", "e"] and notes[:2] == [["pinned(1)"], ["pinned(2)"]]  # each note names its place


def test_a_place_past_the_rules_depth_is_kept() -> None:
    n = 200
    facts = ProductFacts(np.array(["tools"] * n, dtype=object), np.array([None] * n, dtype=object),
                         np.arange(n, dtype=float), np.ones(n), np.zeros(n), np.zeros(n))
    candidates = Candidates(np.arange(n), [f"p{i}" for i in range(n)], "rrf", {"rrf": np.linspace(1, 0, n)},
                            {"rrf": np.arange(1, n + 1)})
    stage = RulesStage(RulesConfig(promo_boost=0, queries={"drill": QueryRule(pin_at={"p3": 150})}),
                       lambda c: facts.take(c.docs), depth=100)
    ruled = stage(Query("drill"), candidates)
    assert ruled.candidates.product_ids.index("p3") == 149 and ruled.notes["p3"] == ["pinned(150)"]
    assert stage.farthest_place(Query("drill")) == 150 and stage.farthest_place(Query("saw")) == 0
    # rows the rules drop above the place (hidden, out of stock) do not move it up: before, at 145 and 146
    hidden = RulesConfig(promo_boost=0, out_of_stock="hide", hide=[f"p{i}" for i in range(10, 15)],
                         queries={"drill": QueryRule(pin_at={"p3": 150, "p190": 98})})
    stocked = facts.take(np.arange(n))
    stocked.in_stock[[20, 30]] = 0
    for depth in (100, 150):
        ruled = RulesStage(hidden, lambda c: stocked.take(c.docs), depth=depth)(Query("drill"), candidates)
        ids = ruled.candidates.product_ids
        assert ids.index("p3") == 149 and ids.index("p190") == 97 and len(ids) == n - 7
        assert ruled.notes["p3"] == ["pinned(150)"] and ruled.notes["p190"] == ["pinned(98)"]


def test_a_filter_that_leaves_fewer_rows_than_a_pin_at_place_reads_the_list_a_few_times_not_once_a_row() -> None:
    """149 rows match the filter, the rule pins at place 150, and 10,000 rows follow that none match: the head
    grows by what it lacks, then twice as deep each time (before: one row a time, 9,851 reads, 40 s)."""
    n = 10_000
    facts = ProductFacts(np.array(["tools"] * 149 + ["paint"] * (n - 149), dtype=object),
                         np.array([None] * n, dtype=object), np.arange(n, dtype=float), np.ones(n), np.zeros(n),
                         np.zeros(n))
    candidates = Candidates(np.arange(n), [f"p{i}" for i in range(n)], "rrf", {"rrf": np.linspace(1, 0, n)},
                            {"rrf": np.arange(1, n + 1)})
    reads: list[int] = []

    def read(listed: Candidates) -> ProductFacts:
        reads.append(len(listed))
        return facts.take(listed.docs)

    stage = RulesStage(RulesConfig(promo_boost=0, queries={"drill": QueryRule(pin_at={"p3": 150})}), read, depth=100)
    ruled = stage(Query("drill", filters=Filters(category=("tools",))), candidates)
    assert len(ruled.candidates) == 149 and ruled.candidates.product_ids[-1] == "p3"  # the last of too few rows
    assert len(reads) <= 10 and reads[-1] == n, reads


def test_a_price_order_applies_no_pin_or_bury_and_a_pinned_product_out_of_stock_is_noted_pinned_only() -> None:
    """A search sorted by price re-sorts the rules' rows by price: a pin's or a bury's place would not hold, so
    neither moves a row nor notes one there (the query's hide still holds). A pinned product out of stock is
    shown at its pin's place with ``out_of_stock: demote`` (its note says pinned, not demoted), and not shown
    with ``hide``."""
    n = 6
    facts = ProductFacts(np.array(["tools"] * n, dtype=object), np.array([None] * n, dtype=object),
                         np.arange(n, dtype=float), np.array([1, 1, 0, 1, 1, 1], dtype=float), np.zeros(n),
                         np.zeros(n))
    candidates = Candidates(np.arange(n), [f"p{i}" for i in range(n)], "rrf", {"rrf": np.linspace(1, 0, n)},
                            {"rrf": np.arange(1, n + 1)})
    config = RulesConfig(out_of_stock="demote", promo_boost=0,
                         queries={"drill": QueryRule(pin=["p4"], pin_at={"p5": 2}, bury=["p0"], hide=["p1"])})
    stage = RulesStage(config, lambda c: facts.take(c.docs), depth=n)
    by_price = stage(Query("drill", sort="price_asc"), candidates)
    assert by_price.candidates.product_ids == ["p0", "p3", "p4", "p5", "p2"]  # p1 hidden, p2 out of stock last
    assert by_price.notes == {}
    pinned = RulesStage(RulesConfig(out_of_stock="demote", promo_boost=0, queries={"drill": QueryRule(pin=["p2"])}),
                        lambda c: facts.take(c.docs), depth=n)(Query("drill"), candidates)
    assert pinned.candidates.product_ids[0] == "p2" and pinned.notes == {"p2": ["pinned(1)"]}
    hidden = RulesStage(RulesConfig(out_of_stock="hide", promo_boost=0, queries={"drill": QueryRule(pin=["p2"])}),
                        lambda c: facts.take(c.docs), depth=n)(Query("drill"), candidates)
    assert "p2" not in hidden.candidates.product_ids and hidden.notes == {}


def test_a_price_order_notes_no_row_but_keeps_the_rows_the_rules_bring_first() -> None:
    """The price order re-sorts the rows the rules return, so no note of a place would hold: none is given
    (the notes are shown in the explanation and counted in the rules metric). The moves still choose which
    rows come first: the engine sorts only the first ``serving.sort_depth`` rows by price, and with the moves
    left out, out-of-stock products (often the cheapest) filled that window. Filters and hides still hold."""
    n = 6
    facts = ProductFacts(np.array(["tools"] * 5 + ["paint"], dtype=object),
                         np.array(["acme", "bolt", "acme", "bolt", "acme", "acme"], dtype=object),
                         np.arange(n, dtype=float), np.array([0, 1, 1, 1, 1, 1], dtype=float),
                         np.array([0, 0, 0, 0, 1, 0], dtype=float), np.zeros(n))
    candidates = Candidates(np.arange(n), [f"p{i}" for i in range(n)], "rrf", {"rrf": np.linspace(1, 0, n)},
                            {"rrf": np.arange(1, n + 1)})
    config = RulesConfig(out_of_stock="demote", promo_boost=5, max_promo_positions=3,
                         queries={"drill": QueryRule(boost={"brand": ["bolt"]})})
    stage = RulesStage(config, lambda c: facts.take(c.docs), depth=n)
    relevance = stage(Query("drill"), candidates)  # p0 demoted, p4 promoted, bolt's p1 and p3 boosted
    assert relevance.candidates.product_ids != candidates.product_ids and relevance.candidates.product_ids[-1] == "p0"
    assert relevance.notes["p0"] == ["out_of_stock_demoted"] and relevance.notes["p1"] == ["boosted"]
    by_price = stage(Query("drill", sort="price_asc"), candidates)
    assert by_price.candidates.product_ids == relevance.candidates.product_ids and by_price.notes == {}
    tools = stage(Query("drill", filters=Filters(category=("tools",)), sort="price_desc"), candidates)
    assert tools.candidates.product_ids == [p for p in relevance.candidates.product_ids if p != "p5"]
    assert tools.notes == {}
    hide = RulesStage(config.model_copy(update={"out_of_stock": "hide"}), lambda c: facts.take(c.docs), depth=n)
    assert "p0" not in hide(Query("drill", sort="price_asc"), candidates).candidates.product_ids
