"""The pipelines a search engine serves, built from its loaded parts: which stages each runs.

Pipelines:

- ``bm25``, ``dense``, ``hybrid``: the first stage alone. The hybrid's lists are kept between
  searches (``serving.first_stage_cache_size``, ``serving.shared_first_stage``;
  :mod:`retrieval.memo`): every pipeline built on it retrieves a query once per catalog.
- ``rerank``: hybrid top ``ranking.rerank_depth`` re-ranked by the teacher.
- ``cascade``: hybrid top ``ranking.first_stage_depth`` -> student
  (``student_depth``) -> teacher (``teacher_depth``).
- ``ltr``: cascade -> LambdaMART (``ltr_depth``) with store features. A cross-encoder
  stage whose score the LambdaMART model never reads (trained before that model
  existed) and whose depth it covers is left out: LambdaMART would reorder its work away. A
  score it reads whose stage is not served (that model off, or its depth 0) is missing on every
  row: a warning when the pipelines are built says so (a setting, not a search, is at fault, so
  searches are not marked degraded and their pages are cached as usual).
- ``full``: what ``/v1/search`` serves: the deepest of ltr / cascade / hybrid
  that the registered models allow, then the rules stage (filters, stock,
  promotions, pins) as its last stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from core.feature_store import OnlineFeatureReader
from core.query import Filters
from core.registry import ServedModel
from core.settings import RankingSettings, Settings
from ranking.cascade import AdaptiveDepth, Cascade, ScoreStage, Stage
from ranking.features import LtrFeaturizer
from ranking.lambdamart import LambdaMART
from ranking.ltr import LtrStage
from ranking.rules import RulesStage
from retrieval.analyzer import Analyzer
from retrieval.hybrid import BM25Retriever, DenseRetriever, Retriever
from retrieval.index import ProductIndex

logger = logging.getLogger(__name__)

PIPELINES = ("bm25", "dense", "hybrid", "rerank", "cascade", "ltr", "full")
DEFAULT = "full"


@dataclass(frozen=True)
class Models:
    """The registered models an engine serves (each None when not registered or turned off).

    ``ltr_versions`` are extra LambdaMART versions served beside the active one
    (experiment arms, shadow candidates); a search picks one with ``ltr=``.
    """

    teacher: ServedModel | None = None
    student: ServedModel | None = None
    ltr: ServedModel | None = None
    ltr_versions: tuple[ServedModel, ...] = ()
    features: OnlineFeatureReader | None = None


@dataclass(frozen=True)
class Pipelines:
    """Every pipeline by name, and the served one per LambdaMART version (None: the active one)."""

    named: dict[str, Retriever]
    full: dict[str | None, Cascade]
    ltr_stages: dict[str | None, LtrStage]


def adaptive_depths(ranking: RankingSettings) -> dict[str, AdaptiveDepth | None]:
    """Each cross-encoder stage's query-adaptive depth (None: always its depth), by stage: what the served
    stages and the featurizer of training lists both decide by."""
    def rule(confident: int) -> AdaptiveDepth | None:
        return AdaptiveDepth(confident, ranking.confident_agreement) if confident else None

    return {"student": rule(ranking.student_depth_confident), "teacher": rule(ranking.teacher_depth_confident)}


def featurizer_for(index: ProductIndex, dense: DenseRetriever, models: Models, names: Sequence[str],
                   ranking: RankingSettings, score_missing: bool = True, fused_depth: int = 0) -> LtrFeaturizer:
    """The LambdaMART featurizer of features ``names`` over this index, query encoder, store and
    cross-encoders. ``score_missing``: the cross-encoders score the rows that the served stages
    score (their depths, adaptive as served) and no stage scored (training lists); off in served
    pipelines, where the cross-encoder stages ran first and a row they left unscored (shed under
    overload, a timeout) stays missing, as LambdaMART learnt rows below the depth. ``fused_depth``:
    the first stage's ``retrieval.depth`` (:func:`ranking.features.first_stage_position`)."""
    reader = models.features
    store = (lambda query, pids: reader.fetch(pids, query.user_id, query.deadline)) if reader else None
    scorer = (lambda served: served.model if served and score_missing else None)
    adaptive = adaptive_depths(ranking)
    return LtrFeaturizer(index, lambda text: dense.embed([text])[0], store, list(names),
                         scorer(models.student), scorer(models.teacher),
                         student_depth=ranking.student_depth, teacher_depth=ranking.teacher_depth,
                         student_adaptive=adaptive["student"], teacher_adaptive=adaptive["teacher"],
                         fused_depth=fused_depth)


def build_pipelines(bm25: BM25Retriever, dense: DenseRetriever, hybrid: Retriever, models: Models,
                    rules: RulesStage, settings: Settings,
                    cross_encoder_stage: Callable[[str, ServedModel, int], ScoreStage],
                    narrow: Callable[[Filters], np.ndarray | None] | None = None,
                    analyzer: Analyzer | None = None) -> Pipelines:
    """The pipelines these parts allow (see the module docstring); builds nothing stateful.
    ``narrow``: the index rows a request's filters keep, which every pipeline's first stage searches;
    ``analyzer``: the query analyzer (None: the index's)."""
    rk = settings.ranking
    analyzer = analyzer if analyzer is not None else bm25.index.analyzer
    budgets = {name: ms / 1000 for name, ms in settings.serving.stage_budgets_ms.items()}

    def cascade(name: str, stages: list[Stage], depth: int, first: Retriever = hybrid) -> Cascade:
        # it reads at least as deep as its deepest stage: a stage re-ranks the same rows whichever page is asked for
        depth = max([depth, *(getattr(stage, "depth", 0) for stage in stages)])
        return Cascade(name, first, stages, first_stage_depth=depth, budgets=budgets,
                       analyzer=analyzer, spelling=settings.retrieval.spelling, narrow=narrow)

    named: dict[str, Retriever] = {name: cascade(name, [], 0, first)
                                   for name, first in (("bm25", bm25), ("dense", dense), ("hybrid", hybrid))}

    adaptive = adaptive_depths(rk)
    stages: list[Stage] = []
    if models.student and rk.student_depth:
        stages.append(replace(cross_encoder_stage("student", models.student, rk.student_depth),
                              adaptive=adaptive["student"]))
    if models.teacher:
        named["rerank"] = cascade("rerank", [cross_encoder_stage("teacher", models.teacher, rk.rerank_depth)],
                                  rk.rerank_depth)
        if rk.teacher_depth:
            stages.append(replace(cross_encoder_stage("teacher", models.teacher, rk.teacher_depth),
                                  adaptive=adaptive["teacher"]))
    if stages:
        named["cascade"] = cascade("cascade", list(stages), rk.first_stage_depth)
    depth = rk.first_stage_depth if stages else rk.rerank_depth
    full: dict[str | None, Cascade] = {None: cascade("full", [*stages, rules], depth)}
    ltr_stages: dict[str | None, LtrStage] = {}
    before: dict[str, list[Stage]] = {}  # the cross-encoder stages each version's pipelines run
    for served in ([models.ltr] if models.ltr else []) + list(models.ltr_versions):
        if not rk.ltr_depth:
            break
        model: LambdaMART = served.model  # type: ignore[assignment]
        before[served.version] = _read_by(stages, model, served.version, rk.ltr_depth, served.trained_with)
        warn_unserved_scores(model, served.version, before[served.version])
        stage = LtrStage(model, featurizer_for(bm25.index, dense, models, model.names, rk, score_missing=False),
                         rk.ltr_depth)
        ltr_stages[served.version] = stage
        full[served.version] = cascade("full", [*before[served.version], stage, rules], rk.first_stage_depth)
    if models.ltr and models.ltr.version in ltr_stages:
        ltr_stages[None] = ltr_stages[models.ltr.version]
        full[None] = full[models.ltr.version]
        named["ltr"] = cascade("ltr", [*before[models.ltr.version], ltr_stages[None]], rk.first_stage_depth)
    named["full"] = full[None]
    return Pipelines(named, full, ltr_stages)


def _read_by(stages: list[Stage], model: LambdaMART, version: str, ltr_depth: int,
             trained_with: dict[str, object] | None = None) -> list[Stage]:
    """The cross-encoder stages worth running before ``model``: those whose score it reads, any deeper than its
    own depth (their order below it is served as they left it), and a student deeper than a teacher kept after
    it where LambdaMART's lists were made with the student run (``trained_with``'s ``student_depth``,
    :class:`~core.registry.ServedModel`): the student's order picked the rows the teacher scored in them, and
    skipped, the teacher would score the top of the fused list instead."""
    def read(stage: Stage) -> bool:
        return stage.depth > ltr_depth or model.reads(stage.name)

    picked_by_student = int((trained_with or {}).get("student_depth") or 0) > 0
    kept: list[Stage] = []
    for n, cross in enumerate(stages):
        orders = cross.name == "student" and picked_by_student and any(
            read(later) and later.depth < cross.depth for later in stages[n + 1:])
        if read(cross) or orders:
            kept.append(cross)
            continue
        logger.info("LambdaMART %s does not read the %s score: its pipelines skip that stage "
                    "(retrain LambdaMART with the %s served to use it)", version, cross.name, cross.name)
    return kept


def warn_unserved_scores(model: LambdaMART, version: str, stages: Sequence[Stage]) -> tuple[str, ...]:
    """The cross-encoder scores ``model`` reads that none of ``stages`` serves (the model is not loaded, or its
    depth is 0), with a warning naming them: LambdaMART gets them missing on every row, unlike the rows it
    learnt from. The configuration is at fault, the same for every search, so searches are not marked
    degraded (a degraded page is not cached, and a search again would rank no better)."""
    served = {getattr(stage, "name", "") for stage in stages}
    unserved = tuple(name for name in ("student", "teacher") if model.reads(name) and name not in served)
    if unserved:
        logger.warning("ltr %s reads the %s score but no such stage is served (the model is not loaded, or its "
                       "depth is 0): every search ranks with it missing, as LambdaMART never saw in training; "
                       "serve it (ranking.reranker, ranking.student and their depths) or retrain LambdaMART "
                       "with the cascade as served", version, " and ".join(unserved))
    return unserved


def ranked_by(cascade: Cascade, models: Models) -> dict[str, str]:
    """The versions of the models whose stages ``cascade`` runs, by role: what a search's response
    and impression name, so that traffic is credited to the models that ranked it (a ``hybrid``
    search is no LambdaMART's, and a teacher its LambdaMART never reads is not run; see
    :func:`build_pipelines`)."""
    cross = {"teacher": models.teacher, "student": models.student}
    out: dict[str, str] = {}
    for stage in cascade.stages:
        if isinstance(stage, LtrStage):
            out["ltr"] = next(m.version for m in (models.ltr, *models.ltr_versions) if m and m.model is stage.model)
        elif (served := cross.get(getattr(stage, "name", ""))) is not None:
            out[served.role] = served.version
    return out
