"""Tiered re-ranking: first stage -> student -> teacher -> top k.

Each stage is a pure function ``(query, Candidates) -> Candidates``: it scores
the first ``depth`` candidates in their current order, re-orders them by its
score (recorded as its own column), and leaves the rest behind them in the
order they came. So any stage can be timed, skipped or replaced, and a list is
always complete (retrieval-mode evaluation reads 1,000 deep).

Default depths follow the settings ``ranking.first_stage_depth``, ``student_depth``,
``teacher_depth`` and ``ltr_depth``; ``benchmarks/RESULTS.md`` says what they cost
on a 2-core CPU. The last stage of a served pipeline is the rules stage
(:class:`ranking.rules.RulesStage`), whose notes travel in :class:`Ranked`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache

import numpy as np

from core.query import Analysis, Filters, Query
from ranking.cross_encoder import StageShed, StageTimeout
from retrieval.analyzer import Analyzer
from retrieval.hybrid import Retriever
from retrieval.types import Candidates


@dataclass(frozen=True)
class Noted:
    """A stage's output with notes per product id (the rules stage says what each rule did), and
    what the stage could not do fully (``degraded``, e.g. store features missing)."""

    candidates: Candidates
    notes: Mapping[str, list[str]]
    degraded: tuple[str, ...] = ()


Stage = Callable[[Query, Candidates], "Candidates | Noted"]
logger = logging.getLogger(__name__)
# why a costly stage was shed (degraded "<stage>: shed, <cause>"): the degrade budget, the in-flight limit
# with shed_depth 0, or the queue gate (its pairs would not be scored in time); a stage the in-flight limit
# cut to its top shed_depth rows says "<stage>: shallow (top N), overload"
SHED_CAUSES = ("budget", "overload", "queue")


def rerank_head(candidates: Candidates, depth: int, stage: str, scores: np.ndarray) -> Candidates:
    """Re-order the first ``depth`` rows by ``scores``; the rest follow unchanged."""
    reordered = candidates.top(depth).reorder(stage, scores)
    if len(candidates) <= depth:
        return reordered
    return reordered.then(candidates.take(slice(depth, None)))


@dataclass(frozen=True)
class ScoreStage:
    """Re-rank the top ``depth`` candidates by ``score(query text, docs)`` (with ``adaptive``: a
    shallower depth for searches whose first stage is confident). ``cached(query text, docs)``
    returns the scores only when a cache holds all of them (None otherwise): under overload the
    stage still runs from it, at no model cost; when it would need the model it scores only its
    top ``shed_depth`` (:meth:`under_load`; degraded "<stage>: shallow (top N), overload" when that
    is fewer rows than it would score), or is shed (0)."""

    name: str
    score: Callable[[str, np.ndarray, float | None], np.ndarray]
    depth: int
    costly: bool = True  # a model stage: shed first under overload (query.shed)
    adaptive: AdaptiveDepth | None = None
    cached: Callable[[str, np.ndarray], np.ndarray | None] | None = None
    shed_depth: int = 0  # under overload, when not all cached: score this many (0: skip the stage)

    def under_load(self) -> ScoreStage | None:
        """The stage a shed search runs when its scores are not all cached: at most the top
        ``shed_depth`` (a shallower adaptive depth still applies), or None (skip it)."""
        if self.shed_depth <= 0:
            return None
        return replace(self, depth=min(self.depth, self.shed_depth), shed_depth=0)

    def rows_for(self, candidates: Candidates) -> int:
        """How many of ``candidates`` the stage scores: its depth, the adaptive one when set (decided on
        ``candidates`` as the first stage's list; a :class:`Cascade` decides it on its first stage's list
        before any stage runs: :meth:`settled`)."""
        depth = self.adaptive(candidates, self.depth) if self.adaptive is not None else self.depth
        return min(depth, len(candidates))

    def settled(self, agreement: float) -> ScoreStage:
        """The stage for a search whose first stage agrees ``agreement`` (:func:`first_stage_agreement`
        with the adaptive depth's window): its adaptive depth decided (unchanged without one)."""
        if self.adaptive is None:
            return self
        return replace(self, depth=self.adaptive.depth_for(agreement, self.depth), adaptive=None)

    def __call__(self, query: Query, candidates: Candidates) -> Candidates:
        depth = self.rows_for(candidates)
        if depth <= 0:
            return candidates
        head = candidates.top(depth)
        return rerank_head(candidates, depth, self.name, self.score(query.text, head.docs, query.deadline))

    def from_cache(self, query: Query, candidates: Candidates) -> Candidates | None:
        """The stage's output when every score it needs is cached, else None (it would run the model)."""
        depth = self.rows_for(candidates)
        if depth <= 0:
            return candidates
        if self.cached is None:
            return None
        scores = self.cached(query.text, candidates.top(depth).docs)
        return None if scores is None else rerank_head(candidates, depth, self.name, scores)


def first_stage_agreement(candidates: Candidates, window: int = 10, positions: np.ndarray | None = None) -> float:
    """Share of the fused top ``window`` that BM25 and the dense search both rank within their own
    top ``window`` (0 when the candidates carry no per-source ranks). ``candidates``: the first stage's
    list in its order, or some of its rows with their ``positions`` in it (1 = top: a training list's
    rows, :func:`ranking.features.first_stage_position`); the share is of the top rows they hold."""
    bm25, dense = candidates.ranks.get("bm25"), candidates.ranks.get("dense")
    place = np.arange(1, len(candidates) + 1) if positions is None else np.asarray(positions)
    top = (place > 0) & (place <= window)
    n = int(top.sum())
    if bm25 is None or dense is None or n == 0:
        return 0.0
    b, d = np.asarray(bm25)[top], np.asarray(dense)[top]
    return float(((b > 0) & (b <= window) & (d > 0) & (d <= window)).sum() / n)


@dataclass(frozen=True)
class AdaptiveDepth:
    """Query-adaptive cross-encoder depth: ``confident`` candidates when BM25 and the dense search
    agree on at least ``threshold`` of the fused top ``window`` (the first stage is sure of its
    head), the stage's full depth otherwise."""

    confident: int
    threshold: float
    window: int = 10

    def depth_for(self, agreement: float, depth: int) -> int:
        """The depth of a stage of ``depth`` for a search whose first stage agrees ``agreement``."""
        return min(depth, self.confident) if agreement >= self.threshold else depth

    def __call__(self, candidates: Candidates, depth: int, positions: np.ndarray | None = None) -> int:
        """The depth for the first stage's list ``candidates`` (``positions``: see :func:`first_stage_agreement`)."""
        return self.depth_for(first_stage_agreement(candidates, self.window, positions), depth)


def settle_depths(stages: Sequence[Stage], first: Candidates) -> list[Stage]:
    """``stages`` with each adaptive depth decided on the first stage's list ``first`` (its agreement worked out
    once a search), not on the order a stage before it left: every stage decides on the same list, the fused
    top 10 the settings describe, and a training list's featurizer can decide the same."""
    agreement = cache(lambda window: first_stage_agreement(first, window))
    return [stage.settled(agreement(stage.adaptive.window)) if isinstance(stage, ScoreStage) and stage.adaptive
            else stage for stage in stages]


@dataclass(frozen=True)
class Ranked:
    """A cascade's output, the seconds each stage took, stages skipped (why) and notes per product."""

    candidates: Candidates
    timings: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    analysis: Analysis | None = None
    first_stage_rows: int = 0  # rows the first stage returned (fewer than asked: it has no more)


@dataclass(frozen=True)
class Cascade:
    """A first-stage retriever followed by re-ranking stages.

    Attributes:
        name: Pipeline name (``rerank``, ``cascade``, ...).
        first: The first-stage retriever.
        stages: Re-ranking stages, applied in order. A stage with ``skippable =
            False`` (the rules: filters and business rules) runs even when the
            request's budget is spent.
        first_stage_depth: Candidates requested from the first stage.
        budgets: Seconds each named stage may take at most.
        analyzer: The index's query analyzer (``retrieval.analyzer``): the query is
            analyzed once, before the first stage, and every stage sees the
            analyzed text (``query.text``) and the analysis (``query.analysis``).
        spelling: Correct spelling; the store's synonyms apply either way, and a request
            may turn both off; normalization always applies, as the index holds normalized text.
        narrow: The rows of the index a request's filters keep (None: no filter;
            :meth:`ranking.facts.CatalogFacts.allowed`): the first stage searches only those.
    """

    name: str
    first: Retriever
    stages: Sequence[Stage]
    first_stage_depth: int = 1000
    budgets: dict[str, float] = field(default_factory=dict)
    analyzer: Analyzer | None = None
    spelling: bool = True
    narrow: Callable[[Filters], np.ndarray | None] | None = None

    def analyze(self, query: Query) -> Query:
        """``query`` with its analysis and the analyzed text (the text as given when it has no word)."""
        if self.analyzer is None or query.analysis is not None:
            return query
        analysis = self.analyzer.analyze(query.text, rewrite=query.rewrite, spelling=self.spelling)
        return replace(query, text=analysis.text or query.text, analysis=analysis)

    def _apply(self, query: Query, candidates: Candidates, timings: dict[str, float]) -> Ranked:
        """Run the stages over the first stage's list ``candidates`` (each adaptive depth decided on it:
        :func:`settle_depths`); a stage that times out or fails is skipped (the previous
        order stands) and named in ``degraded``, as is one that scored fewer rows than it would
        because the search was shed; never an exception for a slow model."""
        degraded: list[str] = []
        notes: dict[str, list[str]] = {}
        for stage in settle_depths(self.stages, candidates):
            name = getattr(stage, "name", "stage")
            now = time.monotonic()
            shallow_note = ""  # a shed stage cut short: said once it ran (a timeout says so instead)
            skippable = getattr(stage, "skippable", True)
            if skippable and query.deadline is not None and now >= query.deadline:
                degraded.append(f"{name}: skipped, request budget spent")
                continue
            if (query.shed or query.skip_model is not None) and getattr(stage, "costly", False):
                started = time.perf_counter()
                served = stage.from_cache(query, candidates) if hasattr(stage, "from_cache") else None
                if served is not None:
                    candidates, timings[name] = served, time.perf_counter() - started
                    continue
                if query.skip_model is not None and query.skip_model():  # the server's degrade budget
                    degraded.append(f"{name}: shed, budget")
                    continue
                if query.shed:
                    shallow = stage.under_load() if hasattr(stage, "under_load") else None
                    if shallow is None:
                        degraded.append(f"{name}: shed, overload")
                        continue
                    if (rows := shallow.rows_for(candidates)) < stage.rows_for(candidates):
                        # its ranking is not the one a search gets when the server keeps up: not a page to cache
                        shallow_note = f"{name}: shallow (top {rows}), overload"
                    stage = shallow  # runs below like any stage: budgets, deadline, the queue gate
            limits = [d for d in (query.deadline, now + self.budgets[name] if name in self.budgets else None) if d]
            started = time.perf_counter()
            try:
                out = stage(replace(query, deadline=min(limits) if limits and skippable else None), candidates)
                if isinstance(out, Noted):
                    candidates, notes = out.candidates, {**notes, **out.notes}
                    degraded.extend(out.degraded)
                else:
                    candidates = out
                if shallow_note:
                    degraded.append(shallow_note)
            except StageTimeout:
                degraded.append(f"{name}: timeout")
            except StageShed:
                degraded.append(f"{name}: shed, queue")
            except Exception as err:  # noqa: BLE001 - serve the previous order, say why
                logger.exception("stage %s failed", name)
                degraded.append(f"{name}: error {type(err).__name__}")
            timings[name] = time.perf_counter() - started
        return Ranked(candidates, timings, degraded, notes)

    def first_stage(self, query: Query, k: int = 0) -> Candidates:
        """The first stage's list for the analyzed ``query`` (at least ``k`` deep), within its filters."""
        allow = self.narrow(query.filters) if self.narrow is not None else None
        depth = max(k, self.first_stage_depth)
        return self.first.search(query.text, depth) if allow is None else self.first.search(query.text, depth, allow)

    def run(self, query: Query | str, k: int) -> Ranked:
        """Analyze, search and re-rank, with per-stage timings."""
        started = time.perf_counter()
        query = self.analyze(query if isinstance(query, Query) else Query(query))
        candidates = self.first_stage(query, k)
        ranked = self._apply(query, candidates, {"first_stage": time.perf_counter() - started})
        return replace(ranked, analysis=query.analysis, first_stage_rows=len(candidates))

    def search(self, query: str, k: int) -> Candidates:
        return self.run(query, k).candidates

    def batch_search(self, queries: Sequence[str], k: int) -> list[Candidates]:
        return [self.search(q, k) for q in queries]

    def rank(self, query: str, docs: Sequence[int]) -> Candidates:
        started = time.perf_counter()
        analyzed = self.analyze(Query(query))
        candidates = self.first.rank(analyzed.text, docs)
        return self._apply(analyzed, candidates, {"first_stage": time.perf_counter() - started}).candidates
