"""Warming the shared cross-encoder score store with the head queries of logged traffic.

Nightly, after retraining (``shoprank warm-scores``; docs/learning_loop.md): the most
searched queries of the event log (:func:`online_learning.analysis.head_queries`)
go through the served pipeline's query analyzer and first stage, and the top
``depth`` candidates of each are scored by every registered cross-encoder a served
cascade runs (the student only with ``ranking.student_depth`` > 0; neither when no served
LambdaMART, the active one or an experiment arm's or the shadow's the engine loads, reads its
score, as their pipelines skip its stage) and written to the score
store (``serving.score_store``), with each query's bi-encoder vector and first-stage list
(``serving.shared_first_stage``), so a search for a head query neither scores, nor encodes,
nor retrieves. Pairs the store already holds are read, not scored again,
so a second run costs little.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from core.cache import LRUCache
from core.errors import InvalidInput, NotReady
from core.query import Query
from ranking.cache import CachedScorer, SharedQueryVectors
from ranking.cascade import Cascade
from ranking.score_store import ScoreStore
from retrieval.memo import MemoizedRetriever
from serving.engine import SearchEngine, served_tag
from serving.results import SharedLists


@dataclass(frozen=True)
class WarmReport:
    """What a warm run did: ``pairs`` = queries x depth x models, of which ``scored`` were scored
    now and ``cached`` were already in the store; ``dropped``: scores the store did not take."""

    queries: int
    depth: int
    models: list[str]
    pairs: int
    scored: int
    cached: int
    dropped: int
    seconds: float
    store: str
    unwritten: bool = False
    skipped: list[str] = field(default_factory=list)


def warm_scores(engine: SearchEngine, queries: Sequence[str], depth: int, progress: bool = True,
                flush_timeout: float = 600.0) -> WarmReport:
    """Score the first-stage top ``depth`` of each query with the served cross-encoders into the store.

    Raises:
        InvalidInput: ``depth`` < 1, or ``serving.score_store`` is 'memory' (no shared store).
        NotReady: No registered cross-encoder is served (nothing would be stored).
    """
    if depth < 1:
        raise InvalidInput(f"depth={depth} must be at least 1 (candidates scored per query)")
    store = engine.caches.store
    if store is None and engine.settings.serving.score_store == "memory":
        raise InvalidInput("serving.score_store is 'memory': there is no shared store to warm; set "
                           "SHOPRANK_SERVING__SCORE_STORE=local or redis")
    if store is None:
        raise NotReady("no registered cross-encoder is served, so no score would be stored; train one with "
                       "`shoprank train reranker|student --dataset DIR`")
    cascade: Cascade = engine.pipeline("full")  # type: ignore[assignment]  # every pipeline is a Cascade
    scorers, skipped = _store_scorers(engine, store, list(engine.pipelines.full.values()))
    if skipped and not scorers:  # loaded, and no served search reads their scores: why, not "train one"
        raise NotReady("no served search reads a cross-encoder's scores, so none would be stored: "
                       + "; ".join(skipped))
    if not scorers:
        raise NotReady("no registered cross-encoder is served, so no score would be stored; train one with "
                       "`shoprank train reranker|student --dataset DIR`")
    _block_writes(engine, cascade)
    started = time.perf_counter()
    dropped_before = store.dropped
    pairs = scored = 0
    index = engine.index
    for text in tqdm(queries, desc="warm scores", unit="query", disable=not progress):
        query = cascade.analyze(Query(text))
        head = cascade.first.search(query.text, max(depth, cascade.first_stage_depth)).top(depth)
        ids = [index.product_id(int(d)) for d in head.docs]
        titles = [index.title(int(d)) for d in head.docs]
        for _, scorer in scorers:
            _, fresh = scorer.score_counted(query.text, ids, titles)
            pairs += len(ids)
            scored += fresh
    written = store.flush(timeout=flush_timeout)
    return WarmReport(queries=len(queries), depth=depth, models=[name for name, _ in scorers], pairs=pairs,
                      scored=scored, cached=pairs - scored, dropped=store.dropped - dropped_before,
                      seconds=round(time.perf_counter() - started, 2), store=store.name, unwritten=not written,
                      skipped=skipped)


def _store_scorers(engine: SearchEngine, store: ScoreStore,
                   cascades: Sequence[Cascade]) -> tuple[list[tuple[str, CachedScorer]], list[str]]:
    """A scorer writing to ``store`` for each served cross-encoder one of the served ``cascades`` runs (the
    active LambdaMART's, and those of the experiment arms and the shadow), and why any other loaded one is
    left out (its cascade depth is 0, no served LambdaMART reads its score so every such pipeline skips its
    stage, or it is not a registered model folder)."""
    rk = engine.settings.ranking
    scorers: list[tuple[str, CachedScorer]] = []
    skipped: list[str] = []
    depths = {"student": ("student_depth", rk.student_depth), "reranker": ("teacher_depth", rk.teacher_depth)}
    stages = {"student": "student", "reranker": "teacher"}  # a role's stage in the cascade
    run = {getattr(stage, "name", "") for cascade in cascades for stage in cascade.stages}
    for served in (engine.student, engine.teacher):
        if served is None:
            continue
        setting, served_depth = depths[served.role]
        if not served_depth:
            # loaded but no search runs it (its cascade depth is 0): its scores would never be read
            skipped.append(f"{served.role}:{served.version} (not in the served cascade: ranking.{setting} is 0)")
            continue
        if stages[served.role] not in run:  # no served LambdaMART reads its score (serving.pipelines)
            skipped.append(f"{served.role}:{served.version} (not in a served cascade: no served LambdaMART "
                           "reads its score)")
            continue
        tag = served_tag(served, rk)
        if tag is None:
            skipped.append(f"{served.role}:{served.version} (not a registered model folder)")
            continue
        # no micro-batcher and no in-memory tier: the store is what is warmed; blocking writes never drop
        scorers.append((f"{served.role}:{served.version}",
                        CachedScorer(served.model, LRUCache(0), store, tag, block_writes=True)))
    return scorers, skipped


def _block_writes(engine: SearchEngine, cascade: Cascade) -> None:
    """The first stage stores each head query's vector and list too: a batch job waits for room
    in the store, never drops."""
    shared_vectors = engine.hybrid.dense.shared
    if isinstance(shared_vectors, SharedQueryVectors):
        shared_vectors.block_writes = True
    if isinstance(cascade.first, MemoizedRetriever) and isinstance(cascade.first.shared, SharedLists):
        cascade.first.shared.block_writes = True
