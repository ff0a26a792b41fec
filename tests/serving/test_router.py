"""Experiment routing (A/B arms, team-draft interleaving, shadow) with a fake engine."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.paths import Home
from core.query import Query
from online_learning.experiments import Arm, Experiment, assign
from retrieval.types import Candidates, Hits
from serving.engine import SearchResult
from serving.router import ExperimentRouter, load_router, save_router_config


class FakeEngine:
    """Each LambdaMART version returns a fixed product order (unit test double)."""

    orders = {None: ["a", "b", "c", "d", "e"], "v1": ["a", "b", "c", "d", "e"], "v2": ["e", "d", "c", "b", "a"]}
    versions = {"ltr": "v1"}

    def __init__(self) -> None:
        self.calls: list[str | None] = []

    def ranked_by(self, pipeline: str, ltr: str | None = None) -> dict[str, str]:
        return {"encoder": "biencoder:v1", "ltr": ltr or self.versions["ltr"]}

    def search(self, query: Query, k: int, pipeline: str = "full", offset: int = 0, use_cache: bool = False,
               ltr: str | None = None) -> SearchResult:
        self.calls.append(ltr)
        order = self.orders[ltr][offset : offset + k]
        hits = Hits.of(np.arange(len(order)), -np.arange(len(order), dtype=float))
        if use_cache:  # as if the results cache held the page: nothing was ranked now
            return SearchResult(Candidates.from_hits(hits, "ltr", list(order)), pipeline, len(order), {}, cached=True)
        return SearchResult(Candidates.from_hits(hits, "ltr", list(order)), pipeline, len(order), {"ltr": 0.001})


EXP = Experiment(name="e1", arms={"control": Arm(ltr="v1"), "treatment": Arm(ltr="v2")})


def test_ab_routes_each_user_to_its_arm() -> None:
    engine = FakeEngine()
    router = ExperimentRouter(EXP)
    for user in ("u1", "u2", "u3", "u4"):
        routed = router.search(engine, Query("drill", user), 3, 0, user, False)  # type: ignore[arg-type]
        arm = assign(EXP, user)
        assert routed.arm == arm and routed.ltr == EXP.arms[arm].ltr
        assert routed.result.candidates.product_ids == FakeEngine.orders[routed.ltr][:3]
    assert router.ltr_versions == ["v1", "v2"]


def test_interleaving_merges_both_arms_with_teams() -> None:
    engine = FakeEngine()
    router = ExperimentRouter(EXP.model_copy(update={"mode": "interleave"}))
    routed = router.search(engine, Query("drill", "u1"), 4, 0, "u1", False)  # type: ignore[arg-type]
    assert routed.arm == "interleaved" and sorted(engine.calls) == ["v1", "v2"]
    products = routed.result.candidates.product_ids
    assert len(products) == 4 and len(set(products)) == 4
    assert set(routed.teams.values()) == {"control", "treatment"}
    first = products[0]
    assert first == ("a" if routed.teams[first] == "control" else "e")
    # both arms ranked it: each arm's LambdaMART is named, and no single "ltr" credits the active one
    assert routed.versions == {"encoder": "biencoder:v1", "ltr:control": "v1", "ltr:treatment": "v2"}
    # a list sorted by price is not interleaved: the control arm serves it whole, outside the experiment
    # (logged as no arm's search, so an A/B reading of the experiment's log does not count it as the control's)
    engine.calls.clear()
    sorted_query = Query("drill", "u1", sort="price_asc")
    by_price = router.search(engine, sorted_query, 4, 0, "u1", False)  # type: ignore[arg-type]
    assert (by_price.experiment, by_price.arm, by_price.ltr) == (None, None, "v1")
    assert (engine.calls, by_price.teams) == (["v1"], {})


def test_a_search_names_the_lambdamart_of_its_arm() -> None:
    engine = FakeEngine()
    assert ExperimentRouter().search(engine, Query("drill"), 3, 0, "u1", False).versions["ltr"] == "v1"  # type: ignore[arg-type]
    router = ExperimentRouter(EXP)
    for user in ("u1", "u2", "u3", "u4"):
        routed = router.search(engine, Query("drill", user), 3, 0, user, False)  # type: ignore[arg-type]
        assert routed.versions == {"encoder": "biencoder:v1", "ltr": EXP.arms[assign(EXP, user)].ltr}


def test_shadow_logs_a_diff_without_touching_the_response(tmp_path: Path) -> None:
    engine = FakeEngine()
    router = ExperimentRouter(None, shadow="v2", shadow_dir=tmp_path)
    routed = router.search(engine, Query("drill", "u1"), 5, 0, "u1", False)  # type: ignore[arg-type]
    assert routed.result.candidates.product_ids == ["a", "b", "c", "d", "e"]
    router.drain()
    router.close()
    record = json.loads((tmp_path / "v2.jsonl").read_text().splitlines()[0])
    assert record["overlap@10"] == 1.0 and abs(record["kendall_tau@10"] + 1.0) < 1e-9 and record["shadow_ltr"] == "v2"
    same = ExperimentRouter(None, shadow="v1", shadow_dir=tmp_path)  # the served model in shadow, second pages
    engine.versions = {"ltr": "v2"}
    for offset in (0, 2):
        same.search(engine, Query("drill", "u1"), 2, offset, "u1", False)  # type: ignore[arg-type]
    same.drain()
    same.close()
    pages = [json.loads(line) for line in (tmp_path / "v1.jsonl").read_text().splitlines()]
    # each page is compared with the same page of the shadow: v1's "c", "d" against v1's own, not its "a", "b"
    assert [(r["offset"], r["shadow_top10"]) for r in pages] == [(0, ["a", "b"]), (2, ["c", "d"])]
    assert all(r["kendall_tau@10"] is None for r in pages)  # fewer than 3 in common: no rank correlation
    cached = ExperimentRouter(None, shadow="v1", shadow_dir=tmp_path / "cached")  # v2 serves now
    cached.search(engine, Query("drill", "u1"), 5, 0, "u1", True)  # type: ignore[arg-type]
    cached.drain()
    cached.close()
    (record,) = [json.loads(line) for line in (tmp_path / "cached" / "v1.jsonl").read_text().splitlines()]
    assert record["served_ms"] is None and pages[0]["served_ms"] == 1.0  # a cached page's time is unknown, not 0


def test_a_shadow_record_waits_for_a_rewrite_of_its_file_and_the_search_does_not(tmp_path: Path) -> None:
    """`events forget` / `prune` rewrite a shadow file holding its lock alone: before, the router appended with a
    plain open, so a record written between the rewrite's read and its replace was lost. The append (in the
    background) waits for the lock; the search does not."""
    import time

    from core.files import exclusive

    router = ExperimentRouter(None, shadow="v2", shadow_dir=tmp_path)
    with exclusive(tmp_path / "v2.jsonl"):  # as a rewrite holds it
        started = time.perf_counter()
        routed = router.search(FakeEngine(), Query("drill", "u1"), 5, 0, "u1", False)  # type: ignore[arg-type]
        assert routed.result.candidates.product_ids == ["a", "b", "c", "d", "e"]
        assert time.perf_counter() - started < 0.2
        time.sleep(0.3)
        assert not (tmp_path / "v2.jsonl").exists() and router.shadow_done == 0
    router.drain()
    router.close()
    assert router.shadow_done == 1 and len((tmp_path / "v2.jsonl").read_text().splitlines()) == 1


def test_router_config_round_trip(tmp_path: Path) -> None:
    save_router_config(Home(tmp_path), EXP, "v3")
    router = load_router(Home(tmp_path))
    assert router.experiment == EXP and router.shadow == "v3" and router.ltr_versions == ["v1", "v2", "v3"]
    router.close()
    assert load_router(Home(tmp_path / "none")).experiment is None


def test_shadow_counts_carry_across_a_swap_while_the_same_version_is_shadowed() -> None:
    from types import SimpleNamespace

    from serving.loading import Served

    engine = SimpleNamespace(carry_counts=lambda previous: None)
    old = Served(engine, ExperimentRouter(shadow="v2"), "g1")  # type: ignore[arg-type]
    old.router.shadow_done, old.router.shadow_dropped = 20, 1
    new = Served(engine, ExperimentRouter(shadow="v2"), "g2")  # type: ignore[arg-type]
    new.carry_counts(old)  # a rules change rebuilt the router: before, the counts read 0 again
    assert (new.router.shadow_done, new.router.shadow_dropped) == (20, 1)
    other = Served(engine, ExperimentRouter(shadow="v3"), "g3")  # type: ignore[arg-type]
    other.carry_counts(new)  # another version shadowed: its own counts
    assert (other.router.shadow_done, other.router.shadow_dropped) == (0, 0)
    for served in (old, new, other):
        served.router.close()


class PinnedEngine(FakeEngine):
    """Both arms' rules put product P at place 3."""

    orders = {None: ["a", "b", "P", "c", "d"], "v1": ["a", "b", "P", "c", "d"], "v2": ["d", "c", "P", "b", "a"]}

    def search(self, query: Query, k: int, pipeline: str = "full", offset: int = 0, use_cache: bool = False,
               ltr: str | None = None) -> SearchResult:
        result = super().search(query, k, pipeline, offset, use_cache, ltr)
        return replace(result, notes={"P": ["pinned(3)"]} if "P" in result.candidates.product_ids else {})


def test_interleaving_keeps_pins_at_their_places_and_a_shadow_is_never_the_served_model(tmp_path: Path) -> None:
    router = ExperimentRouter(EXP.model_copy(update={"mode": "interleave"}), shadow="v3", shadow_dir=tmp_path)
    PinnedEngine.orders["v3"] = ["c", "d", "P", "a", "b"]
    for user in ("u1", "u2", "u3", "u4"):
        routed = router.search(PinnedEngine(), Query("drill", user), 5, 0, user, False)  # type: ignore[arg-type]
        products = routed.result.candidates.product_ids
        assert products[2] == "P" and routed.teams["P"] is None  # before: drafted, at place 4 or 5, with a team
        assert sorted(products) == ["P", "a", "b", "c", "d"]
        assert {routed.teams[p] for p in products if p != "P"} == {"control", "treatment"}
    router.drain()
    router.close()
    records = [json.loads(line) for line in (tmp_path / "v3.jsonl").read_text().splitlines()]
    assert len(records) == 4 and {r["served_ltr"] for r in records} == {"interleaved:v1,v2"}  # before: v1
    engine = FakeEngine()
    for shadow, experiment in (("v1", None), ("v2", EXP.model_copy(update={"mode": "interleave"}))):
        same = ExperimentRouter(experiment, shadow=shadow, shadow_dir=tmp_path / "same")
        same.search(engine, Query("drill", "u1"), 3, 0, "u1", False)  # type: ignore[arg-type]
        same.drain()
        same.close()
        assert same.shadow_done == 0  # the shadow ranked the list shown: nothing to compare (before: scored again)


class ExplainingEngine(PinnedEngine):
    """Explains each row with the LambdaMART asked for: the contribution names the version."""

    def explain(self, query: Query, candidates: Candidates, ltr: str | None = None,
                analysis: object = None) -> list[dict[str, float]] | None:
        return [{f"by {ltr or self.versions['ltr']}": 1.0} for _ in candidates.product_ids]


def test_an_interleaved_row_is_explained_by_the_lambdamart_of_the_arm_that_placed_it() -> None:
    """Each row's contributions come from its team's LambdaMART (a pinned row's from the control's, whose list
    gave it), so they add up to its served score; not from the active model, which ranked neither list."""
    engine = ExplainingEngine()
    router = ExperimentRouter(EXP.model_copy(update={"mode": "interleave"}))
    for user in ("u1", "u2", "u3", "u4"):
        routed = router.search(engine, Query("drill", user), 5, 0, user, False)  # type: ignore[arg-type]
        contributions = routed.explain(engine, Query("drill", user))  # type: ignore[arg-type]
        assert contributions is not None
        arm_of = {None: "v1", "control": "v1", "treatment": "v2"}
        for product, explained in zip(routed.result.candidates.product_ids, contributions):
            assert explained == {f"by {arm_of[routed.teams[product]]}": 1.0}
    ab = ExperimentRouter(EXP).search(engine, Query("drill", "u1"), 3, 0, "u1", False)  # type: ignore[arg-type]
    assert ab.explain(engine, Query("drill", "u1")) == [{f"by {ab.ltr}": 1.0}] * 3  # type: ignore[arg-type]


def test_the_pages_of_one_unit_walk_one_interleaved_list() -> None:
    """Team-draft pages drawn for one unit (a shopper, or an anonymous search itself) follow each other: no product
    repeats and none is skipped between page 1 and page 2."""
    router = ExperimentRouter(EXP.model_copy(update={"mode": "interleave"}))
    engine = FakeEngine()
    for unit in ("u1", "search:0123456789abcdef", "u7"):
        whole = router.search(engine, Query("drill"), 6, 0, unit, False).result.candidates.product_ids
        pages = [router.search(engine, Query("drill"), 3, offset, unit, False).result.candidates.product_ids
                 for offset in (0, 3)]
        assert pages[0] + pages[1] == whole, (unit, pages, whole)
