"""Opening what serves: the registered models, the engine, the served unit.

:func:`open_engine` is the one front door: the API, the CLI, training and the
benchmarks all open an engine through it. It opens the configured bi-encoder
and loads (or builds, on first use) the index (:mod:`serving.indexing`), loads
the registered models and assembles the engine. :func:`open_served` adds the
experiment router, so an engine and its router are loaded, and swapped, as one
:class:`Served` unit.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from core.artifacts import ArtifactStore
from core.errors import Conflict
from core.feature_store import OnlineFeatureReader
from core.product_changes import open_changes
from core.registry import ModelRegistry, ModelVersion, ServedModel
from core.settings import Settings
from ranking.features import catalog_text, store_features, unfillable
from ranking.relevance import RELEVANCE_FEATURES
from retrieval.analyzer import Analyzer
from retrieval.encoder import Encoder
from retrieval.index import ProductIndex
from retrieval.synonyms import file_digest
from serving.engine import SearchEngine, assemble, rules_path
from serving.indexing import (
    open_encoder,
    open_index,
    retrieval_settings,
    served_encoder,
    server_threads,
    synonyms_target,
)
from serving.pipelines import Models
from serving.router import ExperimentRouter, load_router
from serving.suggestions import hidden_products, suggester

if TYPE_CHECKING:
    from core.hardware import Cpu

logger = logging.getLogger(__name__)

SWAPPABLE = ("reranker", "student", "ltr")


# -- the registered models -------------------------------------------------------------------

def _entry(settings: Settings, role: str, spec: str) -> ModelVersion | None:
    if spec == "none":
        return None
    registry = ModelRegistry(settings.paths.models)
    return registry.active(role) if spec == "active" else registry.get(role, spec)


def served_precision(settings: Settings) -> str:
    """The cross-encoders' precision: ``ranking.precision``, with ``auto`` resolved for this CPU."""
    from core.hardware import cpu

    return cpu().cross_encoder_precision if settings.ranking.precision == "auto" else settings.ranking.precision


def teacher_cost_warning(cpu: Cpu, precision: str, teacher_depth: int) -> str | None:
    """What to tell an operator serving the teacher live where its int8 kernels have neither VNNI nor
    AMX (measured several times slower there; benchmarks/RESULTS.md, "Other CPUs' kernels"); else None."""
    if not teacher_depth or precision == "bf16" or cpu.int8_path not in ("avx2", "generic"):
        return None
    return (f"the teacher scores live on a CPU without VNNI or AMX (int8 path {cpu.int8_path}), where it costs "
            "several times more per pair; a 2-layer student in its place met every load target with such kernels: "
            "docs/operations.md, 'On a CPU without VNNI or AMX'")


def served_max_length(settings: Settings, entry: ModelVersion) -> int:
    """The token cap of the (query, title) pairs a registered cross-encoder scores when served:
    ``ranking.max_length``, or the length it was trained at where that is shorter (pairs longer than any it
    learnt from)."""
    trained = entry.params.get("max_length")
    if isinstance(trained, int) and not isinstance(trained, bool) and 0 < trained < settings.ranking.max_length:
        logger.info("%s %s is served at the %d tokens it was trained at (ranking.max_length %d)", entry.role,
                    entry.version, trained, settings.ranking.max_length)
        return trained
    return settings.ranking.max_length


def load_cross_encoder(settings: Settings, role: str, spec: str | None = None) -> ServedModel | None:
    """The configured version (or ``spec``) of ``role`` (reranker|student), on ONNX Runtime."""
    from ranking.cross_encoder import CrossEncoderScorer

    rk = settings.ranking
    entry = _entry(settings, role, spec or (rk.reranker if role == "reranker" else rk.student))
    if entry is None or entry.path is None:
        return None
    scorer = CrossEncoderScorer(Path(entry.path), served_precision(settings), max_length=served_max_length(
        settings, entry), batch_size=rk.batch_size, threads=server_threads(settings))
    logger.info("loaded %s %s (%s)", role, entry.version, scorer.precision)
    if role == "reranker":
        from core.hardware import cpu

        warning = teacher_cost_warning(cpu(), scorer.precision, rk.teacher_depth)
        if warning:
            logger.warning(warning)
    return ServedModel(role, entry.version, scorer)


def load_ltr(settings: Settings, spec: str | None = None) -> ServedModel | None:
    from ranking.lambdamart import LambdaMART

    entry = _entry(settings, "ltr", spec or settings.ranking.ltr)
    if entry is None or entry.path is None:
        return None
    models = entry.params.get("served_models")
    trained = dict(models) if isinstance(models, dict) else {}
    for key in ("second_encoder_weight", "student_depth"):
        if trained and key in entry.params:
            trained[key] = entry.params[key]
    return ServedModel("ltr", entry.version, LambdaMART.load(Path(entry.path)), trained)


def check_features(ltr: ServedModel, features: OnlineFeatureReader | None, settings: Settings) -> None:
    """Refuse (:class:`~core.errors.Conflict`) a LambdaMART that reads features this server can fill
    neither by computing them nor from the feature service: served, every search would fail its stage
    and fall back to the first stage's order. Without a feature store every feature this version does
    not compute is a store feature, served as missing (NaN), which is logged."""
    if features is None:
        store = store_features(ltr.model.names)
        if store:
            logger.warning("ltr %s reads %d store features (%s) but no feature store is open: they are served as "
                           "missing; `shoprank features build|apply|materialize` gives them values", ltr.version,
                           len(store), ", ".join(store[:4]) + (", ..." if len(store) > 4 else ""))
        return
    missing = unfillable(ltr.model.names, features.names)
    if missing:
        raise Conflict(f"ltr {ltr.version} reads features {missing} that this ShopRank does not compute and the "
                       f"feature service {settings.features.service!r} does not hold; retrain it with this version "
                       "(shoprank train ltr) or apply the feature repo it was trained with")


def check_loads(settings: Settings, role: str, version: str) -> None:
    """Refuse (:class:`~core.errors.Conflict`) a version whose files are damaged or do not load, or a
    LambdaMART whose features this server cannot fill, before anything points at it: the served version
    keeps serving."""
    ModelRegistry(settings.paths.models).verify(role, version)
    try:
        if role == "ltr":
            served = load_ltr(settings, version)
        else:
            load_cross_encoder(settings, role, version)
    except Exception as err:  # noqa: BLE001 - any load failure refuses the version
        raise Conflict(f"{role} {version} does not load ({type(err).__name__}: {str(err)[:200]}); "
                       "the active version keeps serving") from err
    if role == "ltr" and served is not None and store_features(served.model.names):  # else nothing to check
        reader = open_feature_reader(settings, batch=True)  # only its feature names: no change feed followed
        try:
            check_features(served, reader, settings)
        finally:
            if reader is not None:
                reader.close()


BATCH_READ_TIMEOUT_S = 120.0  # batch jobs wait for the online store: their figures must not depend on load


def open_feature_reader(settings: Settings, batch: bool = False) -> OnlineFeatureReader | None:
    """The online feature reader, when the feature store has been applied. A server's reads are
    bounded (``features.read_timeout_ms``, then skipped for ``features.retry_after_s``); a batch
    job's (``batch``: evaluation, training) wait, so that no row loses its features to a busy CPU."""
    from core import feast_repo

    if not (settings.paths.features / "registry.db").is_file():
        return None
    fs = settings.features
    timeout, retry = (BATCH_READ_TIMEOUT_S, 0.0) if batch else (fs.read_timeout_ms / 1000, fs.retry_after_s)
    try:
        store = feast_repo.open_store(settings)
        reader = OnlineFeatureReader(store, fs.service, read_timeout=timeout, retry_after=retry,
                                     product_ttl=fs.product_ttl_s, facts=fs.facts)
    except Exception as err:  # noqa: BLE001 - serving goes on without store features
        logger.warning("feature store unavailable (%s); ranking without store features", err)
        return None
    if not batch and fs.changes_poll_s > 0:
        try:
            reader.follow(open_changes(store), fs.changes_poll_s)
        except Exception as err:  # noqa: BLE001 - live updates then show after product_ttl_s
            logger.warning("the live product updates' change feed is unavailable (%s); changed products are "
                           "read again after %.0f s", err, fs.product_ttl_s)
    return reader


def load_models(settings: Settings, ltr_versions: Sequence[str] = (), batch: bool = False) -> Models:
    """The configured models from the registry and the feature store, if any.

    ``ltr_versions``: LambdaMART versions to serve beside the active one; ``batch``: see
    :func:`open_feature_reader`.
    """
    extra = tuple(m for v in ltr_versions if (m := load_ltr(settings, v)) is not None)
    ltr, features = load_ltr(settings), open_feature_reader(settings, batch)
    for served in (ltr, *extra):
        if served is not None:
            check_features(served, features, settings)
    return Models(teacher=load_cross_encoder(settings, "reranker"), student=load_cross_encoder(settings, "student"),
                  ltr=ltr, ltr_versions=extra, features=features)


# -- engines ---------------------------------------------------------------------------------

def open_engine(settings: Settings, products: pd.DataFrame | None = None, models: bool = True,
                ltr_versions: Sequence[str] = (), encoder: Encoder | None = None,
                index: ProductIndex | None = None, warm_features: bool = True, batch: bool = False,
                analyzer: Analyzer | None = None) -> SearchEngine:
    """The engine for ``settings``: encoder -> index (see :func:`open_index`) -> models -> pipelines.

    Args:
        products: An evaluation/training catalog to index instead of the served one.
        models: Load the registered models (False: the first stage only).
        ltr_versions: Extra LambdaMART versions to serve (experiment arms, shadow).
        encoder, index: Already open ones to reuse (a hot swap keeps both).
        warm_features: Read every product's store features into memory in the background.
        batch: A batch job (evaluation, training, retraining): store reads wait instead of
            degrading (:func:`open_feature_reader`).
        analyzer: The query analyzer (None: the index's).
    """
    encoder = encoder or open_encoder(settings)
    index = index or open_index(settings, encoder, products)
    loaded = load_models(settings, ltr_versions, batch) if models else Models()
    engine = assemble(index, encoder, settings, loaded, analyzer)
    for line in engine.ltr_mismatches():  # its features read otherwise than it learned them: it still serves
        logger.warning("%s: its features read otherwise here than in training; retrain it (`shoprank train ltr`)",
                       line)
    served_ltr = [m for m in (loaded.ltr, *loaded.ltr_versions) if m is not None]
    if any(set(RELEVANCE_FEATURES) & set(m.model.names) for m in served_ltr):
        catalog_text(index)  # the catalog's words for the relevance features, before the first search
    if warm_features and loaded.features is not None and (
            loaded.ltr is not None or (loaded.features.facts and not batch)):
        # LambdaMART reads the store rows of every candidate, a server's filters every product's: read them
        # all now, in the background (a batch job searches without filters)
        loaded.features.warming = threading.Thread(target=warm_store_features, args=(engine,), name="feature-warm",
                                                   daemon=True)
        loaded.features.warming.start()
    return engine


def wait_for_store_features(engine: SearchEngine, seconds: float) -> bool:
    """Wait at most ``seconds`` for the engine's background read of every product's store features
    (:func:`open_engine`); True when they are in memory (or there is nothing to read)."""
    reader = engine.models.features
    warming = getattr(reader, "warming", None)
    if warming is None:
        return True
    started = time.perf_counter()
    warming.join(seconds)
    if warming.is_alive():
        logger.warning("store features still being read after %.0f s (features.warm_wait_s); serving meanwhile",
                       time.perf_counter() - started)
        return False
    return True


def warm_store_features(engine: SearchEngine) -> None:
    """Read every live product's store features into the reader's cache (a server does this once,
    in the background, after it loads)."""
    reader = engine.models.features
    if reader is not None:
        started = time.perf_counter()
        products = engine.index.live_product_ids()
        left = reader.warm(products)
        if left:  # the store out of reach: read again in the background until it answers; readiness (and a
            # swap) does not wait for it, the rows read so far serve
            logger.warning("store features of %d of %d products could not be read; trying again until the online "
                           "store answers", len(left), len(products))
            threading.Thread(target=_warm_the_rest, args=(engine, left, started), name="feature-warm-retry",
                             daemon=True).start()
            return
        if engine.facts is not None:  # filters and facets read the store's rows from now on
            engine.facts.refresh()
        logger.info("store features of %d products read into memory in %.1f s", len(products),
                    time.perf_counter() - started)


def _warm_the_rest(engine: SearchEngine, left: list[str], started: float) -> None:
    """:func:`warm_store_features`' products the store could not give, read again with back-off until it does
    (or the reader closes), then the facts rebuilt."""
    reader, wait = engine.models.features, 1.0
    while left:
        if reader.stopped(wait):
            return
        left, wait = reader.warm(left), min(30.0, wait * 2)
    if engine.facts is not None:
        engine.facts.refresh()
    logger.info("store features read into memory at last, %.1f s after the first try", time.perf_counter() - started)


@dataclass(frozen=True)
class Served:
    """What answers searches: an engine and the experiment router, swapped as one unit.

    ``generation`` fingerprints the shared state it was loaded from (active model
    versions, experiment configuration); see :func:`generation`.
    """

    engine: SearchEngine
    router: ExperimentRouter
    generation: str = ""

    def carry_counts(self, previous: Served) -> None:
        """Swapping in for ``previous``: its engine's counts carry on in this one's, and its shadow's while the
        same version is shadowed (a rules or model swap rebuilds the router: they read 0 again)."""
        self.engine.carry_counts(previous.engine)
        shadow = getattr(self.router, "shadow", None)
        if shadow is not None and shadow == getattr(previous.router, "shadow", None):
            self.router.shadow_done += previous.router.shadow_done
            self.router.shadow_dropped += previous.router.shadow_dropped

    def close(self) -> None:
        self.router.close()
        self.engine.close()


def artifact_store(settings: Settings) -> ArtifactStore | None:
    """The shared artifact store (``settings.artifacts_url``) mirrored into this home, or None."""
    if not settings.artifacts_url:
        return None
    settings.home.mkdir(parents=True, exist_ok=True)
    return ArtifactStore(settings.artifacts_url, settings.home)


def pull_artifacts(settings: Settings, wait: bool = True) -> None:
    """Bring this home up to date with the artifact store, if one is configured (``wait`` False: an index being
    written here is left for a later pull, :meth:`~core.artifacts.ArtifactStore.pull`)."""
    if (store := artifact_store(settings)) is not None:
        store.pull(wait)
        if store.pulled_indexes and not wait:  # a server's reload tick: what it serves stays the index it loaded
            logger.warning("pulled the indexes %s from %s: this server serves the index it loaded until it is "
                           "restarted (kill -HUP restarts its processes one at a time, none answering 503)",
                           store.pulled_indexes, store.url)


def push_state(settings: Settings) -> None:
    """Publish the active pointers, the experiment, the rules and the synonyms to the artifact store, if one is
    configured."""
    if (store := artifact_store(settings)) is not None:
        store.push_state(named_files(settings))


def named_files(settings: Settings) -> list[Path]:
    """The rules and synonyms files of every store of the home, where settings name them
    (``ranking.rules_file``, ``retrieval.synonyms``): the artifact store's patterns cover the default places."""
    default = settings.for_store(None)
    stores = [default] + ([default.for_store(p.name) for p in sorted(default.paths.stores.iterdir())
                           if p.is_dir() and p.name != default.index_name] if default.paths.stores.is_dir() else [])
    return [path for each in stores for path in (rules_path(each), synonyms_target(each))]


def generation(settings: Settings) -> str:
    """A fingerprint of the shared serving state: the active versions of the swappable models, the
    experiment configuration, the store's synonyms file and its business rules. Server processes compare it to
    find changes made by others (an edited synonyms or rules file is read again within ``serving.reload_poll_s``)."""
    registry = ModelRegistry(settings.paths.models)
    parts = [registry.active_version(role) or "" for role in SWAPPABLE]
    config = settings.paths.experiment_config
    parts.append(config.read_text() if config.is_file() else "")
    parts.append(file_digest(retrieval_settings(settings).synonyms) or "")
    parts.append(file_digest(rules_path(settings)) or "")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def open_served(settings: Settings, previous: Served | None = None, encoder: Encoder | None = None,
                index: ProductIndex | None = None) -> Served:
    """Engine + router from the shared state; with ``previous``, its index and encoder are reused
    (a hot swap re-indexes nothing); ``encoder`` and ``index`` pass already open ones."""
    stamp = generation(settings)
    router = load_router(settings.paths, settings.serving.shadow_queue)
    synonyms = None
    if previous is not None:
        encoder, index = previous.engine.encoder, previous.engine.index
        # an edited (or new) synonyms file is read again: the new engine analyzes with it, while the index (and
        # what reads it: query suggestions) keeps the served one's until this engine is served
        synonyms = index.read_synonyms(retrieval_settings(settings).synonyms)
    encoder = encoder or served_encoder(settings)
    engine = open_engine(settings, ltr_versions=router.ltr_versions, encoder=encoder, index=index,
                         analyzer=synonyms.analyzer if synonyms is not None else None)
    # the catalog's suggestion phrases, worked out in the background (a hot swap reuses them)
    hidden = hidden_products(engine)  # as the suggest route reads them: the first calls find it built
    threading.Thread(target=suggester, args=(engine.index, settings.paths.suggestions, False, hidden),
                     name="suggest-warm", daemon=True).start()
    # ready (or swapped in) once the product rows are in memory: before that, searches read them themselves
    wait_for_store_features(engine, settings.features.warm_wait_s)
    logger.info("serving index %s: %d products, models %s", engine.index.path, engine.index.count, engine.versions)
    if synonyms is not None:  # the engine is made: it is swapped in now
        engine.index.use_synonyms(synonyms)
    return Served(engine, router, stamp)
