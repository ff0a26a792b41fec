"""The pipelines the engine builds from the settings: which stages, at which depths."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from core.query import Query
from core.registry import ServedModel
from core.settings import Settings
from ranking.cascade import Noted, ScoreStage
from ranking.rules import RulesConfig, RulesStage
from retrieval.index import ProductIndex
from retrieval.types import Candidates
from serving.pipelines import Models, Pipelines, build_pipelines, ranked_by


class AgreeingRetriever:
    """20 candidates whose BM25 and dense ranks agree (confident) or not, as set."""

    name = "hybrid"

    def __init__(self) -> None:
        self.agree = True

    def search(self, query: str, k: int) -> Candidates:
        docs = np.arange(20)
        dense = np.arange(1, 21) if self.agree else np.r_[np.arange(11, 21), np.arange(1, 11)]
        return Candidates(docs, [f"P{i}" for i in docs], "rrf", {"rrf": np.linspace(1, 0, 20, dtype=np.float32)},
                          {"rrf": np.arange(1, 21), "bm25": np.arange(1, 21), "dense": dense})

    def batch_search(self, queries: Sequence[str], k: int) -> list[Candidates]:
        return [self.search(q, k) for q in queries]


def test_student_and_teacher_each_take_their_own_adaptive_depth() -> None:
    first = AgreeingRetriever()
    scored: dict[str, list[int]] = {"student": [], "teacher": []}

    def stage(name: str, served: ServedModel, depth: int) -> ScoreStage:
        def score(query: str, docs: np.ndarray, deadline: float | None = None) -> np.ndarray:
            scored[name].append(len(docs))
            return -np.arange(len(docs), dtype=np.float32)
        return ScoreStage(name, score, depth)

    models = Models(teacher=ServedModel("reranker", "v1", None), student=ServedModel("student", "v1", None))
    rules = RulesStage(RulesConfig(), lambda c: None, depth=0)  # type: ignore[arg-type, return-value]
    bm25 = SimpleNamespace(index=SimpleNamespace(analyzer=None))

    def run(**ranking: int) -> dict[str, list[int]]:
        settings = Settings(ranking={"student_depth": 20, "teacher_depth": 10, **ranking})
        pipelines = build_pipelines(bm25, first, first, models, rules, settings, stage)  # type: ignore[arg-type]
        for name in scored:
            scored[name].clear()
        for agree in (True, False):
            first.agree = agree
            pipelines.named["cascade"].run(Query("drill"), 10)
        return {name: list(sizes) for name, sizes in scored.items()}

    # confident first stage (BM25 and dense agree): each stage scores its confident depth; else its full depth
    assert run(student_depth_confident=5, teacher_depth_confident=3) == {"student": [5, 20], "teacher": [3, 10]}
    assert run(student_depth_confident=0, teacher_depth_confident=0) == {"student": [20, 20], "teacher": [10, 10]}


class ReadsOnly:
    """A LambdaMART stand-in that reads only the scores it is given."""

    names = ["bm25", "dense", "student", "teacher"]

    def __init__(self, *read: str) -> None:
        self.read = set(read)

    def reads(self, name: str) -> bool:
        return name in self.read


# an active LambdaMART (v2) that never read the teacher's score, and another (v3) that reads both scores
READERS = Models(teacher=ServedModel("reranker", "v1", None), student=ServedModel("student", "v4", None),
                 ltr=ServedModel("ltr", "v2", ReadsOnly("student")),
                 ltr_versions=(ServedModel("ltr", "v3", ReadsOnly("student", "teacher")),))


def readers_pipelines(ltr_depth: int = 200) -> Pipelines:
    """The pipelines built for :data:`READERS`, every cross-encoder stage scoring zeros."""
    rules = RulesStage(RulesConfig(), lambda c: None, depth=0)  # type: ignore[arg-type, return-value]
    bm25 = SimpleNamespace(index=SimpleNamespace(analyzer=None))
    first = AgreeingRetriever()
    settings = Settings(ranking={"student_depth": 20, "teacher_depth": 10, "ltr_depth": ltr_depth})
    return build_pipelines(bm25, first, first, READERS, rules, settings, lambda name, served, depth:  # type: ignore[arg-type]
                           ScoreStage(name, lambda q, d, t=None: np.zeros(len(d)), depth))


def test_a_pipeline_reads_its_first_stage_at_least_as_deep_as_its_deepest_stage() -> None:
    """A stage deeper than ``ranking.first_stage_depth`` re-ranks the same rows whichever page is asked for: a
    shallow page's read holds them all, as a deep page's does."""
    first = AgreeingRetriever()

    def stage(name: str, served: ServedModel, depth: int) -> ScoreStage:
        return ScoreStage(name, lambda query, docs, deadline=None: np.zeros(len(docs), np.float32), depth)

    models = Models(teacher=ServedModel("reranker", "v1", None))
    rules = RulesStage(RulesConfig(), lambda c: None, depth=30)  # type: ignore[arg-type, return-value]
    bm25 = SimpleNamespace(index=SimpleNamespace(analyzer=None))
    settings = Settings(ranking={"first_stage_depth": 10, "teacher_depth": 50, "rerank_depth": 40})
    built = build_pipelines(bm25, first, first, models, rules, settings, stage)  # type: ignore[arg-type]
    depths = {name: built.named[name].first_stage_depth for name in ("hybrid", "rerank", "cascade", "full")}
    assert depths == {"hybrid": 0, "rerank": 40, "cascade": 50, "full": 50}


def test_cross_encoder_stages_lambdamart_never_reads_are_left_out_of_its_pipelines() -> None:
    def names(ltr_depth: int) -> dict[str, list[str]]:
        built = readers_pipelines(ltr_depth)
        out = {f"full {v}": [s.name for s in p.stages] for v, p in built.full.items() if v}
        return out | {name: [s.name for s in built.named[name].stages] for name in ("cascade", "ltr", "full")}

    # v2 never read the teacher's score: its pipelines skip the teacher; v3 reads both; the cascade keeps both
    assert names(200) == {"full v2": ["student", "ltr", "rules"], "full v3": ["student", "teacher", "ltr", "rules"],
                          "cascade": ["student", "teacher"], "ltr": ["student", "ltr"],
                          "full": ["student", "ltr", "rules"]}
    # a teacher deeper than LambdaMART orders rows LambdaMART leaves as they are: it stays
    assert names(5)["ltr"] == ["student", "teacher", "ltr"]


def test_a_student_that_picked_the_teachers_rows_in_training_is_run_for_them() -> None:
    """A LambdaMART that reads the teacher's score but not the student's, trained with the student served: the
    teacher scored the top of the student's order in its lists, so the student runs before the teacher (before:
    it was skipped, and the teacher scored the top of the fused list). Trained without a student run (or not
    known), the student stays skipped: the teacher scored the top of the fused list then."""
    def stages(trained_with: dict[str, object]) -> list[str]:
        ltr = ServedModel("ltr", "v5", ReadsOnly("teacher"), trained_with)
        models = Models(teacher=READERS.teacher, student=READERS.student, ltr=ltr)
        rules = RulesStage(RulesConfig(), lambda c: None, depth=0)  # type: ignore[arg-type, return-value]
        first = AgreeingRetriever()
        settings = Settings(ranking={"student_depth": 20, "teacher_depth": 10, "ltr_depth": 200})
        bm25 = SimpleNamespace(index=SimpleNamespace(analyzer=None))
        built = build_pipelines(bm25, first, first,  # type: ignore[arg-type]
                                models, rules, settings, lambda name, served, depth:  # type: ignore[arg-type]
                                ScoreStage(name, lambda q, d, t=None: np.zeros(len(d)), depth))
        return [s.name for s in built.named["full"].stages]

    trained = {"encoder": "e", "reranker": "v1", "student": "v4"}
    assert stages(trained | {"student_depth": 20}) == ["student", "teacher", "ltr", "rules"]
    # the student loaded in training but not run (student_depth 0, the default), or not known: it stays skipped
    assert stages(trained | {"student_depth": 0}) == stages(trained) == stages({}) == ["teacher", "ltr", "rules"]


def test_a_search_names_the_models_its_pipeline_runs() -> None:
    built = readers_pipelines()
    assert ranked_by(built.named["hybrid"], READERS) == {}
    assert ranked_by(built.named["rerank"], READERS) == {"reranker": "v1"}
    assert ranked_by(built.named["cascade"], READERS) == {"student": "v4", "reranker": "v1"}
    # v2's pipelines skip the teacher, so their searches do not name it
    assert ranked_by(built.named["ltr"], READERS) == {"student": "v4", "ltr": "v2"}
    assert ranked_by(built.named["full"], READERS) == {"student": "v4", "ltr": "v2"}
    assert ranked_by(built.full["v3"], READERS) == {"student": "v4", "reranker": "v1", "ltr": "v3"}


class Predicting(ReadsOnly):
    def predict(self, rows: np.ndarray) -> np.ndarray:
        return np.zeros(len(rows), np.float32)


@pytest.mark.parametrize("teacher, teacher_depth", [(None, 10), (ServedModel("reranker", "v1", None), 0)])
def test_a_lambdamart_reading_a_score_no_stage_serves_is_warned_about_at_build(
        teacher: ServedModel | None, teacher_depth: int, caplog: pytest.LogCaptureFixture) -> None:
    """With the teacher off (not loaded, or ``teacher_depth`` 0), a LambdaMART that splits on its score gets it
    missing on every row: the build warns, naming it. A search is not marked degraded: the setting, the same
    for every search, is at fault, and its page stays cacheable. Its student score is served: nothing is said."""
    models = Models(teacher=teacher, student=ServedModel("student", "v4", None),
                    ltr=ServedModel("ltr", "v3", Predicting("student", "teacher")))
    rules = RulesStage(RulesConfig(), lambda c: None, depth=0)  # type: ignore[arg-type, return-value]
    bm25 = SimpleNamespace(index=SimpleNamespace(analyzer=None))
    first = AgreeingRetriever()
    settings = Settings(ranking={"student_depth": 20, "teacher_depth": teacher_depth})
    def stage(name: str, served: ServedModel, depth: int) -> ScoreStage:
        return ScoreStage(name, lambda query, docs, deadline=None: np.zeros(len(docs), np.float32), depth)

    with caplog.at_level(logging.WARNING, logger="serving.pipelines"):
        built = build_pipelines(bm25, first, first, models, rules, settings, stage)  # type: ignore[arg-type]
    assert "ltr v3 reads the teacher score" in caplog.text and "student score" not in caplog.text
    rows = SimpleNamespace(features=lambda query, head: (np.zeros((len(head), 4), np.float32), None))
    out = replace(built.ltr_stages[None], featurizer=rows)(Query("drill"), first.search("drill", 20))  # type: ignore[arg-type]
    assert not isinstance(out, Noted)


def test_a_lambdamart_whose_scores_are_all_served_is_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="serving.pipelines"):
        readers_pipelines()
    assert "no such stage is served" not in caplog.text


def test_a_role_asked_for_by_several_pipelines_gets_one_micro_batcher() -> None:
    import threading

    from core.cache import LRUCache
    from serving.engine import Caches, _CrossEncoderStages

    def batchers() -> int:
        return sum(t.name == "micro-batcher" and t.is_alive() for t in threading.enumerate())

    from ranking.cache import TierCounts

    caches = Caches(results=LRUCache(0), scores={"reranker": LRUCache(10)}, query_vectors=None,
                    store_tiers={"reranker": TierCounts()})
    index = SimpleNamespace(product_id=str, title=str)
    stages = _CrossEncoderStages(index, caches, Settings())  # type: ignore[arg-type]
    before = batchers()
    teacher = ServedModel("reranker", "v1", SimpleNamespace(score=lambda query, titles: np.zeros(len(titles))))
    for _ in range(3):  # the rerank pipeline and the cascade both ask for the teacher's stage
        stages("teacher", teacher, 10)
    # before: a batcher (and its thread, and its hold on the model) per call, the extras never stopped
    assert len(stages.batchers) == 1 and batchers() == before + 1
    stages.batchers["reranker"].close()


def test_a_lambdamart_ltr_depth_0_turns_off_is_named_with_the_setting_when_asked_for(
        fake_index: ProductIndex, settings: Settings) -> None:
    """With ``ranking.ltr_depth`` 0 a registered LambdaMART is loaded (``versions`` names it) but no pipeline runs
    it: the ``ltr`` pipeline and a search asking for its version say so and what to set (before: "not
    registered" and "not loaded"). A version never loaded is still said to be not loaded."""
    from core.errors import NotReady
    from serving.engine import assemble
    from tests.fakes import HashingEncoder

    off = settings.model_copy(update={"ranking": settings.ranking.model_copy(update={"ltr_depth": 0})})
    engine = assemble(fake_index, HashingEncoder(), off, Models(ltr=ServedModel("ltr", "v7", ReadsOnly())))
    try:
        assert engine.versions["ltr"] == "v7" and engine.search("drill", 3).candidates.product_ids
        for ask in (lambda: engine.pipeline("ltr"), lambda: engine.search("drill", 3, ltr="v7")):
            with pytest.raises(NotReady, match=r"LambdaMART v7 is loaded but not served: ranking\.ltr_depth is 0.*"
                                               r"set SHOPRANK_RANKING__LTR_DEPTH > 0"):
                ask()
        with pytest.raises(NotReady, match="LambdaMART v8 is not loaded"):
            engine.search("drill", 3, ltr="v8")
    finally:
        engine.close()
