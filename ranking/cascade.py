"""Tiered re-ranking: first stage -> student -> teacher -> top k.

Each stage is a pure function ``(query, Candidates) -> Candidates``: it scores
the first ``depth`` candidates in their current order, re-orders them by its
score (recorded as its own column), and leaves the rest behind them in the
order they came. So any stage can be timed, skipped or replaced, and a list is
always complete (retrieval-mode evaluation reads 1,000 deep).

Default depths follow the settings ``ranking.k1`` (first stage), ``student_depth``
and ``teacher_depth``; see README for what they cost on a 2-core CPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from retrieval.hybrid import Retriever
from ranking.cross_encoder import StageTimeout
from ranking.rules import Filters
from retrieval.types import Candidates

@dataclass(frozen=True)
class Query:
    """What a stage may know about the request: the text, who asks, by when.

    ``deadline`` is a ``time.monotonic()`` value; stages that can be cancelled
    (the cross-encoders) stop there and raise :class:`StageTimeout`.
    """

    text: str
    user_id: str | None = None
    filters: Filters = field(default_factory=Filters)
    deadline: float | None = None


Stage = Callable[[Query, Candidates], Candidates]
logger = logging.getLogger(__name__)


def rerank_head(candidates: Candidates, depth: int, stage: str, scores: np.ndarray) -> Candidates:
    """Re-order the first ``depth`` rows by ``scores``; the rest follow unchanged."""
    reordered = candidates.top(depth).reorder(stage, scores)
    if len(candidates) <= depth:
        return reordered
    return reordered.then(candidates.take(slice(depth, None)))


@dataclass(frozen=True)
class ScoreStage:
    """Re-rank the top ``depth`` candidates by ``score(query text, docs)``."""

    name: str
    score: Callable[[str, np.ndarray, float | None], np.ndarray]
    depth: int

    def __call__(self, query: Query, candidates: Candidates) -> Candidates:
        if self.depth <= 0 or not len(candidates):
            return candidates
        head = candidates.top(self.depth)
        return rerank_head(candidates, self.depth, self.name, self.score(query.text, head.docs, query.deadline))


def cross_encoder_stage(name: str, scorer, titles: Callable[[np.ndarray], list[str]], depth: int) -> ScoreStage:  # type: ignore[no-untyped-def]
    """A stage scoring (query, product title) pairs with a cross-encoder."""
    return ScoreStage(name=name, depth=depth,
                      score=lambda query, docs, deadline: scorer.score(query, titles(docs), deadline))


@dataclass(frozen=True)
class Ranked:
    """A cascade's output, the seconds each stage took, and stages skipped (why)."""

    candidates: Candidates
    timings: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Cascade:
    """A first-stage retriever followed by re-ranking stages.

    Attributes:
        name: Pipeline name (``rerank``, ``cascade``, ...).
        first: The first-stage retriever.
        stages: Re-ranking stages, applied in order.
        k1: Candidates requested from the first stage.
    """

    name: str
    first: Retriever
    stages: Sequence[Stage]
    k1: int = 1000
    budgets: dict[str, float] = field(default_factory=dict)

    def _apply(self, query: Query, candidates: Candidates, timings: dict[str, float]) -> Ranked:
        """Run the stages; a stage that times out or fails is skipped (the previous
        order stands) and named in ``degraded``; never an exception for a slow model."""
        degraded: list[str] = []
        for stage in self.stages:
            name = getattr(stage, "name", "stage")
            now = time.monotonic()
            if query.deadline is not None and now >= query.deadline:
                degraded.append(f"{name}: skipped, request budget spent")
                continue
            limits = [d for d in (query.deadline, now + self.budgets[name] if name in self.budgets else None) if d]
            started = time.perf_counter()
            try:
                candidates = stage(replace(query, deadline=min(limits) if limits else None), candidates)
            except StageTimeout:
                degraded.append(f"{name}: timeout")
            except Exception as err:  # noqa: BLE001 - serve the previous order, say why
                logger.exception("stage %s failed", name)
                degraded.append(f"{name}: error {type(err).__name__}")
            timings[name] = time.perf_counter() - started
        return Ranked(candidates, timings, degraded)

    def run(self, query: Query | str, k: int) -> Ranked:
        """Search and re-rank, with per-stage timings."""
        query = query if isinstance(query, Query) else Query(query)
        started = time.perf_counter()
        candidates = self.first.search(query.text, max(k, self.k1))
        return self._apply(query, candidates, {"first_stage": time.perf_counter() - started})

    def search(self, query: str, k: int) -> Candidates:
        return self.run(query, k).candidates

    def batch_search(self, queries: Sequence[str], k: int) -> list[Candidates]:
        return [self.search(q, k) for q in queries]

    def rank(self, query: str, docs: Sequence[int]) -> Candidates:
        started = time.perf_counter()
        candidates = self.first.rank(query, docs)
        return self._apply(Query(query), candidates, {"first_stage": time.perf_counter() - started}).candidates
