"""The simulator's schedule: a click attack's searches run among the honest sessions, not after them."""

from __future__ import annotations

from simulation.simulator import interleave


def test_attack_searches_are_spread_among_the_sessions() -> None:
    assert interleave(4, 2) == [("session", 0), ("attack", 0), ("session", 1), ("session", 2), ("attack", 1),
                                ("session", 3)]


def test_every_job_once_and_the_attack_in_both_halves() -> None:
    jobs = interleave(3000, 300)
    assert sorted(i for kind, i in jobs if kind == "session") == list(range(3000))
    assert sorted(i for kind, i in jobs if kind == "attack") == list(range(300))
    first_half = jobs[: len(jobs) // 2]
    assert sum(kind == "attack" for kind, _ in first_half) == 150  # a retrain's time split sees it in training
    assert interleave(5, 0) == [("session", i) for i in range(5)]


def test_a_home_without_a_world_says_how_to_build_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from core.errors import NotFound
    from simulation.world import StoreWorld

    with pytest.raises(NotFound, match=r"no SIMULATED store world in .*shoprank features build"):
        StoreWorld.load(tmp_path / "world")


def test_replays_of_other_sessions_are_not_compared(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two replays pair session by session only when each session is the same shopper and query in both: runs
    with another seed searched other shoppers' queries, and comparing them measured the sessions, not the
    rankings (before: all 30 'paired')."""
    import json

    import httpx
    import numpy as np
    import pandas as pd
    import pytest

    import simulation.simulator as simulator
    from core.errors import InvalidInput
    from evaluation.dataset import load_dataset
    from simulation.world import StoreWorld, WorldConfig

    ids = [f"p{i}" for i in range(20)]
    pd.DataFrame({"product_id": ids, "title": [f"thing {i}" for i in range(20)]}).to_csv(tmp_path / "products.csv",
                                                                                       index=False)
    pd.DataFrame({"query_id": [f"q{i}" for i in range(10)], "query": [f"query {i}" for i in range(10)],
                  "split": "dev"}).to_csv(tmp_path / "queries.csv", index=False)
    pd.DataFrame({"query_id": [f"q{i}" for i in range(10)] * 2, "product_id": ids,
                  "grade": [3] * 10 + [1] * 10}).to_csv(tmp_path / "judgments.csv", index=False)
    rng = np.random.default_rng(0)
    products = pd.DataFrame({"product_id": ids, "category_id": [i % 4 for i in range(20)], "price": 10.0,
                             "in_stock": True, "brand": "b", "hidden_quality": 0.5})
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(50)],
                          "hidden_category_pref": [rng.dirichlet(np.ones(4)).tolist() for _ in range(50)],
                          "hidden_budget": 1.0, "hidden_brands": [[] for _ in range(50)]})
    world = StoreWorld(products, users, pd.DataFrame(), WorldConfig(), ["a", "b", "c", "d"])

    def serve(request: httpx.Request) -> httpx.Response:  # every search shows the same ten products
        if request.url.path == "/v1/search":
            body = json.loads(request.content)
            return httpx.Response(200, json={"request_id": body["session_id"],
                                             "items": [{"product_id": p} for p in ids[:10]]})
        return httpx.Response(202, json={})

    real = httpx.Client
    monkeypatch.setattr(simulator.httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(serve), **kw))
    dataset = load_dataset(tmp_path)

    def replay(seed: int) -> dict:
        return simulator.TrafficSimulator("http://shop", world, dataset, "dev", seed=seed).run(
            30, concurrency=1, progress=False)

    assert simulator.compare_replays(replay(1), replay(1))["paired_sessions"] == 30
    with pytest.raises(InvalidInput, match="seed 1 and 2"):
        simulator.compare_replays(replay(1), replay(2))
    first, second = replay(1), replay(2)
    for report in (first, second):
        del report["seed"]  # as written by an earlier release: the sessions themselves are compared
    with pytest.raises(InvalidInput, match="another shopper or query"):
        simulator.compare_replays(first, second)
