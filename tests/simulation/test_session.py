"""One simulated shopper against an in-memory storefront (httpx.MockTransport): what it searches,
the events it posts for what it was shown, and the figures it counts."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from evaluation.dataset import load_dataset
from simulation.click_model import ClickModel
from simulation.simulator import TrafficSimulator
from simulation.world import StoreWorld, WorldConfig, build_world


@pytest.fixture(scope="module")
def world(demo_products: pd.DataFrame) -> StoreWorld:
    vectors = np.random.default_rng(0).normal(size=(len(demo_products), 16)).astype(np.float32)
    return build_world(demo_products, vectors, WorldConfig(categories=6, departments=2, users=50))


def eager_simulator(world: StoreWorld, demo_dir: Path) -> TrafficSimulator:
    """A simulator of eager shoppers (no position bias, every product attractive, every cart bought)."""
    dataset = load_dataset(demo_dir)
    eager = ClickModel(eta=0.0, floor=1.0, cart=1.0, buy=1.0, max_grade=dataset.max_grade)
    return TrafficSimulator("http://shop", world, dataset, "train", click_model=eager, seed=3)


@pytest.fixture(scope="module")
def simulator(world: StoreWorld, demo_dir: Path) -> TrafficSimulator:
    return eager_simulator(world, demo_dir)  # events to post


class Storefront:
    """Serves each search the query's judged products (best first), records every event batch."""

    def __init__(self, simulator: TrafficSimulator, fail_searches: bool = False,
                 fail_events: tuple[int, ...] = ()) -> None:
        """``fail_events``: the event batches (0-based) whose post meets a dropped connection."""
        self.simulator, self.fail_searches, self.fail_events = simulator, fail_searches, fail_events
        self.batches = 0
        by_text = {text: qid for qid, text in simulator.dataset.select("train")}
        self.qid_of = by_text
        self.searches: list[dict] = []  # type: ignore[type-arg]
        self.shown: dict[str, list[str]] = {}  # request id -> the products served, in order
        self.events: list[dict] = []  # type: ignore[type-arg]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/v1/events":
            self.batches += 1
            if self.batches - 1 in self.fail_events:
                raise httpx.ConnectError("connection reset", request=request)
            self.events.extend(body)
            return httpx.Response(202, json={"accepted": len(body)})
        self.searches.append(body)
        if self.fail_searches:
            return httpx.Response(503, json={"detail": "overloaded"})
        grades = self.simulator.dataset.qrels[self.qid_of[body["query"]]]
        request_id = f"r{len(self.searches)}"
        self.shown[request_id] = sorted(grades, key=lambda p: -grades[p])[: body["k"]]
        return httpx.Response(200, json={"request_id": request_id, "arm": None,
                                         "items": [{"product_id": p} for p in self.shown[request_id]]})


def test_each_session_searches_once_and_posts_events_for_what_it_was_shown(simulator: TrafficSimulator) -> None:
    shop = Storefront(simulator)
    with httpx.Client(transport=httpx.MockTransport(shop)) as client:
        for number in range(40):
            simulator.session(client, number)
    stats = simulator.stats["all"]
    assert stats.searches == len(shop.searches) == 40
    assert all(s["user_id"] in set(simulator.world.users["user_id"]) for s in shop.searches)
    assert shop.events, "40 shoppers shown relevant products posted no event"
    served = {f"r{i + 1}": s for i, s in enumerate(shop.searches)}
    for event in shop.events:
        search = served[event["request_id"]]
        assert shop.shown[event["request_id"]][event["position"] - 1] == event["product_id"]  # 1-based positions of what was shown
        assert event["user_id"] == search["user_id"]
        assert event["event_id"] == f"{event['request_id']}-{event['position']}-{event['type']}"
        if event["type"] == "purchase":
            row = simulator.row_of[event["product_id"]]
            assert event["revenue"] == pytest.approx(float(simulator.prices[row]))
        else:
            assert "revenue" not in event
    kinds = [e["type"] for e in shop.events]
    assert stats.clicks == kinds.count("click") and stats.purchases == kinds.count("purchase")
    assert len(stats.true_ndcg) == len(stats.judged_ndcg) == len(stats.latency_ms) == 40
    assert all(0.0 <= v <= 1.0 for v in stats.judged_ndcg)
    assert sorted(simulator.sessions)[:3] == [0, 1, 2]


def test_a_failed_search_is_counted_and_posts_nothing(simulator: TrafficSimulator) -> None:
    shop = Storefront(simulator, fail_searches=True)
    before = simulator.errors["search 503"]
    with httpx.Client(transport=httpx.MockTransport(shop)) as client:
        simulator.session(client, 1000)
    assert simulator.errors["search 503"] == before + 1
    assert shop.events == [] and 1000 not in simulator.sessions


def test_an_empty_page_is_a_search_without_clicks(demo_dir: Path, demo_products: pd.DataFrame) -> None:
    vectors = np.random.default_rng(0).normal(size=(len(demo_products), 16)).astype(np.float32)
    world = build_world(demo_products, vectors, WorldConfig(categories=6, departments=2, users=20))
    dataset = load_dataset(demo_dir)
    simulator = TrafficSimulator("http://shop", world, dataset, "train", seed=5)
    assert simulator.click_model.max_grade == dataset.max_grade  # the dataset's own grades, not always 8

    def nothing_found(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events":
            return httpx.Response(202, json={"accepted": 0})
        return httpx.Response(200, json={"request_id": "r1", "arm": None, "items": []})

    with httpx.Client(transport=httpx.MockTransport(nothing_found)) as client:
        simulator.session(client, 0)  # before: IndexError (an empty page's rows were floats), the run stopped
    stats = simulator.stats["all"]
    assert stats.searches == 1 and stats.clicks == 0 and stats.true_ndcg == [0.0]


def on(shop: Storefront, monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulator's runs talk to ``shop``."""
    import simulation.simulator

    real = httpx.Client
    monkeypatch.setattr(simulation.simulator.httpx, "Client",
                        lambda **kw: real(transport=httpx.MockTransport(shop), **kw))


def test_rates_are_shares_of_searches_and_events_are_counted_per_search(world: StoreWorld, demo_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """ctr / cart_rate / purchase_rate: searches with at least one click / cart / purchase, as the replay's
    'clicked' and `report ab`'s; before, events per search (eager shoppers: a ctr of about 5)."""
    simulator = eager_simulator(world, demo_dir)
    shop = Storefront(simulator)
    on(shop, monkeypatch)
    report = simulator.run(30, concurrency=1, progress=False)
    overall, sessions = report["overall"], report["sessions_detail"].values()
    assert overall["searches"] == 30 and 0.0 < overall["ctr"] <= 1.0
    assert overall["ctr"] == pytest.approx(sum(s["clicked"] for s in sessions) / 30, abs=1e-4)
    assert overall["purchase_rate"] == pytest.approx(sum(s["purchased"] for s in sessions) / 30, abs=1e-4)
    assert overall["purchase_rate"] <= overall["cart_rate"] <= overall["ctr"]
    kinds = [e["type"] for e in shop.events]
    assert overall["clicks_per_search"] == pytest.approx(kinds.count("click") / 30, abs=1e-4)
    assert overall["purchases_per_search"] == pytest.approx(kinds.count("purchase") / 30, abs=1e-4)
    assert overall["clicks_per_search"] > 1.0  # eager shoppers click several products a search
    assert report["arms"]["all"] == overall


def test_a_failed_event_post_is_counted_and_the_run_goes_on(world: StoreWorld, demo_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A dropped connection on POST /v1/events is counted like a failed search (before: it escaped the
    session and the whole run's report was lost)."""
    simulator = eager_simulator(world, demo_dir)
    shop = Storefront(simulator, fail_events=(2,))
    on(shop, monkeypatch)
    report = simulator.run(20, concurrency=1, progress=False)
    assert report["errors"] == {"events ConnectError": 1}
    assert report["overall"]["searches"] == 20 and len(report["sessions_detail"]) == 20


def test_ndcg_stays_within_one_when_the_world_lacks_judged_products(demo_dir: Path, demo_products: pd.DataFrame,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Judged products served that the world does not hold (added to the catalog after `features build`) count
    in the ideal list as in the served one (before: served only, NDCG@10 up to 1.7)."""
    older = demo_products.iloc[:240].reset_index(drop=True)
    vectors = np.random.default_rng(0).normal(size=(len(older), 16)).astype(np.float32)
    world = build_world(older, vectors, WorldConfig(categories=6, departments=2, users=50))
    simulator = TrafficSimulator("http://shop", world, load_dataset(demo_dir), "train", seed=0)
    shop = Storefront(simulator)
    on(shop, monkeypatch)
    simulator.run(100, concurrency=1, progress=False)
    unknown = {p for body in shop.shown.values() for p in body if p not in simulator.row_of}
    assert unknown, "no session was shown a product the world lacks: the test tests nothing"
    stats = simulator.stats["all"]
    assert max(stats.true_ndcg) <= 1.0 + 1e-9 and max(stats.judged_ndcg) <= 1.0 + 1e-9
    # the storefront serves every judged product best first: the ideal order, whatever the world holds (but
    # for the few queries whose text another query has too: the storefront serves that one's products)
    assert sum(v == pytest.approx(1.0) for v in stats.judged_ndcg) >= 90
