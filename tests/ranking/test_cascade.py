"""Cascade stages as pure functions of candidates: depth, order, tail, timings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from core.query import Query
from ranking.cascade import AdaptiveDepth, Cascade, ScoreStage
from retrieval.types import Candidates, Hits


def candidates(n: int) -> Candidates:
    hits = Hits.of(np.arange(n), np.linspace(1.0, 0.0, n))
    return Candidates.from_hits(hits, "rrf", [f"p{i}" for i in range(n)])


def reverse_score(query: str, docs: np.ndarray, deadline: float | None = None) -> np.ndarray:
    return docs.astype(np.float32)  # higher doc number = better: reverses the order


class ListRetriever:
    name = "first"

    def search(self, query: str, k: int) -> Candidates:
        return candidates(min(k, 20))

    def batch_search(self, queries: Sequence[str], k: int) -> list[Candidates]:
        return [self.search(q, k) for q in queries]

    def rank(self, query: str, docs: Sequence[int]) -> Candidates:
        return Candidates.from_hits(Hits.of(docs, np.zeros(len(docs))), "rrf", [f"p{d}" for d in docs])


def test_stage_reranks_only_its_depth_and_keeps_the_tail() -> None:
    out = ScoreStage("teacher", reverse_score, depth=3)(Query("q"), candidates(6))
    assert out.product_ids == ["p2", "p1", "p0", "p3", "p4", "p5"]
    assert out.stage == "teacher"
    assert out.ranks["teacher"].tolist() == [1, 2, 3, 0, 0, 0]
    assert np.isnan(out.scores["teacher"][3:]).all()
    assert out.ranks["rrf"].tolist() == [3, 2, 1, 4, 5, 6]


def test_stage_deeper_than_list_and_zero_depth() -> None:
    assert ScoreStage("t", reverse_score, depth=50)(Query("q"), candidates(4)).product_ids == ["p3", "p2", "p1", "p0"]
    assert ScoreStage("t", reverse_score, depth=0)(Query("q"), candidates(4)).product_ids == ["p0", "p1", "p2", "p3"]


def test_cascade_chains_stages_and_times_them() -> None:
    student = ScoreStage("student", reverse_score, depth=10)        # p9..p0, then p10..p19
    teacher = ScoreStage("teacher", lambda q, d, t: -d.astype(np.float32), depth=3)  # lowest doc first among top 3
    cascade = Cascade("cascade", ListRetriever(), [student, teacher], first_stage_depth=20)
    ranked = cascade.run("q", 5)
    assert ranked.candidates.product_ids[:4] == ["p7", "p8", "p9", "p6"]
    assert len(ranked.candidates) == 20
    assert set(ranked.timings) == {"first_stage", "student", "teacher"}
    rows = list(ranked.candidates.top(1))
    assert rows[0].ranks == {"rrf": 8, "student": 3, "teacher": 1}
    ranked_given = cascade.rank("q", [5, 1, 3])
    assert ranked_given.product_ids == ["p1", "p3", "p5"]


def test_slow_or_failing_stages_are_skipped_and_named() -> None:
    import time

    from ranking.cross_encoder import StageTimeout

    def slow(query: str, docs: np.ndarray, deadline: float | None) -> np.ndarray:
        assert deadline is not None and deadline - time.monotonic() <= 0.05 + 1e-3
        raise StageTimeout("too slow")

    def broken(query: str, docs: np.ndarray, deadline: float | None) -> np.ndarray:
        raise RuntimeError("model file vanished")

    stages = [ScoreStage("student", reverse_score, 10), ScoreStage("teacher", slow, 3), ScoreStage("ltr", broken, 3)]
    cascade = Cascade("c", ListRetriever(), stages, first_stage_depth=20, budgets={"teacher": 0.05})
    ranked = cascade.run(Query("q", deadline=time.monotonic() + 5), 5)
    assert ranked.candidates.product_ids[:3] == ["p9", "p8", "p7"]  # the student's order stands
    assert ranked.degraded == ["teacher: timeout", "ltr: error RuntimeError"]
    spent = cascade.run(Query("q", deadline=time.monotonic() - 1), 5)
    assert spent.degraded == [f"{s}: skipped, request budget spent" for s in ("student", "teacher", "ltr")]
    assert spent.candidates.product_ids[:3] == ["p0", "p1", "p2"]


def test_an_overloaded_search_sheds_the_model_stages_but_keeps_cheap_ones_and_rules() -> None:
    from ranking.cascade import Noted

    def rules(query: Query, c: Candidates) -> Noted:
        return Noted(c, {c.product_ids[0]: ["pinned(1)"]})

    rules.name, rules.skippable = "rules", False  # type: ignore[attr-defined]
    cheap = ScoreStage("ltr", reverse_score, depth=5, costly=False)
    cascade = Cascade("c", ListRetriever(), [ScoreStage("teacher", reverse_score, depth=5), cheap, rules],
                      first_stage_depth=20)
    shed = cascade.run(Query("q", shed=True), 5)
    assert shed.degraded == ["teacher: shed, overload"] and "teacher" not in shed.candidates.scores
    assert shed.candidates.stage == "ltr" and shed.notes == {shed.candidates.product_ids[0]: ["pinned(1)"]}
    assert cascade.run(Query("q"), 5).degraded == []


def cached_model(calls: list[int]):  # type: ignore[no-untyped-def]
    """A cross-encoder stage's (score, cached) pair over a model behind an LRU (CachedScorer); the
    model appends how many pairs it scored to ``calls`` and scores product ``pN`` N (reversing the order)."""
    from core.cache import LRUCache
    from ranking.cache import CachedScorer

    class Model:
        def score(self, query: str, texts: Sequence[str], deadline: float | None = None) -> np.ndarray:
            calls.append(len(texts))
            return np.array([float(t[1:]) for t in texts], dtype=np.float32)

    scorer = CachedScorer(Model(), LRUCache(100))

    def score(query: str, docs: np.ndarray, deadline: float | None) -> np.ndarray:
        return scorer.score_products(query, [f"p{d}" for d in docs], [f"t{d}" for d in docs], deadline)

    def cached(query: str, docs: np.ndarray) -> np.ndarray | None:
        return scorer.cached_only(query, [f"p{d}" for d in docs], [f"t{d}" for d in docs])

    return score, cached


def test_an_overloaded_search_still_uses_cached_scores_and_never_the_model() -> None:
    calls: list[int] = []
    score, cached = cached_model(calls)

    cascade = Cascade("c", ListRetriever(), [ScoreStage("teacher", score, depth=5, cached=cached)],
                      first_stage_depth=20)
    cold = cascade.run(Query("q", shed=True), 5)  # nothing cached: shed, the model never runs
    assert cold.degraded == ["teacher: shed, overload"] and calls == []
    full = cascade.run(Query("q"), 5)
    assert full.degraded == [] and calls == [5] and full.candidates.product_ids[:5] == ["p4", "p3", "p2", "p1", "p0"]
    warm = cascade.run(Query("q", shed=True), 5)  # all five pairs cached: the full ranking, no model call
    assert warm.degraded == [] and calls == [5] and warm.candidates.product_ids == full.candidates.product_ids
    assert "teacher" in warm.timings
    other = cascade.run(Query("another query", shed=True), 5)  # another query's pairs are not cached
    assert other.degraded == ["teacher: shed, overload"] and calls == [5]


def test_an_overloaded_search_scores_only_the_shed_depth_when_not_all_cached_and_says_so() -> None:
    """A shed search whose scores are not all cached has its top shed_depth scored, and its degraded list says the
    stage ran shallow (the page is then not cached: a search made once the load is gone ranks it in full); one
    whose adaptive depth is no deeper than the shed depth is ranked as it would be anyway, and is not degraded."""
    calls: list[int] = []

    def score(query: str, docs: np.ndarray, deadline: float | None) -> np.ndarray:
        calls.append(len(docs))
        return docs.astype(np.float32)  # reverses the order

    def nothing_cached(query: str, docs: np.ndarray) -> np.ndarray | None:
        return None

    stage = ScoreStage("teacher", score, depth=5, cached=nothing_cached, shed_depth=2)
    cascade = Cascade("c", ListRetriever(), [stage], first_stage_depth=20)
    shed = cascade.run(Query("q", shed=True), 5)
    assert calls == [2] and shed.degraded == ["teacher: shallow (top 2), overload"]  # the top 2, not skipped
    assert shed.candidates.product_ids[:3] == ["p1", "p0", "p2"] and "teacher" in shed.timings
    assert cascade.run(Query("q"), 5).candidates.product_ids[:5] == ["p4", "p3", "p2", "p1", "p0"]  # not shed
    assert calls == [2, 5]
    assert stage.under_load() is not None and replace(stage, shed_depth=0).under_load() is None
    confident = replace(stage, adaptive=AdaptiveDepth(confident=1, threshold=0.0))  # always confident: top 1
    as_usual = Cascade("c", ListRetriever(), [confident], first_stage_depth=20).run(Query("q", shed=True), 5)
    assert calls[-1] == 1 and as_usual.degraded == []  # never deeper than its adaptive depth, which it scored


def test_a_degrade_budget_skips_the_model_only_where_it_would_run() -> None:
    calls: list[int] = []
    asked: list[bool] = []
    score, cached = cached_model(calls)

    def budget(answer: bool):  # type: ignore[no-untyped-def]
        def skip() -> bool:
            asked.append(answer)
            return answer
        return skip

    stage = ScoreStage("teacher", score, depth=5, cached=cached, shed_depth=2)
    cascade = Cascade("c", ListRetriever(), [stage], first_stage_depth=20)
    cold = cascade.run(Query("q", skip_model=budget(True)), 5)  # not shed, but the budget lets it skip
    assert cold.degraded == ["teacher: shed, budget"] and calls == [] and asked == [True]
    assert cold.candidates.product_ids[:5] == ["p0", "p1", "p2", "p3", "p4"]  # the previous order
    full = cascade.run(Query("q", skip_model=budget(False)), 5)  # no token left: the model at full depth
    assert full.degraded == [] and calls == [5] and full.candidates.product_ids[:5] == ["p4", "p3", "p2", "p1", "p0"]
    warm = cascade.run(Query("q", skip_model=budget(True)), 5)  # every pair cached: no model to skip
    assert warm.degraded == [] and calls == [5] and len(asked) == 2 and warm.candidates.product_ids == full.candidates.product_ids
    shed = cascade.run(Query("other", shed=True, skip_model=budget(False)), 5)  # shed, no token: its top 2
    assert shed.degraded == ["teacher: shallow (top 2), overload"] and calls == [5, 2]


def test_the_degrade_budget_skips_at_most_its_share_and_only_beside_another_search() -> None:
    from api.admission import Admission

    admission = Admission(max_in_flight=0, shed_at=1, skip_share=0.25)
    for _ in range(20):
        with admission.enter():  # alone in the process: never skipped, however many tokens
            assert admission.skip_model() is False
    skipped = 0
    with admission.enter():
        for _ in range(400):
            with admission.enter():
                skipped += admission.skip_model()
    assert 100 <= skipped <= 100 + Admission.BURST  # a quarter of the 400, plus at most the tokens saved before
    off = Admission(max_in_flight=0, shed_at=1)
    with off.enter(), off.enter():
        assert off.skip_model() is False
    # searches refused at max_in_flight were never admitted: they add nothing to the budget
    import pytest

    from core.errors import Overloaded

    capped = Admission(max_in_flight=1, shed_at=1, skip_share=0.25)
    with capped.enter():
        for _ in range(40):
            with pytest.raises(Overloaded), capped.enter(wait_s=0):
                pass
        assert capped._tokens == 0.25  # the one admitted search's share only


def test_admission_sheds_above_its_threshold_and_caps_in_flight() -> None:
    import threading
    import time

    from api.admission import Admission

    admission = Admission(max_in_flight=0, shed_at=2)
    with admission.enter() as a, admission.enter() as b, admission.enter() as c:
        assert (a, b, c) == (False, False, True) and admission.in_flight == 3
    assert admission.in_flight == 0
    capped = Admission(max_in_flight=1, shed_at=10)
    entered = threading.Event()
    with capped.enter():
        waiter = threading.Thread(target=lambda: capped.enter().__enter__() and None or entered.set())
        waiter.start()
        assert not entered.wait(0.1)  # the second search waits for the slot
        assert capped.in_flight == 2  # and counts as load while it waits
    assert entered.wait(2)
    queued = Admission(max_in_flight=1, shed_at=1)  # the cap at the shed limit: the queue still sheds
    sheds: list[bool] = []
    with queued.enter():
        behind = threading.Thread(target=lambda: sheds.append(queued.enter().__enter__()))
        behind.start()
        time.sleep(0.1)
    behind.join(2)
    assert sheds == [True]


def test_adaptive_depth_scores_less_where_the_first_stage_agrees() -> None:
    from ranking.cascade import AdaptiveDepth, first_stage_agreement

    docs = np.arange(20)
    agree = Candidates(docs, [f"P{i}" for i in docs], "rrf", {"rrf": np.linspace(1, 0, 20)},
                       {"rrf": np.arange(1, 21), "bm25": np.arange(1, 21), "dense": np.arange(1, 21)})
    dense_far = np.r_[np.arange(11, 21), np.arange(1, 11)]  # dense puts the fused top 10 at 11..20
    differ = Candidates(docs, agree.product_ids, "rrf", agree.scores,
                        {"rrf": np.arange(1, 21), "bm25": np.arange(1, 21), "dense": dense_far})
    assert first_stage_agreement(agree) == 1.0 and first_stage_agreement(differ) == 0.0
    rule = AdaptiveDepth(confident=5, threshold=0.7)
    assert rule(agree, 20) == 5 and rule(differ, 20) == 20 and rule(agree, 3) == 3
    seen = []
    stage = ScoreStage("teacher", lambda q, d, deadline: (seen.append(len(d)), -np.arange(len(d)))[1], 20,
                       adaptive=rule)
    stage(Query("drill"), agree)
    stage(Query("drill"), differ)
    assert seen == [5, 20]


def test_every_adaptive_stage_decides_its_depth_on_the_first_stages_fused_top_10() -> None:
    """BM25 and dense agree on the fused top 10 (confident) and on none of the rows below it, which a student
    lifts to the top: the teacher behind it still scores its confident depth, decided on the fused top 10 the
    settings describe, as the student did (before, it decided on the student's order: its full depth)."""
    from ranking.cascade import first_stage_agreement

    class Agreeing(ListRetriever):
        def search(self, query: str, k: int) -> Candidates:
            listed = candidates(20)
            sources = np.r_[np.arange(1, 11), np.zeros(10, dtype=np.int64)]  # rows 11..20: neither source's top
            return replace(listed, ranks={**listed.ranks, "bm25": sources, "dense": sources})

    scored: dict[str, list[int]] = {"student": [], "teacher": []}

    def stage(name: str, depth: int, score) -> ScoreStage:  # type: ignore[no-untyped-def]
        def counted(query: str, docs: np.ndarray, deadline: float | None) -> np.ndarray:
            scored[name].append(len(docs))
            return score(query, docs, deadline)
        return ScoreStage(name, counted, depth, adaptive=AdaptiveDepth(confident=depth // 2, threshold=0.5))

    first = Agreeing().search("q", 20)
    assert first_stage_agreement(first) == 1.0 and first_stage_agreement(first.take(np.arange(19, -1, -1))) == 0.0
    student = stage("student", 40, reverse_score)  # confident: its top 20 (every row), the deepest rows first
    teacher = stage("teacher", 10, lambda q, d, t: -d.astype(np.float32))
    ranked = Cascade("c", Agreeing(), [student, teacher], first_stage_depth=20).run("q", 20).candidates
    assert scored == {"student": [20], "teacher": [5]}
    assert ranked.product_ids[:5] == ["p15", "p16", "p17", "p18", "p19"]  # the student's top 5, by the teacher
