"""Events intake, impressions, metrics, and admin hot swaps without failed requests."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.registry import ModelRegistry
from core.service_settings import ApiSettings
from core.settings import Settings
from ranking.cross_encoder import export
from ranking.cross_encoder_net import PairScorer
from retrieval.encoder import resolve_model_dir
from tests.helpers import app_on, ready_client, share_cache


def tiny_reranker(folder: Path, seed: int) -> Path:
    """A 1-layer MiniLM scorer with a random head: cheap stand-in for a trained version."""
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    base = resolve_model_dir("minilm")
    PairScorer.from_base(base, layers=1).save(folder)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(folder)
    export(folder)
    return folder


@pytest.fixture(scope="module")
def ops_settings(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Settings:
    home = share_cache(tmp_path_factory.mktemp("ops"), settings)
    ops = settings.model_copy(update={"home": home, "api": ApiSettings(admin_token="s3cret")})
    registry = ModelRegistry(ops.paths.models)
    for seed in (1, 2):
        registry.register("reranker", tiny_reranker(home / f"m{seed}", seed), base_model="minilm", activate=True)
    registry.activate("reranker", "v1")
    return ops


@pytest.fixture(scope="module")
def client(ops_settings: Settings, real_index, real_encoder):  # type: ignore[no-untyped-def]
    app = app_on(ops_settings, real_index, real_encoder)
    with ready_client(app) as client:
        yield client


AUTH = {"Authorization": "Bearer s3cret"}


def test_events_are_accepted_durably_and_validated(client: TestClient, ops_settings: Settings) -> None:
    search = client.post("/v1/search", json={"query": "garden hose", "k": 3, "user_id": "u7"}).json()
    assert search["versions"]["reranker"] == "v1"
    event = {"event_id": "click-1", "request_id": search["request_id"], "type": "click",
             "product_id": search["items"][0]["product_id"], "position": 1, "user_id": "u7"}
    response = client.post("/v1/events", json=[event, {**event, "event_id": "buy-1", "type": "purchase", "revenue": 19.9}])
    assert response.status_code == 202 and response.json() == {"accepted": 2}
    logged = [json.loads(line) for p in sorted(ops_settings.paths.event_spool.rglob("segment-*.jsonl"))
              for line in p.read_text().splitlines()]
    ids = [r["event_id"] for r in logged]
    assert search["request_id"] in ids and ids[-2:] == ["click-1", "buy-1"]
    impression = next(r for r in logged if r["event_id"] == search["request_id"])["value"]
    assert impression["type"] == "ranking" and [i["position"] for i in impression["items"]] == [1, 2, 3]
    assert impression["filters"] is None
    filtered = client.post("/v1/search", json={"query": "garden hose", "filters": {"brand": ["A", "B"],
                                                                                   "in_stock": True}}).json()
    logged = [json.loads(line) for p in sorted(ops_settings.paths.event_spool.rglob("segment-*.jsonl"))
              for line in p.read_text().splitlines()]
    impression = next(r for r in logged if r["event_id"] == filtered["request_id"])["value"]
    assert impression["filters"] == {"brand": ["A", "B"], "in_stock": True}  # what was set, for analysts
    bad = client.post("/v1/events", json=[{**event, "type": "like"}])
    assert bad.status_code == 422 and "type" in bad.json()["message"] and "click" in bad.json()["message"]
    assert client.post("/v1/events", json=[{**event, "position": 0}]).status_code == 422
    assert client.post("/v1/events", json=[]).status_code == 422
    # a time without an offset is UTC (the log sink and the streaming features need one); far ahead is refused
    naive = {**event, "event_id": "click-naive", "timestamp": "2026-03-01T12:00:00"}
    assert client.post("/v1/events", json=[naive]).status_code == 202
    logged = [json.loads(line) for p in sorted(ops_settings.paths.event_spool.rglob("segment-*.jsonl"))
              for line in p.read_text().splitlines()]
    assert next(r for r in logged if r["event_id"] == "click-naive")["value"]["timestamp"] == "2026-03-01T12:00:00Z"
    ahead = client.post("/v1/events", json=[{**event, "event_id": "click-2", "timestamp": "2099-01-01T00:00:00Z"}])
    assert ahead.status_code == 422 and "2099-01-01T00:00:00+00:00" in ahead.text and "24 hours" in ahead.text


def test_live_product_updates_need_the_feature_store_and_the_admin_token(client: TestClient) -> None:
    body = {"products": [{"product_id": "P100831", "in_stock": False}]}
    assert client.post("/v1/admin/products", json=body).status_code == 401
    refused = client.post("/v1/admin/products", json=body, headers=AUTH)  # this server has no feature store
    assert refused.status_code == 409 and "shoprank index" in refused.json()["message"]
    bad = client.post("/v1/admin/products", json={"products": [{"product_id": "P100831", "price": -1}]},
                      headers=AUTH)
    assert bad.status_code == 422 and "price" in bad.json()["message"]
    for price in (1234567.89, 16777217.0):  # the store's float32 would hand back another price
        changed = client.post("/v1/admin/products", json={"products": [{"product_id": "P100831", "price": price}]},
                              headers=AUTH)
        assert changed.status_code == 422 and repr(price) in changed.json()["message"], changed.text
    kept = client.post("/v1/admin/products", json={"products": [{"product_id": "P100831", "price": 123456.78}]},
                       headers=AUTH)
    assert kept.status_code == 409  # accepted as input; refused only for want of a feature store here


def test_metrics_export_latency_caches_and_models(client: TestClient) -> None:
    client.post("/v1/search", json={"query": "garden hose", "k": 3})
    client.post("/v1/search", json={"query": "garden hose", "k": 3})
    text = client.get("/metrics").text
    assert 'shoprank_request_seconds_count{route="/v1/search",status="200"}' in text
    assert 'shoprank_stage_seconds_count{stage="teacher"}' in text
    assert 'shoprank_cache_hit_rate{cache="results"}' in text
    assert 'shoprank_model_info{role="reranker",version="v1"} 1.0' in text
    assert "shoprank_event_spool_pending 0.0" in text
    assert 'shoprank_cross_encoder_backlog_pairs{role="reranker"} 0.0' in text  # both searches answered
    assert 'shoprank_cross_encoder_shed_total{role="reranker"} 0.0' in text


def test_admin_needs_the_token(client: TestClient) -> None:
    assert client.get("/v1/admin/models").status_code == 401
    assert client.get("/v1/admin/models", headers={"Authorization": "Bearer nope"}).status_code == 403
    listing = client.get("/v1/admin/models", headers=AUTH).json()
    assert listing["registered"]["reranker"] == ["v1", "v2"] and listing["served"]["reranker"] == "v1"
    wrong = client.post("/v1/admin/models/biencoder/activate", json={"version": "v1"}, headers=AUTH)
    assert wrong.status_code == 422 and "cannot be hot-swapped" in wrong.json()["message"]
    missing = client.post("/v1/admin/models/reranker/activate", json={"version": "v9"}, headers=AUTH)
    assert missing.status_code == 404


def test_an_experiment_on_a_model_that_does_not_load_is_refused(client: TestClient, ops_settings: Settings,
                                                                  tmp_path: Path) -> None:
    import numpy as np

    from ranking.lambdamart import LambdaMART, LambdaMARTConfig, RankingData

    x = np.random.default_rng(5).normal(size=(100, 2)).astype(np.float32)
    data = RankingData(x, (x[:, 0] > 0).astype(np.int32), [10] * 10, ["bm25", "dense"])
    LambdaMART.fit(data, data, LambdaMARTConfig(max_grade=1, min_data_in_leaf=5, max_rounds=3)).save(tmp_path / "m")
    (tmp_path / "m" / "model.txt").write_text("not a LightGBM model")  # broken before it was registered
    broken = ModelRegistry(ops_settings.paths.models).register("ltr", tmp_path / "m", base_model="lightgbm")
    before = client.get("/v1/admin/experiment", headers=AUTH).json()
    refused = client.put("/v1/admin/experiment", json={"experiment": None, "shadow": broken.version}, headers=AUTH)
    assert refused.status_code == 409 and "does not load" in refused.json()["message"], refused.text
    assert client.get("/v1/admin/experiment", headers=AUTH).json() == before  # nothing saved, nothing swapped
    typo = client.put("/v1/admin/experiment", json={"shadw": broken.version}, headers=AUTH)  # would switch all off
    assert typo.status_code == 422 and "shadw" in typo.text
    assert client.get("/v1/admin/experiment", headers=AUTH).json() == before
    assert client.post("/v1/search", json={"query": "ceiling fan", "k": 3}).status_code == 200


def test_hot_swap_under_load_fails_no_request(client: TestClient) -> None:
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            response = client.post("/v1/search", json={"query": "ceiling fan", "k": 5})
            statuses.append(response.status_code)
            if response.status_code == 200:
                versions.add(response.json()["versions"]["reranker"])

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        swapped = client.post("/v1/admin/models/reranker/activate", json={"version": "v2"}, headers=AUTH)
        assert swapped.status_code == 200 and swapped.json()["served"]["reranker"] == "v2"
        back = client.post("/v1/admin/models/reranker/rollback", headers=AUTH)
        assert back.status_code == 200 and back.json()["served"]["reranker"] == "v1"
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert statuses and set(statuses) == {200}
    assert "v1" in versions


def test_a_rollback_to_a_version_that_does_not_load_is_refused_and_changes_nothing(
        client: TestClient, ops_settings: Settings, tmp_path: Path) -> None:
    registry = ModelRegistry(ops_settings.paths.models)
    saved = registry.state("reranker")
    folder = tiny_reranker(tmp_path / "broken", 3)
    for onnx in folder.rglob("*.onnx"):
        onnx.write_bytes(b"not an ONNX graph")  # broken before it was registered: its checksums match
    broken = registry.register("reranker", folder, base_model="minilm").version
    registry.activate("reranker", broken)  # as a version of another ShopRank once was: then v1 again
    registry.activate("reranker", "v1")
    try:
        refused = client.post("/v1/admin/models/reranker/rollback", headers=AUTH)
        assert refused.status_code == 409 and "does not load" in refused.json()["message"], refused.text
        # before: active.json named it all the same, and every later start served nothing
        assert registry.active_version("reranker") == "v1"
        assert client.post("/v1/search", json={"query": "ceiling fan", "k": 3}).status_code == 200
    finally:
        registry.restore("reranker", saved, unless_changed_from="v1")
        registry.delete("reranker", broken)


def _results_lookups(client: TestClient) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in client.get("/metrics").text.splitlines()
               if line.startswith('shoprank_cache_lookups_total{cache="results"'))


def test_cache_counts_keep_counting_across_a_swap(client: TestClient) -> None:
    client.post("/v1/search", json={"query": "garden rake", "k": 3})
    client.post("/v1/search", json={"query": "garden rake", "k": 3})
    before = _results_lookups(client)
    assert before >= 2
    assert client.post("/v1/admin/reload", headers=AUTH).status_code == 200  # a new engine, its caches empty
    assert _results_lookups(client) == before, "the results cache's lookups were counted again from zero"
    client.post("/v1/search", json={"query": "garden rake", "k": 3})
    assert _results_lookups(client) == before + 1


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads have their own nice value on Linux")
def test_search_threads_run_below_the_micro_batch_threads(ops_settings: Settings, real_index,  # type: ignore[no-untyped-def]
                                                        real_encoder) -> None:
    serving = ops_settings.serving.model_copy(update={"search_nice": 3, "micro_batch": True})
    app = app_on(ops_settings.model_copy(update={"serving": serving}), real_index, real_encoder)
    base = _nice(threading.get_native_id())
    with ready_client(app) as client:
        for query in ("patio chair cushion", "copper pipe fitting"):  # queries no other test here scores:
            # the module's apps share one score store, and the degrade budget test needs its pairs unscored
            assert client.post("/v1/search", json={"query": query, "k": 3}).json()["versions"]["reranker"] == "v1"
        threads = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        nices = {tid: _nice(tid) for tid in threads}
        # the thread that answered the searches is 3 levels down, once (not once a search)
        assert base + 3 in nices.values()
        lowered = {threads[tid] for tid, n in nices.items() if n == base + 3}
        assert "AnyIO worker thread" in lowered  # and the pools a search starts (BM25's) inherit it
        batchers = [tid for tid, name in threads.items() if name == "micro-batcher"]
        assert batchers and all(nices[tid] == base for tid in batchers)  # the model keeps its priority
        assert nices[threading.get_native_id()] == base


def test_yield_to_models_lowers_a_thread_once() -> None:
    from api.admission import yield_to_models

    seen: list[int] = []

    def run() -> None:
        tid = threading.get_native_id()
        start = _nice(tid)
        yield_to_models(0)
        seen.append(_nice(tid) - start)
        yield_to_models(2)
        yield_to_models(2)
        seen.append(_nice(tid) - start)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == ([0, 2] if sys.platform.startswith("linux") else [0, 0])


def test_a_degrade_budget_skips_the_cross_encoder_beside_another_search(ops_settings: Settings, real_index,  # type: ignore[no-untyped-def]
                                                                        real_encoder) -> None:
    serving = ops_settings.serving.model_copy(update={"skip_share": 1.0, "shed_in_flight": 1})
    app = app_on(ops_settings.model_copy(update={"serving": serving}), real_index, real_encoder)
    with ready_client(app) as client:
        alone = client.post("/v1/search", json={"query": "cordless drill battery", "k": 3}).json()
        assert alone["degraded"] == []  # no other search in flight: the model runs, however big the budget
        with app.state.admission.enter():  # another search in flight beside the next one
            beside = client.post("/v1/search", json={"query": "brass garden hose nozzle", "k": 3}).json()
        assert beside["degraded"] and all(r.endswith(": shed, budget") for r in beside["degraded"])
        assert [i["product_id"] for i in beside["items"]]  # still an answer, in LambdaMART / first-stage order
        metrics = client.get("/metrics").text
        shed = [line for line in metrics.splitlines()  # the cause is a label of its own
                if line.startswith("shoprank_degraded_total{") and 'reason="shed"' in line and 'cause="budget"' in line]
        assert shed and sum(float(line.split()[-1]) for line in shed) >= 1


def test_a_storefront_page_may_call_the_api_from_its_listed_origins(settings: Settings,
                                                                   tmp_path: Path) -> None:
    from api.main import create_app

    home = settings.model_copy(update={"home": tmp_path, "api": ApiSettings(cors_origins=["https://shop.example.com"])})
    client = TestClient(create_app(home))  # no lifespan: the preflight never reaches the engine
    asked = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-api-key"}
    allowed = client.options("/v1/suggest", headers={"Origin": "https://shop.example.com", **asked})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://shop.example.com"
    other = client.options("/v1/suggest", headers={"Origin": "https://elsewhere.example", **asked})
    assert "access-control-allow-origin" not in other.headers
    with pytest.raises(ValueError, match="'shop.example.com/' is not an origin"):
        ApiSettings(cors_origins=["shop.example.com/"])


def test_a_fault_no_handler_maps_is_a_json_500_that_is_counted(settings: Settings, tmp_path: Path) -> None:
    from api.main import create_app

    app = create_app(settings.model_copy(update={"home": tmp_path}))

    def boom() -> None:
        raise RuntimeError("a dependency broke")

    app.add_api_route("/v1/boom", boom)
    client = TestClient(app)  # no lifespan: this route needs no engine
    failed = client.get("/v1/boom", headers={"X-Request-ID": "trace-42"})
    assert failed.status_code == 500 and failed.json()["error"] == "internal_error"
    assert failed.json()["request_id"] == "trace-42" and failed.headers["x-request-id"] == "trace-42"
    assert 'route="/v1/boom",status="500"' in client.get("/metrics").text


def test_a_body_over_the_limit_is_refused_before_it_is_read_or_a_key_checked(settings: Settings,
                                                                             tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from api.main import create_app

    def broken(_: Settings, previous: object) -> object:  # events need no index
        raise RuntimeError("no index here")

    json_body = {"content-type": "application/json"}
    limited = settings.model_copy(update={"home": tmp_path / "a", "api": ApiSettings(keys_required=True,
                                                                                     max_body_bytes=4096)})
    with TestClient(create_app(limited, loader=broken)) as client:
        declared = client.post("/v1/events", content=b"[" + b" " * 10_000 + b"]", headers=json_body)
        message = declared.json()["message"]  # before: read and parsed whole, then a 401
        assert declared.status_code == 413 and "10002 bytes (Content-Length) is more than the 4096" in message
        assert 'route="/v1/events",status="413"' in client.get("/metrics").text

        def chunks():  # type: ignore[no-untyped-def]
            yield from (b" " * 1000 for _ in range(10))

        streamed = client.post("/v1/stores/x/events", content=chunks(), headers=json_body)  # no Content-Length
        assert streamed.status_code == 413 and "more than the 4096 bytes" in streamed.json()["message"]
        assert client.post("/v1/events", content=b"[]", headers=json_body).status_code == 401  # within the limit
    # the largest valid batch (1000 events, every field at its longest, its text escaped) fits the default limit
    event = {"type": "purchase", "request_id": "r" * 128, "timestamp": datetime.now(UTC).isoformat(),
             "user_id": "\U0001F600" * 128, "session_id": "\u00e9" * 128, "product_id": "\U0001F600" * 128,
             "position": 100_100, "quantity": 10_000, "revenue": 9_999_999.99}
    body = json.dumps([{**event, "event_id": f"{i:0128d}"} for i in range(1000)]).encode()
    assert len(body) > 3 * 2**20
    with TestClient(create_app(settings.model_copy(update={"home": tmp_path / "b"}), loader=broken)) as client:
        answer = client.post("/v1/events", content=body, headers=json_body)
        assert answer.status_code == 202 and answer.json()["accepted"] == 1000


def test_searches_over_max_in_flight_wait_at_most_their_budget_and_probes_still_answer(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from api.main import create_app
    from core.errors import Conflict
    from core.service_settings import ServingSettings

    class SlowRouter:  # ranks one search in 1 s, then says so with a 409 (no engine behind it)
        def search(self, *args: object, **kwargs: object) -> None:
            time.sleep(1.0)
            raise Conflict("ranked")

        def close(self) -> None:
            pass

    engine = SimpleNamespace(versions={}, cache_stats=lambda: {}, batchers={})
    served = SimpleNamespace(router=SlowRouter(), engine=engine, generation="g", close=lambda: None)
    settings = Settings(home=tmp_path, progress=False, serving=ServingSettings(
        max_in_flight=1, budget_ms=300, reload_poll_s=0, micro_batch=False))
    with TestClient(create_app(settings, loader=lambda s, previous: served)) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.05)
        with ThreadPoolExecutor(50) as pool:  # more searches than the server has worker threads (40)
            sent = [pool.submit(client.post, "/v1/search", json={"query": "drill"}) for _ in range(48)]
            time.sleep(0.3)
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200 and client.head("/readyz").status_code == 200
            assert client.get("/metrics").status_code == 200
            probes_s = time.monotonic() - started  # before: behind the searches queued for a thread, ~8 s
            answers = [future.result() for future in sent]
    assert probes_s < 2.0, probes_s
    refused = [a for a in answers if a.status_code == 503]
    assert {a.status_code for a in answers} == {409, 503} and len(refused) > 20  # before: all 48 ranked in turn
    assert refused[0].json()["error"] == "overloaded" and refused[0].headers["Retry-After"] == "1"
    assert "serving.max_in_flight" in refused[0].json()["message"]


def test_searches_refused_under_overload_are_logged_once_a_second_with_their_count(
        caplog: pytest.LogCaptureFixture) -> None:
    from api.errors import OverloadLog
    from core.errors import Overloaded

    now = [100.0]
    log = OverloadLog(every=1.0, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="api.errors"):
        for _ in range(5):  # before: an ERROR line each
            log.refused(Overloaded("at capacity"))
        now[0] += 1.5
        for _ in range(3):
            log.refused(Overloaded("at capacity"))
    lines = [r.getMessage() for r in caplog.records if r.name == "api.errors"]
    assert len(lines) == 2 and lines[0].startswith("1 search(es)") and lines[1].startswith("5 search(es)")
