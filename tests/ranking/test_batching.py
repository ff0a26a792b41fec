"""The micro-batcher: one model call for concurrent requests, and its backlog gate."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from core.query import Query
from ranking.batching import MicroBatcher
from ranking.cascade import Cascade, ScoreStage
from ranking.cross_encoder import StageShed, StageTimeout
from tests.ranking.test_cascade import ListRetriever


class SlowScorer:
    """Scores a pair by its text length; each call sleeps ``per_pair`` seconds a pair."""

    def __init__(self, per_pair: float = 0.0) -> None:
        self.per_pair = per_pair
        self.calls: list[int] = []
        self.release = threading.Event()
        self.release.set()

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        self.release.wait(5)
        self.calls.append(len(texts))
        time.sleep(self.per_pair * len(texts))
        return np.array([len(t) for t in texts], dtype=np.float32)


def test_concurrent_requests_share_a_call_and_each_gets_its_scores() -> None:
    scorer = SlowScorer()
    scorer.release.clear()  # hold the first call until the others are queued
    batcher = MicroBatcher(scorer, max_pairs=100, max_wait=0.05)
    results: dict[int, np.ndarray] = {}

    def ask(i: int) -> None:
        results[i] = batcher.score(f"q{i}", ["x" * (i + 1)] * (i + 1))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    scorer.release.set()
    for t in threads:
        t.join(5)
    batcher.close()
    assert {i: r.tolist() for i, r in results.items()} == {i: [float(i + 1)] * (i + 1) for i in range(4)}
    assert sum(scorer.calls) == 10 and len(scorer.calls) < 4  # fewer model calls than requests
    assert batcher.pending == 0 and batcher.rate > 0


def test_a_request_behind_a_long_backlog_is_shed_at_once_and_the_backlog_drains() -> None:
    scorer = SlowScorer(per_pair=0.01)  # 100 pairs a second
    batcher = MicroBatcher(scorer, max_pairs=10, max_wait=0.0, shed_wait=0.12)
    assert batcher.expected_wait(10) == 0.0  # no rate learnt yet: nothing is shed
    batcher.score("warm", ["a"] * 10)
    assert batcher.rate == pytest.approx(100, rel=0.5)
    scorer.release.clear()
    worker = threading.Thread(target=batcher.score, args=("busy", ["b"] * 10))
    worker.start()
    time.sleep(0.05)
    assert batcher.pending == 10  # queued or running: 10 pairs ahead, ~0.1 s
    # the running batch counts for what is left of it: 0.05 s in, ~5 of its pairs, and 10 more
    assert batcher.expected_wait(10) == pytest.approx(0.15, abs=0.04)
    started = time.perf_counter()
    with pytest.raises(StageShed, match="10 pairs ahead"):
        batcher.score("late", ["c"] * 10)  # ~15 pairs / 100 per second = ~0.15 s > 0.12 s
    assert time.perf_counter() - started < 0.05 and batcher.shed == 1
    scorer.release.set()
    worker.join(5)
    assert batcher.pending == 0
    assert batcher.score("after", ["e"] * 10).tolist() == [1.0] * 10  # an empty backlog serves again
    batcher.close()


@pytest.mark.parametrize("past_deadline", [True, False])
def test_a_request_that_would_miss_its_deadline_is_shed_at_once_unless_turned_off(past_deadline: bool) -> None:
    scorer = SlowScorer(per_pair=0.01)  # 100 pairs a second
    batcher = MicroBatcher(scorer, max_pairs=10, max_wait=0.0, shed_past_deadline=past_deadline)
    batcher.score("warm", ["a"] * 10)
    scorer.release.clear()
    worker = threading.Thread(target=batcher.score, args=("busy", ["b"] * 10))
    worker.start()
    time.sleep(0.05)
    # 20 pairs at ~100 a second: ~0.2 s, so a deadline 1 s away is met and one 0.1 s away is not
    threading.Timer(0.3, scorer.release.set).start()
    assert batcher.score("in time", ["c"] * 10, deadline=time.monotonic() + 1.0).tolist() == [1.0] * 10
    scorer.release.clear()
    worker = threading.Thread(target=batcher.score, args=("busy", ["b"] * 10))
    worker.start()
    time.sleep(0.05)
    started = time.perf_counter()
    if past_deadline:
        with pytest.raises(StageShed, match="ms to the deadline"):
            batcher.score("late", ["d"] * 10, deadline=time.monotonic() + 0.1)
        assert time.perf_counter() - started < 0.05 and batcher.shed == 1
    else:
        with pytest.raises(StageTimeout):
            batcher.score("late", ["d"] * 10, deadline=time.monotonic() + 0.1)
        assert time.perf_counter() - started >= 0.1 and batcher.shed == 0
    scorer.release.set()
    worker.join(5)
    batcher.close()
    assert batcher.pending == 0


def test_a_shed_stage_keeps_the_previous_order_and_says_why() -> None:
    def refused(query: str, docs: np.ndarray, deadline: float | None) -> np.ndarray:
        raise StageShed("40 pairs ahead")

    cascade = Cascade("c", ListRetriever(), [ScoreStage("teacher", refused, depth=5)], first_stage_depth=20)
    ranked = cascade.run(Query("q"), 5)
    assert ranked.degraded == ["teacher: shed, queue"]
    assert ranked.candidates.product_ids[:3] == ["p0", "p1", "p2"] and "teacher" not in ranked.candidates.scores
