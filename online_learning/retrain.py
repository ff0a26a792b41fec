"""Nightly retraining from logged traffic: ``shoprank retrain`` (cron-able).

1. Read the offline event log (Parquet, from the log sink) for the window
   since the last retrain (or ``--since``) until ``--settle-minutes`` ago (the CLI's
   default: an hour, so the last searches' clicks and purchases have arrived; 0: now), or
   ``--until``, never later than now (a search stamped ahead of the clock waits for a later run); nothing
   new: exit "up to date"; fewer than ``min_searches`` after the traffic filters (step 5): "too few new
   searches", or "too few searches after the filters" when enough were logged and the filters dropped
   them (both with the logged count and the filter report); searches but no click, cart or purchase among
   them: "no engagement" (nothing registered, so the next run reads them again); no search logged at all (a
   wrong home, or no sink ever ran): "no event log"; too few searches showing 2 or more products
   still in the index to learn from: "too few usable searches".
2. Join impressions with interactions: each shown product of each search gets
   its engagement (0 none, 1 click, 2 add to cart, 3 purchase).
3. Estimate position bias by EM on the position-based model
   (:mod:`online_learning.propensity`) and weight each preference pair by the
   inverse propensity of the engaged product's position.
4. Features: the same :class:`~ranking.ltr.LtrFeaturizer` as serving, with the
   cross-encoder scores that were logged with the impression, the first-stage ranks
   rebuilt by the served first stage (the log keeps none; :func:`logged_ranking_data`)
   and store features joined point-in-time from Feast at the search's own timestamp.
5. Before anything is learnt, the traffic filters (:mod:`online_learning.traffic_filter`)
   drop clicks without an impression, repeats and anomalous shoppers, counted by reason, one UTC day
   of searches at a time as promote and guard apply them.
6. Train an unbiased LambdaMART candidate on the earliest 64% of searches,
   early-stopped on the IPS-DCG@10 of the next 16%; compare it with the
   active model on the latest 20%, which neither saw (IPS-DCG@10 of both; no judged
   dataset is read here); register it with lineage (data window, feature service,
   parent model, propensities, metrics). Registering never activates: the experiment
   and the promotion policy decide.

One run at a time (a file lock); a crash before registration registers nothing, and the next run
redoes the window and removes the candidate folder the crashed run may have saved
(``<home>/training/retrain-*``), so nothing of it stays behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import lightgbm as lgb
import numpy as np
import pandas as pd

from core.compute import dask_client
from core.errors import InvalidInput
from core.feature_store import FeatureBatch
from core.query import Query
from core.registry import ModelRegistry, ServedModel
from core.settings import Settings
from online_learning.analysis import cleaned_by_day
from online_learning.consumers.log_sink import log_files, read_log, searches_only
from online_learning.forget_list import ForgetList
from online_learning.propensity import fit_position_model
from online_learning.traffic_filter import FilterConfig, engagement
from ranking.features import RANK_FEATURES, LtrFeaturizer
from ranking.lambdamart import BASE_FEATURES, LambdaMART, LambdaMARTConfig, RankingData
from retrieval.hybrid import Retriever
from retrieval.index import ProductIndex
from retrieval.types import Candidates, Hits

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

RETRAIN_FOLDER = "retrain-"  # a run's candidate, saved under the home's training folder until it is registered
LEVEL = {"click": 1, "add_to_cart": 2, "purchase": 3}
# what the filters, the labels and the features read of a logged ranking (not its models, latency, ...)
RANKING_COLUMNS = ("event_id", "request_id", "timestamp", "user_id", "session_id", "key_id", "query", "product_id",
                   "position", "scores", "sort", "pipeline")


@dataclass(frozen=True)
class RetrainConfig:
    since: str | None = None
    until: str | None = None
    min_searches: int = 200
    valid_share: float = 0.2
    max_position: int = 10
    seed: int = 13
    filter_traffic: bool = True  # online_learning.traffic_filter before anything is learnt
    # without ``until``: the window ends this long before now, so the clicks and purchases of its last searches
    # have arrived (late through a spool or a slow broker, or a purchase after a long visit); the next run reads
    # the searches left out then. The window never ends after now, 0 included (searches stamped ahead of the clock)
    settle_minutes: float = 0.0


def impressions(root: Path, since: pd.Timestamp | None, until: pd.Timestamp | None,
                filters: FilterConfig | None = FilterConfig(), client: Client | None = None,
                name: Callable[[str], str | None] = lambda who: None) -> tuple[pd.DataFrame, dict]:
    """Shown products with engagement labels, one row per (search, position), and what the
    traffic filters excluded (``filters`` None: nothing is filtered; shoppers named by ``name``, as
    :meth:`~online_learning.traffic_filter.Cleaned.report` names them), applied one whole UTC day at a time
    (:func:`online_learning.analysis.cleaned_by_day`, as promote and guard apply them; the report counts the
    whole days), with the number of the window's searches they dropped (``excluded_searches``). With
    ``client``, the log's Parquet files are read on its Dask workers."""
    # the filters judge whole UTC days, as promote and guard read them: a window that starts or ends within a day
    # (the last run's end, --settle-minutes) reads the rest of its days for them, then keeps its own searches
    day_since, day_until = since, until
    if filters is not None:
        day_since = since.floor("D") - pd.Timedelta(1, "us") if since is not None else None
        day_until = until.floor("D") + pd.Timedelta(days=1) if until is not None else None
    rankings = read_log(root, "rankings", RANKING_COLUMNS, day_since, day_until, client)
    if rankings.empty:
        return rankings, {}
    rankings["timestamp"] = pd.to_datetime(rankings["timestamp"], utc=True)
    rankings = rankings[_within(rankings["timestamp"], day_since, day_until)]
    listed = set(rankings["request_id"])  # every list the days logged
    # lists sorted by price show what the shopper ordered, not what ranks best, and listings and
    # recommendation shelves answer no query: they teach nothing here
    rankings = searches_only(rankings)
    rankings = rankings[rankings["product_id"].notna() & rankings["sort"].isna()]
    rankings = rankings.drop(columns=["sort", "pipeline"])
    interactions = _on_or_unlisted(read_log(root, "interactions", client=client), set(rankings["request_id"]),
                                   listed, day_since, day_until)
    report: dict = {}
    if filters is not None and not rankings.empty:
        # a shopper judged per day: over a long window (a first run, a --since backfill) a loyal shopper's
        # searches would pass max_searches all together
        window = set(rankings.loc[_within(rankings["timestamp"], since, until), "request_id"])
        cleaned = cleaned_by_day(rankings, interactions, filters)
        rankings, interactions = cleaned.rankings, cleaned.interactions
        # the window's own searches, and what is on them or made in it on no list
        rankings = rankings[rankings["request_id"].isin(window)].copy()
        interactions = _on_or_unlisted(interactions, window, listed, since, until)
        report = {"excluded_searches": len(window) - int(rankings["request_id"].nunique()), **cleaned.report(name)}
    rankings["engagement"] = engagement(rankings, interactions, LEVEL)
    rankings["clicked"] = (rankings["engagement"] > 0).astype(int)
    return rankings.sort_values(["timestamp", "request_id", "position"], ignore_index=True), report


def _on_or_unlisted(interactions: pd.DataFrame, searches: set, listed: set, since: pd.Timestamp | None,
                    until: pd.Timestamp | None) -> pd.DataFrame:
    """The interactions on ``searches``, and those made from ``since`` to ``until`` on no list the log holds
    (``listed``: a click without an impression, for the filters); not those on earlier nights' lists, sorted lists
    or listings."""
    if interactions.empty:
        return interactions
    made = _within(pd.to_datetime(interactions["timestamp"], utc=True), since, until)
    ids = interactions["request_id"]
    return interactions[ids.isin(searches) | (made & ~ids.isin(listed))]


def _within(times: pd.Series, since: pd.Timestamp | None, until: pd.Timestamp | None) -> pd.Series:
    """Which of ``times`` fall in the window: after ``since``, up to ``until`` (None: open)."""
    inside = pd.Series(True, index=times.index)
    if since is not None:
        inside &= times > since
    if until is not None:
        inside &= times <= until
    return inside


def _candidates(index: ProductIndex, rows: pd.DataFrame) -> Candidates:
    docs = [index.doc_of(p) for p in rows["product_id"]]
    keep = np.array([d is not None for d in docs])
    rows = rows[keep]
    hits = Hits.of([d for d in docs if d is not None], -rows["position"].to_numpy(dtype=float))
    base = Candidates.from_hits(hits, "logged", rows["product_id"].tolist())
    logged = [json.loads(s) if isinstance(s, str) else {} for s in rows["scores"]]
    scores = dict(base.scores)
    for stage in ("student", "teacher"):
        scores[stage] = np.array([entry.get(stage, np.nan) for entry in logged], dtype=np.float32)
    return Candidates(base.docs, base.product_ids, base.stage, scores, base.ranks)


def _with_first_stage_ranks(candidates: Candidates, first_stage: Retriever, text: str) -> Candidates:
    """``candidates`` with the ``bm25``, ``dense`` and ``rrf`` rank columns the first stage gives them for
    ``text`` (:meth:`retrieval.hybrid.HybridRetriever.rank`: their ranks in its served runs, 0 where a run
    does not retrieve one). The impression log keeps each shown product's scores, not these ranks."""
    ranked = first_stage.rank(text, candidates.docs)
    row = {int(doc): i for i, doc in enumerate(ranked.docs.tolist())}
    order = np.array([row[int(doc)] for doc in candidates.docs.tolist()], dtype=np.int64)
    rebuilt = {run: np.asarray(ranked.ranks[run])[order] for run in ("bm25", "dense", "rrf") if run in ranked.ranks}
    return replace(candidates, ranks={**candidates.ranks, **rebuilt})


def logged_ranking_data(featurizer: LtrFeaturizer, shown: pd.DataFrame, store_frame: pd.DataFrame | None,
                        spelling: bool = True, first_stage: Retriever | None = None) -> tuple[RankingData, np.ndarray]:
    """Feature rows per logged search and each row's position (searches with one known product are skipped).
    Each typed query is analyzed as the first stage analyzes it (``spelling``: ``retrieval.spelling``), so BM25
    and the dense score read the text a search reads, not the text as typed. With ``first_stage`` (the served
    one) and rank features among the featurizer's, each search's first-stage ranks are rebuilt by ranking its
    shown products for the analyzed text again: with today's index and without the search's filters, so a
    product the catalog changed since, or a filtered search, may get other ranks than it was served with."""
    rows, labels, sizes, qids, positions = [], [], [], [], []
    names = featurizer.store_names
    ranker = first_stage if set(featurizer.names) & set(RANK_FEATURES) else None
    # ``store_frame`` holds one row per row of ``shown``, in its order: each search's rows are picked by their
    # row numbers, as a search's rows need not be next to each other (one logged as two ranking events with
    # another search between them)
    shown = shown.reset_index(drop=True)
    for request_id, group in shown.groupby("request_id", sort=False):
        part = store_frame.iloc[group.index.to_numpy()] if store_frame is not None else None
        candidates = _candidates(featurizer.index, group)
        if len(candidates) < 2:
            continue
        known = group[group["product_id"].isin(set(candidates.product_ids))]
        store = None
        if part is not None:
            part = part[group["product_id"].isin(set(candidates.product_ids)).to_numpy()]
            store = FeatureBatch(candidates.product_ids, {n: part[n].to_numpy(dtype=np.float32) for n in names})
        local = replace(featurizer, store=(lambda q, p, s=store: s) if store else None, student=None, teacher=None)
        typed = group["query"].iat[0]
        analysis = featurizer.index.analyzer.analyze(typed, spelling=spelling)
        if ranker is not None:
            candidates = _with_first_stage_ranks(candidates, ranker, analysis.text or typed)
        rows.append(local(Query(analysis.text or typed, group["user_id"].iat[0], analysis=analysis), candidates))
        labels.append(known["engagement"].to_numpy())
        positions.append(known["position"].to_numpy())
        sizes.append(len(known))
        qids.append(str(request_id))
    if not rows:
        return RankingData(np.zeros((0, len(featurizer.names)), np.float32), np.zeros(0, np.int32), [], featurizer.names), np.zeros(0)
    data = RankingData(np.vstack(rows).astype(np.float32), np.concatenate(labels).astype(np.int32), sizes,
                       featurizer.names, qids)
    return data, np.concatenate(positions)


def _split(data: RankingData, positions: np.ndarray, share: float) -> tuple[tuple, tuple]:
    cut_group = int(len(data.groups) * (1 - share))
    cut_row = int(sum(data.groups[:cut_group]))
    first = RankingData(data.features[:cut_row], data.labels[:cut_row], data.groups[:cut_group], data.names,
                        data.query_ids[:cut_group])
    second = RankingData(data.features[cut_row:], data.labels[cut_row:], data.groups[cut_group:], data.names,
                         data.query_ids[cut_group:])
    return (first, positions[:cut_row]), (second, positions[cut_row:])


def retrain(settings: Settings, featurizer: LtrFeaturizer, active: ServedModel | None,
            config: RetrainConfig = RetrainConfig(), first_stage: Retriever | None = None) -> dict:
    """Train and register a candidate from the logs (see module docstring).

    Args:
        settings: Where the logs, the registry and the feature store are.
        featurizer: The served featurizer (index and query encoder); the store
            features it reads are the active model's.
        active: The active LambdaMART (warm start, and the comparison), or None.
        first_stage: The served first stage (``SearchEngine.hybrid``), which rebuilds the
            logged searches' first-stage ranks when the active model reads them (the
            ``ranks`` features; the impression log does not keep them). Without it, such
            a model is not retrained: status "skipped", saying why.
    """
    settings.paths.retrain_lock.parent.mkdir(parents=True, exist_ok=True)
    with open(settings.paths.retrain_lock, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return {"status": "skipped", "reason": "another retrain is running"}
        _remove_unregistered(settings)
        # the window first: a bad --since/--until is an error (exit 2) whatever the log holds
        registry = ModelRegistry(settings.paths.models)
        since, until = _window(registry, config)
        names = list(active.model.names) if active else list(BASE_FEATURES)  # type: ignore[attr-defined]
        if active is not None and first_stage is None and set(names) & set(RANK_FEATURES):
            return {"status": "skipped", "reason": f"the active LambdaMART {active.version} reads the first stage's "
                    f"ranks ({', '.join(RANK_FEATURES)}), which the impression log does not keep: give retrain the "
                    "served first stage to rebuild them (`shoprank retrain` does)"}
        missing = _no_event_log(settings)
        if missing is not None:
            return missing
        # the window never ends after now (less the settle time without --until), --settle-minutes 0 included:
        # events may be stamped up to 24 hours ahead of the clock (online_learning.events.MAX_AHEAD), and a window
        # ending at such a search would record tomorrow as its end, so the next runs would skip every search logged
        # before then as learnt. Such a search waits for a run after its time.
        now = pd.Timestamp.now(tz="UTC")
        try:
            latest = now - pd.Timedelta(minutes=config.settle_minutes) if until is None else now
        except ValueError:  # pandas' times span about 292 years
            raise InvalidInput(f"settle_minutes={config.settle_minutes} reaches further back than pandas' times "
                               "go; pass at most 525600 (a year)") from None
        until = latest if until is None else min(until, latest)
        if since is not None and since >= until:
            return {"status": "up to date", "new_searches": 0, "since": since.isoformat(),
                    "until": until.isoformat(), "settle_minutes": config.settle_minutes}
        with dask_client(settings.compute) as client:  # None (in this process) unless compute.scheduler is set
            # the report goes into the model's metrics, which an erasure does not reach: no shopper in clear
            shown, filtered = impressions(settings.paths.event_log, since, until,
                                          FilterConfig() if config.filter_traffic else None, client,
                                          ForgetList(settings.paths.forgotten).pseudonym)
        searches = shown["request_id"].nunique() if not shown.empty else 0
        logged = searches + filtered.get("excluded_searches", 0)  # counted before the filters
        since_text = since.isoformat() if since is not None else None
        if searches < config.min_searches:  # nothing registered: the next run reads these searches again
            return _too_few(int(searches), int(logged), filtered, config.min_searches, since_text)
        clicks = int(shown["clicked"].sum())
        if not clicks:  # nothing to learn from, nothing registered: the next run reads these searches again
            return {"status": "no engagement", "new_searches": int(searches), "logged_searches": int(logged),
                    "since": since_text, "filtered": filtered,
                    "reason": "no shown product of the window's searches was clicked, carted or bought"
                              + (" (after the traffic filters: see `filtered`)" if filtered else "")}
        started = time.perf_counter()
        position_model = fit_position_model(shown[["query", "product_id", "position", "clicked"]], config.max_position)
        featurizer = replace(featurizer, names=names)
        store_names = featurizer.store_names
        data, positions = logged_ranking_data(featurizer, shown,
                                              _store_features(settings, shown) if store_names else None,
                                              settings.retrieval.spelling, first_stage)
        usable = len(data.groups)  # a search showing fewer than 2 products still indexed ranks nothing
        if usable < config.min_searches:  # nothing registered: the next run reads these searches again
            return {"status": "too few usable searches", "usable_searches": usable, "new_searches": int(searches),
                    "min_searches": config.min_searches, "since": since_text,
                    "reason": f"too few usable searches: {usable} of {searches} logged searches show 2 or more "
                              f"products still in the index, fewer than --min-searches {config.min_searches} (a "
                              "product deleted from the catalog, or not indexed here, cannot be featurized)"}
        try:
            candidate, lgb_config, metrics = _fit_candidate(data, positions, position_model, active, config)
        except lgb.basic.LightGBMError as error:  # e.g. every feature constant over a handful of searches
            start = since.isoformat() if since is not None else "the log's start"
            raise InvalidInput(f"LightGBM could not learn from the {usable} usable searches since {start}: {error}; "
                               "retrain on more traffic (--min-searches, --since)") from None
        window = {"since": str(since) if since is not None else None, "until": str(shown["timestamp"].max())}
        # registering moves the folder into the registry; one left by a run killed before that, the next removes
        work = settings.paths.training(f"{RETRAIN_FOLDER}{hashlib.sha1(str(window).encode()).hexdigest()[:10]}")
        candidate.save(work)
        entry = registry.register(
            "ltr", work, base_model="lightgbm-ips-lambdarank", parent=active.version if active else None,
            training_data=hashlib.sha256(",".join(data.query_ids).encode()).hexdigest()[:16],
            params={"data_window": window, "feature_service": settings.features.service if store_names else None,
                    "features": candidate.names, "propensities": [round(float(t), 4) for t in position_model.theta],
                    "config": asdict(config), "lightgbm": asdict(lgb_config)},
            metrics=metrics | {"clicks": clicks, "searches": int(searches),
                               "seconds": round(time.perf_counter() - started, 1), "filtered": filtered})
        out = {"status": "registered", "version": entry.version, "parent": entry.parent,
               "window": window, "metrics": entry.metrics, "propensities": entry.params["propensities"],
               "filtered": filtered}
        if position_model.clipped >= (len(position_model.theta) - 1) / 2:
            out["warning"] = (f"{position_model.clipped} of the {len(position_model.theta) - 1} positions after the "
                              "first came out examined at least as often as position 1 (propensity 1): the position-"
                              "bias correction is mostly off. Position 1 then mostly shows products rarely clicked "
                              "anywhere (pins, a fixed product on top); the candidate learnt clicks as logged")
            logger.warning("retrain: %s", out["warning"])
        return out


def no_event_log(settings: Settings, config: RetrainConfig = RetrainConfig()) -> dict | None:
    """:func:`retrain`'s "no event log" outcome when no search is logged in ``settings.paths.event_log``, else None,
    after the same check of the given window (:class:`InvalidInput`: ``since`` not before ``until``), which is
    the run's error whatever the log holds. ``shoprank retrain`` asks before it opens the served engine: opening it
    in a home without an index (a mistyped SHOPRANK_HOME) builds a demo store and its index there first."""
    _window(ModelRegistry(settings.paths.models), config)
    return _no_event_log(settings)


def _no_event_log(settings: Settings) -> dict | None:
    """The "no event log" outcome when the event log holds no ranking file, else None: not "up to date", as
    nothing was ever logged here."""
    if log_files(settings.paths.event_log, "rankings"):
        return None
    return {"status": "no event log", "reason": f"no search is logged in {settings.paths.event_log} "
            "(settings.paths.event_log): check SHOPRANK_HOME, and that the log sink (`shoprank consume "
            "sink`) or `shoprank events import --spool` runs before the retrain"}


def _window(registry: ModelRegistry, config: RetrainConfig) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """The window as given: from ``config.since``, else the end of the last run's (``registry``), to
    ``config.until`` (None: not given); :class:`InvalidInput` when its start is not before its end."""
    since = _utc(config.since, "since") if config.since else _last_window_end(registry)
    until = _utc(config.until, "until") if config.until else None
    if since is not None and until is not None and since >= until:
        raise InvalidInput(f"since {since.isoformat()} is not before until {until.isoformat()}")
    return since, until


def _remove_unregistered(settings: Settings) -> None:
    """Delete the candidate folders of runs killed after saving their candidate and before registering it (which
    moves the folder into the registry). Called under the retrain lock: no other run is writing one now."""
    for left in settings.paths.training(RETRAIN_FOLDER).parent.glob(f"{RETRAIN_FOLDER}*"):
        shutil.rmtree(left, ignore_errors=True)


def _too_few(searches: int, logged: int, filtered: dict, min_searches: int, since: str | None) -> dict:
    """The outcome of a window with fewer than ``min_searches`` searches after the traffic filters: "up to date"
    when none was logged, "too few searches after the filters" when the filters dropped enough of the
    ``logged`` ones to fall below, else "too few new searches"."""
    out = {"new_searches": searches, "logged_searches": logged, "min_searches": min_searches, "since": since}
    if not logged:
        return {"status": "up to date", **out}
    if logged < min_searches:
        return {"status": "too few new searches", **out, "filtered": filtered}
    return {"status": "too few searches after the filters", **out, "filtered": filtered,
            "reason": f"the traffic filters dropped {logged - searches} of the window's {logged} logged searches "
                      f"(see `filtered`: an anomalous shopper's volume, clicks or conversions), leaving {searches}, "
                      f"fewer than --min-searches {min_searches}: check the shoppers they count "
                      "(`anomalous_by_reason`; named by a keyed hash, `shoprank events pseudonym --user ID`: a "
                      "storefront that sends one user id for every visitor reads as one anomalous shopper); "
                      "`--no-filter` measures what the filters do"}


def _utc(text: str, name: str) -> pd.Timestamp:
    """An ISO 8601 time as a UTC timestamp (no offset: UTC); :class:`InvalidInput` naming ``name`` when pandas
    cannot read it."""
    try:
        stamp = pd.Timestamp(text)
    except ValueError:  # e.g. an ISO week date, which Python reads and pandas does not
        raise InvalidInput(f"{name} {text!r} is not an ISO 8601 time pandas reads (2026-12-01 or "
                           "2026-12-01T08:00:00)") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _last_window_end(registry: ModelRegistry) -> pd.Timestamp | None:
    """Where the newest LambdaMART's logs ended, registered or deleted since (a candidate an experiment
    rejected): the next retrain reads from there, never a window a run already learnt. A window recorded as
    ending after its model was registered (a run from before the window was kept from ending after now, which
    a search stamped ahead of the clock made it do) ends at the registration: what was logged after it was not
    learnt, and is read by the next run."""
    manifests = [(v.params, v.created) for v in registry.versions("ltr")] + [
        (d.get("params") or {}, d.get("created")) for d in registry.deleted("ltr")]
    stamps = []
    for params, created in manifests:
        if until := (params.get("data_window") or {}).get("until"):
            end = _utc(until, "until")
            stamps.append(min(end, _utc(created, "created")) if created else end)
    return max(stamps) if stamps else None


def _store_features(settings: Settings, shown: pd.DataFrame) -> pd.DataFrame:
    """Each impression's store features as of its own time (Feast's point-in-time join)."""
    from core import feast_repo
    from ranking.training.ltr_data import historical_features

    store = feast_repo.open_store(settings)
    entities = shown[["product_id", "user_id", "timestamp"]].rename(columns={"timestamp": "event_timestamp"})
    entities["user_id"] = entities["user_id"].fillna("anonymous")
    return historical_features(store, settings.features.service, entities)


def _fit_candidate(data, positions, position_model, active: ServedModel | None,  # type: ignore[no-untyped-def]
                   config: RetrainConfig) -> tuple[LambdaMART, LambdaMARTConfig, dict[str, float]]:
    """The candidate, trained with inverse-propensity weights (warm-started from the active model) and
    early-stopped on the searches after its training ones, and the IPS-weighted DCG@10 of it and of the active
    model on the latest searches, held out from both: the round early stopping chose is the best on its own
    searches, so compared there the candidate would look better than it is."""
    from ranking.unbiased import ips_dcg

    (seen, seen_pos), (held, held_pos) = _split(data, positions, config.valid_share)
    (train, train_pos), (valid, valid_pos) = _split(seen, seen_pos, config.valid_share)
    train_ips, valid_ips = 1 / position_model.propensity(train_pos), 1 / position_model.propensity(valid_pos)
    held_ips = 1 / position_model.propensity(held_pos)
    parent_model = active.model if active else None
    # the parent's monotone features stay monotone: the candidate's score is the parent's plus these trees
    monotone = tuple(parent_model.config.monotone) if parent_model else ()  # type: ignore[attr-defined]
    lgb_config = LambdaMARTConfig(seed=config.seed, max_grade=3, min_data_in_leaf=50, num_leaves=15,
                                  learning_rate=0.03, monotone=monotone)
    candidate = LambdaMART.fit_unbiased(train, valid, train_ips, valid_ips, lgb_config, parent=parent_model)  # type: ignore[arg-type]
    def held_out(model: LambdaMART) -> float:
        return round(ips_dcg(held.groups, held.labels, held_ips, model.predict(held.features)), 4)

    metrics = {"valid_ips_dcg@10": round(ips_dcg(valid.groups, valid.labels, valid_ips,
                                                 candidate.predict(valid.features)), 4),
               "held_out_ips_dcg@10": held_out(candidate), "train_searches": len(train.groups),
               "valid_searches": len(valid.groups), "held_out_searches": len(held.groups)}
    if active is not None:
        metrics["active_held_out_ips_dcg@10"] = held_out(active.model)  # type: ignore[arg-type]
    return candidate, lgb_config, metrics
