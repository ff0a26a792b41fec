"""`shoprank warm-scores` end to end: logged demo traffic -> head queries -> the score store -> searches."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core.query import Query
from core.registry import ModelRegistry
from core.settings import Settings, get_settings
from online_learning.analysis import head_queries
from online_learning.consumers.log_sink import ParquetLogSink, read_log
from serving.engine import assemble
from serving.loading import open_engine
from tests.api.test_operations import tiny_reranker
from tests.helpers import demo_traffic, run_cli, share_cache

pytestmark = pytest.mark.slow


@pytest.fixture()
def warm_home(tmp_path: Path, settings: Settings, demo_dir: Path, real_index, real_encoder,  # type: ignore[no-untyped-def]
              monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A home serving the small demo catalog with a registered tiny reranker and 300 logged searches."""
    home = share_cache(tmp_path / "home", settings)
    ParquetLogSink(home / "event_log")(demo_traffic(assemble(real_index, real_encoder, settings)))
    ModelRegistry(home / "models").register("reranker", tiny_reranker(tmp_path / "m", 3), base_model="minilm",
                                            activate=True)
    monkeypatch.setenv("SHOPRANK_HOME", str(home))
    monkeypatch.setenv("SHOPRANK_CATALOG", str(demo_dir / "products.csv"))
    monkeypatch.setenv("SHOPRANK_PROGRESS", "false")
    # every search at the full teacher depth: the test counts the pairs a search reads
    monkeypatch.setenv("SHOPRANK_RANKING__TEACHER_DEPTH_CONFIDENT", "0")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_head_queries_are_the_most_searched(warm_home: Settings) -> None:
    rankings = read_log(warm_home.paths.event_log, "rankings").drop_duplicates("event_id")
    expected = Counter(rankings["query"]).most_common()
    head = head_queries(warm_home.paths.event_log, 3)
    assert head == sorted(expected, key=lambda qc: (-qc[1], qc[0]))[:3]
    assert sum(c for _, c in head_queries(warm_home.paths.event_log, 100)) == 300


def test_warm_scores_fills_the_store_that_searches_read(warm_home: Settings,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "warm-scores", "--queries", "3", "--depth", "5")
    assert code == 0, err
    first = json.loads(out)
    assert (first["queries"], first["depth"], first["models"]) == (3, 5, ["reranker:v1"])
    assert (first["pairs"], first["scored"], first["cached"], first["dropped"]) == (15, 15, 0, 0)
    assert first["store"] == "local" and warm_home.paths.score_store.is_file()
    top3 = sum(c for _, c in head_queries(warm_home.paths.event_log, 3))
    assert (first["head_searches"], first["logged_searches"]) == (top3, 300)
    assert first["searches_covered"] == round(top3 / 300, 4)
    again = json.loads(run_cli(capsys, "warm-scores", "--queries", "3", "--depth", "5")[1])
    assert (again["scored"], again["cached"]) == (0, 15)  # a second run reads what the first wrote

    # a server process started now reads the warmed pairs: the head query's first-stage top 5
    engine = open_engine(warm_home, warm_features=False)
    try:
        top_query = head_queries(warm_home.paths.event_log, 1)[0][0]
        result = engine.search(top_query, 10)
        assert not result.degraded
        tier = engine.cache_stats()["reranker_scores_store"]
        teacher_depth = warm_home.ranking.teacher_depth
        assert (tier.hits, tier.misses) == (5, teacher_depth - 5)  # type: ignore[attr-defined]
        # the warm stored its first-stage list (and its vector): the search retrieves nothing, encodes nothing
        lists = engine.cache_stats()["first_stage_store"]
        assert (lists.hits, lists.misses) == (1, 0)  # type: ignore[attr-defined]
        vectors = engine.cache_stats()["query_vectors_store"]
        assert (vectors.hits, vectors.misses) == (0, 0)  # type: ignore[attr-defined]
        assert engine.search(top_query, 10, pipeline="hybrid").candidates.product_ids == \
            engine.hybrid.search(engine.pipeline("full").analyze(Query(top_query)).text, 10).product_ids
    finally:
        engine.close()


def test_warm_scores_warms_only_the_cross_encoders_the_cascade_runs(warm_home: Settings, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ModelRegistry(warm_home.paths.models).register("student", tiny_reranker(tmp_path / "s", 1), base_model="minilm",
                                                   activate=True)
    code, out, err = run_cli(capsys, "warm-scores", "--queries", "2", "--depth", "4")
    assert code == 0, err
    report = json.loads(out)
    # student_depth 0 (the default): no search runs the student, so none of its scores would be read
    assert report["models"] == ["reranker:v1"] and report["pairs"] == 8
    assert report["skipped"] == ["student:v1 (not in the served cascade: ranking.student_depth is 0)"]

    monkeypatch.setenv("SHOPRANK_RANKING__STUDENT_DEPTH", "10")
    get_settings.cache_clear()
    report = json.loads(run_cli(capsys, "warm-scores", "--queries", "2", "--depth", "4")[1])
    assert report["models"] == ["student:v1", "reranker:v1"] and report["skipped"] == []
    assert (report["pairs"], report["scored"], report["cached"]) == (16, 8, 8)  # the teacher's 8 were stored


def test_warm_scores_explains_bad_input(warm_home: Settings, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(capsys, "warm-scores", "--queries", "0")
    assert code != 0 and "--queries 0" in err
    monkeypatch.setenv("SHOPRANK_SERVING__SCORE_STORE", "memory")
    get_settings.cache_clear()
    code, _, err = run_cli(capsys, "warm-scores", "--queries", "3")
    assert code != 0 and "SHOPRANK_SERVING__SCORE_STORE" in err


def test_warm_scores_keeps_the_pairs_it_warms_when_they_were_first_stored_a_ttl_ago(
        warm_home: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """A pair the warm finds in the store keeps the time it was first written: a prune after the warm would
    delete the head pairs it had just warmed, once they were stored longer ago than the TTL."""
    import sqlite3
    import time

    assert run_cli(capsys, "warm-scores", "--queries", "3", "--depth", "5")[0] == 0
    written = time.time() - (warm_home.serving.score_store_ttl_days + 1) * 86400  # a day more than the TTL ago
    with sqlite3.connect(warm_home.paths.score_store) as db:
        db.execute("UPDATE scores SET written = ?", (written,))
    db.close()
    second = json.loads(run_cli(capsys, "warm-scores", "--queries", "3", "--depth", "5")[1])
    assert second["pruned"] >= 15 and second["scored"] == 15  # the old pairs went, and were scored again
    third = json.loads(run_cli(capsys, "warm-scores", "--queries", "3", "--depth", "5")[1])
    assert (third["pruned"], third["scored"], third["cached"]) == (0, 0, 15)


def test_a_page_ranked_by_one_process_is_served_by_another(warm_home: Settings,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Two engines on one home (two server processes): the second serves the first's page from the
    shared store until results_ttl_s after it was ranked; another request, or the tier off, ranks."""
    monkeypatch.setenv("SHOPRANK_SERVING__RESULTS_TTL_S", "2")
    get_settings.cache_clear()
    settings = get_settings()
    first, second = open_engine(settings, warm_features=False), open_engine(settings, warm_features=False)
    try:
        ranked = first.search("cordless drill", 5, use_cache=True)
        assert not ranked.cached and not ranked.degraded
        assert first.caches.store is not None and first.caches.store.flush(5)
        served = second.search("cordless drill", 5, use_cache=True)
        assert served.cached
        assert served.candidates.product_ids == ranked.candidates.product_ids
        np.testing.assert_array_equal(served.candidates.score, ranked.candidates.score)
        pages = second.cache_stats()["results_store"]
        assert (pages.hits, pages.misses) == (1, 0)  # type: ignore[attr-defined]
        assert second.search("cordless drill", 5, use_cache=True).cached  # now from its own LRU
        assert not second.search("cordless drill", 6, use_cache=True).cached  # another request
        import time

        time.sleep(2.2)  # past results_ttl_s since the first engine ranked it: in either tier
        assert not second.search("cordless drill", 5, use_cache=True).cached
    finally:
        first.close()
        second.close()
    monkeypatch.setenv("SHOPRANK_SERVING__SHARED_RESULTS", "false")
    get_settings.cache_clear()
    alone = open_engine(get_settings(), warm_features=False)
    try:
        assert alone.shared_results is None
    finally:
        alone.close()


def test_a_night_without_logged_searches_warms_nothing_and_is_no_failure(  # type: ignore[no-untyped-def]
        tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        code, out, err = run_cli(capsys, "warm-scores", "--queries", "3")
    finally:
        get_settings.cache_clear()
    assert code == 0 and json.loads(out)["warmed"] == 0 and "no logged searches" in json.loads(out)["reason"], err


def test_a_cross_encoder_the_served_pipelines_skip_is_not_warmed_and_the_job_says_why() -> None:
    """A LambdaMART that does not read the teacher's score skips the teacher's stage (serving.pipelines): its
    scores would never be read, so warming leaves it out and says why (before: "train one", of a model that was
    registered and active). An experiment arm's LambdaMART that reads it runs the stage: then it is warmed."""
    from types import SimpleNamespace

    from core.errors import NotReady
    from core.registry import ServedModel
    from core.settings import Settings
    from ranking.cascade import Cascade
    from serving.warm import _store_scorers, warm_scores

    settings = Settings(ranking={"teacher_depth": 20})
    engine = SimpleNamespace(settings=settings, student=None, teacher=ServedModel("reranker", "v1", None))
    skipping = Cascade("full", first=None, stages=[SimpleNamespace(name="ltr"), SimpleNamespace(name="rules")])
    scorers, skipped = _store_scorers(engine, None, [skipping])  # type: ignore[arg-type]
    assert scorers == [] and skipped == ["reranker:v1 (not in a served cascade: no served LambdaMART reads its score)"]
    arm = Cascade("full", first=None, stages=[SimpleNamespace(name="teacher"), SimpleNamespace(name="ltr")])
    _, skipped = _store_scorers(engine, None, [skipping, arm])  # type: ignore[arg-type]
    assert skipped == ["reranker:v1 (not a registered model folder)"]  # it passed the check: the arm runs it
    engine.caches = SimpleNamespace(store=object())  # type: ignore[attr-defined]
    engine.pipeline = lambda name: skipping  # type: ignore[attr-defined]
    engine.pipelines = SimpleNamespace(full={None: skipping})  # type: ignore[attr-defined]
    with pytest.raises(NotReady, match=r"no served search reads a cross-encoder's scores.*reranker:v1 \(not in a"):
        warm_scores(engine, ["drill"], 10)  # type: ignore[arg-type]


def test_the_nightly_job_loads_the_lambdamart_versions_the_experiment_serves(  # type: ignore[no-untyped-def]
        warm_home: Settings, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An arm's (or the shadow's) LambdaMART may read a cross-encoder's score that the active one does not: the
    job opens the engine with them, so their pipelines count (before: the active LambdaMART's only)."""
    import serving.loading
    from serving.router import save_router_config

    save_router_config(warm_home.paths, None, "v7")  # a shadow version
    opened: list[tuple[str, ...]] = []

    def refuse(settings, ltr_versions=(), **kwargs):  # type: ignore[no-untyped-def]
        opened.append(tuple(ltr_versions))
        raise RuntimeError("stop here")

    monkeypatch.setattr(serving.loading, "open_engine", refuse)
    with pytest.raises(RuntimeError, match="stop here"):
        run_cli(capsys, "warm-scores", "--queries", "3")
    assert opened == [("v7",)]
