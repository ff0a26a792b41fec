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
from simulation.world import WorldConfig, build_world


@pytest.fixture(scope="module")
def simulator(demo_dir: Path, demo_products: pd.DataFrame) -> TrafficSimulator:
    vectors = np.random.default_rng(0).normal(size=(len(demo_products), 16)).astype(np.float32)
    world = build_world(demo_products, vectors, WorldConfig(categories=6, departments=2, users=50))
    dataset = load_dataset(demo_dir)
    # an eager shopper (no position bias, every product attractive, every cart bought): events to post
    eager = ClickModel(eta=0.0, floor=1.0, cart=1.0, buy=1.0, max_grade=dataset.max_grade)
    return TrafficSimulator("http://shop", world, dataset, "train", click_model=eager, seed=3)


class Storefront:
    """Serves each search the query's judged products (best first), records every event batch."""

    def __init__(self, simulator: TrafficSimulator, fail_searches: bool = False) -> None:
        self.simulator, self.fail_searches = simulator, fail_searches
        by_text = {text: qid for qid, text in simulator.dataset.select("train")}
        self.qid_of = by_text
        self.searches: list[dict] = []  # type: ignore[type-arg]
        self.shown: dict[str, list[str]] = {}  # request id -> the products served, in order
        self.events: list[dict] = []  # type: ignore[type-arg]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/v1/events":
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
