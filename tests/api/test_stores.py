"""Several stores in one server: each searches its own catalog with its own models, keys, events."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from api.main import create_app
from core.keys import KeyStore
from core.registry import ModelRegistry
from core.service_settings import ApiSettings
from core.settings import Settings
from serving.loading import open_served
from shoprank.cli import main
from tests.api.test_operations import tiny_reranker
from tests.helpers import ready_client, share_cache

pytestmark = pytest.mark.integration

GARDEN = ["garden hose 50 ft", "garden hose nozzle", "rose pruning shears", "lawn mower blade", "leaf rake",
          "hose reel cart", "watering can 2 gallon", "garden gloves", "soaker hose 25 ft", "sprinkler head"]


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory: pytest.TempPathFactory, settings: Settings, real_index, real_encoder):  # type: ignore[no-untyped-def]
    home = share_cache(tmp_path_factory.mktemp("stores"), settings)
    catalog = home.parent / "garden.csv"
    pd.DataFrame({"product_id": [f"G{i}" for i in range(len(GARDEN))], "title": GARDEN}).to_csv(catalog, index=False)
    assert main(["--home", str(home), "--no-progress", "index", "--store", "garden", "--catalog", str(catalog)]) == 0
    assert main(["--home", str(home), "--store", "gardn", "suggestions"]) == 2  # a typo: no stray store folder made
    assert not (home / "stores" / "gardn").exists()
    # the default store serves a tiny cross-encoder; the garden store has none
    ModelRegistry(home / "models").register("reranker", tiny_reranker(home.parent / "m1", 1), base_model="minilm",
                                            activate=True)
    served = settings.model_copy(update={"home": home, "api": ApiSettings(keys_required=True)})
    keys = KeyStore(served.paths.keys)
    tokens = {"default": keys.create("default", ["search", "events"])[1],
              "garden": keys.create("garden", ["search", "events"])[1]}

    with ready_client(create_app(served, store_loader(real_encoder, real_index))) as client:
        yield client, tokens, home


def store_loader(encoder, index):  # type: ignore[no-untyped-def]
    """The default store on the session's demo index; every other store loads its own."""

    def load(s: Settings, previous):  # type: ignore[no-untyped-def]
        return open_served(s, previous, encoder, index if s.store is None else None)

    return load


def key(token: str) -> dict[str, str]:
    return {"X-API-Key": token}


def test_each_store_searches_its_own_catalog_with_its_own_models(two_stores) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _ = two_stores
    ready = client.get("/readyz").json()
    assert ready["stores"] == {"default": "ready", "garden": "ready"}
    garden = client.get("/v1/stores/garden/search", params={"q": "hose", "k": 5}, headers=key(tokens["garden"]))
    assert garden.status_code == 200, garden.text
    body = garden.json()
    assert body["items"] and all(i["product_id"].startswith("G") for i in body["items"])
    assert body["index"]["products"] == len(GARDEN) and "reranker" not in body["versions"]
    default = client.get("/v1/search", params={"q": "garden hose", "k": 5}, headers=key(tokens["default"])).json()
    assert not any(i["product_id"].startswith("G") for i in default["items"])
    assert default["versions"]["reranker"] == "v1"
    shelf = client.post("/v1/stores/garden/recommend", json={"product_ids": ["G0"], "k": 3},
                        headers=key(tokens["garden"]))
    assert shelf.status_code == 200, shelf.text
    items = shelf.json()["items"]  # from its own catalog: hoses like the garden hose first
    assert len(items) == 3 and all(i["product_id"].startswith("G") and i["product_id"] != "G0" for i in items)
    assert "hose" in items[0]["title"]
    assert client.post("/v1/recommend", json={"product_ids": ["G0"]}, headers=key(tokens["default"])).status_code == 404


def test_a_store_needs_its_own_key_and_unknown_stores_are_named(two_stores) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _ = two_stores
    crossed = client.get("/v1/stores/garden/search", params={"q": "hose"}, headers=key(tokens["default"]))
    assert crossed.status_code == 403 and "'default', not 'garden'" in crossed.json()["message"]
    crossed = client.get("/v1/search", params={"q": "hose"}, headers=key(tokens["garden"]))
    assert crossed.status_code == 403 and "'garden', not 'default'" in crossed.json()["message"]
    unknown = client.get("/v1/stores/attic/search", params={"q": "hose"}, headers=key(tokens["garden"]))
    assert unknown.status_code == 404 and "['default', 'garden']" in unknown.json()["message"]
    bad = client.get("/v1/stores/..bad/search", params={"q": "hose"}, headers=key(tokens["garden"]))
    assert bad.status_code == 404


def test_events_go_to_their_store(two_stores) -> None:  # type: ignore[no-untyped-def]
    client, tokens, home = two_stores
    event = {"type": "click", "event_id": "g-1", "request_id": "r-1", "product_id": "G0", "position": 1}
    accepted = client.post("/v1/stores/garden/events", json=[event], headers=key(tokens["garden"]))
    assert accepted.status_code == 202
    spooled = "".join(p.read_text() for p in (home / "stores" / "garden" / "event_spool").rglob("*.jsonl"))
    assert '"g-1"' in spooled and '"topic":"shoprank.garden.interactions"' in spooled
    default_spool = "".join(p.read_text() for p in (home / "event_spool").rglob("*.jsonl"))
    assert '"g-1"' not in default_spool


def test_a_store_without_an_index_is_named_and_the_others_serve(tmp_path: Path, settings: Settings, real_index,  # type: ignore[no-untyped-def]
                                                                real_encoder) -> None:
    home = share_cache(tmp_path / "home", settings)
    (home / "stores" / "empty").mkdir(parents=True)
    served = settings.model_copy(update={"home": home})
    with ready_client(create_app(served, store_loader(real_encoder, real_index))) as client:
        stores = client.get("/readyz").json()["stores"]
        assert stores["default"] == "ready" and "has no index" in stores["empty"]
        refused = client.get("/v1/stores/empty/search", params={"q": "drill"})
        assert refused.status_code == 503 and "shoprank --store empty index" in refused.json()["message"]
        assert client.get("/v1/search", params={"q": "drill"}).status_code == 200


def test_a_folder_named_like_the_default_store_is_not_a_store(tmp_path: Path, settings: Settings) -> None:
    from api.stores import other_stores

    home = settings.model_copy(update={"home": tmp_path})
    for name in (home.index_name, "garden", ".hidden"):
        (tmp_path / "stores" / name).mkdir(parents=True)
    assert other_stores(home) == ["garden"]  # the default store's routes and keys stay the default store's


def test_metrics_are_not_ready_while_readyz_waits_for_a_store(  # type: ignore[no-untyped-def]
        tmp_path: Path, fake_index) -> None:
    import threading
    import time

    from fastapi.testclient import TestClient

    from tests.fakes import HashingEncoder

    encoder, gate = HashingEncoder(), threading.Event()
    served = Settings(home=tmp_path / "home", progress=False)
    (served.paths.stores / "slow").mkdir(parents=True)

    def load(s: Settings, previous):  # type: ignore[no-untyped-def]
        if s.store == "slow":
            gate.wait(30)
        return open_served(s, previous, encoder, fake_index)

    def ready_metric(client: TestClient) -> str:
        return next(line for line in client.get("/metrics").text.splitlines() if line.startswith("shoprank_ready"))

    with TestClient(create_app(served, loader=load)) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["stores"]["default"] != "ready" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/readyz").status_code == 503  # the slow store still loads
        assert ready_metric(client) == "shoprank_ready 0.0"  # before: 1.0, as soon as the default store was
        gate.set()
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready_metric(client) == "shoprank_ready 1.0"


def test_a_store_name_over_64_characters_is_404_before_any_key_check(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    def broken(settings: Settings, previous: object) -> object:  # events and keys need no index
        raise RuntimeError("no index here")

    served = Settings(home=tmp_path, progress=False,
                      api=ApiSettings(keys_required=True, rate_limit_per_s=0.01, rate_burst=1))
    token = KeyStore(served.paths.keys).create("default", ["events"])[1]
    event = [{"type": "click", "event_id": "e-1", "request_id": "r-1", "product_id": "P1"}]
    with TestClient(create_app(served, loader=broken)) as client:
        for headers in ({}, key(token), key(token)):  # before: 401, then the default store's key check (422, 429)
            answer = client.post(f"/v1/stores/{'g' * 65}/events", json=event, headers=headers)
            message = answer.json()["message"]
            assert answer.status_code == 404 and "(65 characters)" in message and "at most 64" in message, message
        # the default store's rate limit was not spent by those calls
        assert client.post("/v1/events", json=event, headers=key(token)).status_code == 202


def test_shutdown_closes_each_stores_engine_and_router(tmp_path: Path) -> None:
    """At shutdown the whole served unit closes: the engine too (its score-store writes still queued are written,
    its feature-store client closed), not only the experiment router."""
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from serving.loading import Served

    closed: list[str] = []

    def loader(settings: Settings, previous: Served | None) -> Served:
        engine = SimpleNamespace(versions={}, close=lambda: closed.append("engine"))
        router = SimpleNamespace(close=lambda: closed.append("router"))
        return Served(engine, router, "g1")  # type: ignore[arg-type]

    with TestClient(create_app(Settings(home=tmp_path, progress=False), loader=loader)) as client:
        assert client.app.state.served.ready.wait(10)  # type: ignore[attr-defined]
    assert closed == ["router", "engine"]  # the router first: its shadow searches run on the engine
