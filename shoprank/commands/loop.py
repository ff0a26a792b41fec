"""The learning loop from the shell: consume, simulate, retrain, warm the score store, promote, guard, report."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from core.arguments import count, positive, random_seed
from core.errors import Conflict, InvalidInput, NotFound, NotReady
from core.files import finite
from core.settings import Settings
from shoprank.commands.arguments import days, minutes, out_file, timestamp

if TYPE_CHECKING:
    from online_learning.consumers.streaming_features import StreamingFeatures


def _bootstrap(args: argparse.Namespace, settings: Settings) -> str:
    from core.service_settings import check_kafka_bootstrap

    bootstrap = args.bootstrap or settings.events.kafka_bootstrap
    if not bootstrap:
        raise InvalidInput("no Kafka to consume from: pass --bootstrap HOST:PORT or set SHOPRANK_EVENTS__KAFKA_BOOTSTRAP")
    try:
        return check_kafka_bootstrap(bootstrap)
    except ValueError as err:
        raise InvalidInput(f"--bootstrap: {err}") from None


def streaming_features(settings: Settings) -> StreamingFeatures:
    """The streaming feature consumer's handler: its state, each product's category id and price (for the
    profiles, from the offline ``product_attributes`` table of ``shoprank features build``, simulated or from
    the catalog, read again when a rebuild replaces it) and a push to the Feast online store. Opening it pushes
    the profiles marked to push."""
    from core import feast_repo
    from online_learning.consumers.streaming_features import (
        ProductAttributes,
        StreamingFeatures,
        feast_push,
    )

    table = feast_repo.features_dir(settings) / "product_attributes.parquet"
    if not table.is_file():
        raise NotFound(f"no feature tables in {table.parent}: run `shoprank features build --from-catalog` (the "
                       "store's own data) or `shoprank features build` (a simulated store), then `features apply`")
    return StreamingFeatures(settings.paths.streaming_state, ProductAttributes(table),
                             feast_push(feast_repo.open_store(settings)))


def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    from online_learning.consumers.base import ConsumerLoop
    from online_learning.events import topics as store_topics
    from online_learning.forget_list import ForgetList

    topics = list(store_topics(settings.store))
    if args.kind == "sink":
        from online_learning.consumers.log_sink import ParquetLogSink

        handle = ParquetLogSink(settings.paths.event_log)
    else:
        handle = streaming_features(settings)
    group = args.group or (f"shoprank-{args.kind}" + (f"-{settings.store}" if settings.store else ""))
    loop = ConsumerLoop(_bootstrap(args, settings), group, topics, handle,
                        settings.paths.dead_letters(args.kind), forget=ForgetList(settings.paths.forgotten))
    loop.run(idle_exit=args.idle_exit)
    print(json.dumps({"consumed": loop.consumed, "invalid": loop.invalid, "forgotten": loop.forgotten}))
    return 0


def _simulate_base_url(url: str) -> str:
    """``--base-url`` when it is an http(s) URL with a host, else :class:`InvalidInput` naming what to give."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput(f"--base-url {url!r} is not an http:// or https:// URL with a host: give the server's "
                           "address with its scheme, e.g. --base-url http://127.0.0.1:8000")
    return url


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from evaluation.dataset import load_dataset
    from simulation.simulator import TrafficSimulator
    from simulation.world import StoreWorld

    base_url = _simulate_base_url(args.base_url)
    given = (("--attack-query", args.attack_query), ("--attack-bots", args.attack_bots),
             ("--attack-searches", args.attack_searches))
    attack_options = [flag for flag, value in given if value not in (None, [])]
    if not args.attack_product and attack_options:
        raise InvalidInput(f"{', '.join(attack_options)} without --attack-product: name the product the bots click "
                           "(--attack-product ID), or leave the attack options out")
    if args.attack_product and not args.attack_query:
        raise InvalidInput("--attack-product needs at least one --attack-query")
    simulator = TrafficSimulator(base_url, StoreWorld.load(settings.paths.world), load_dataset(args.dataset),
                                 args.split, seed=args.seed)
    attack = None
    if args.attack_product:
        from simulation.attack import ClickAttack

        sizes = {"bots": args.attack_bots, "searches": args.attack_searches}  # left out: ClickAttack's defaults
        attack = ClickAttack(args.attack_product, args.attack_query,
                             **{name: n for name, n in sizes.items() if n is not None})
    report = simulator.run(args.sessions, args.concurrency, start=args.start, progress=settings.progress,
                           attack=attack)
    if not report["overall"]["searches"]:  # a server out of reach, or one that refused every search
        raise NotReady(f"none of the {args.sessions} simulated searches succeeded at --base-url {base_url} (errors: "
                       f"{report['errors']}): start the server there (`shoprank serve`) or pass the URL it "
                       "listens on")
    if args.out:
        Path(args.out).write_text(json.dumps(finite(report), indent=2, allow_nan=False))
    print(json.dumps(finite({k: v for k, v in report.items() if k != "sessions_detail"}), indent=2, allow_nan=False))
    return 0


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    from online_learning.retrain import RetrainConfig, no_event_log, retrain
    from serving.loading import open_engine

    config = RetrainConfig(since=args.since, until=args.until, min_searches=args.min_searches,
                           filter_traffic=not args.no_filter, settle_minutes=args.settle_minutes)
    # the log before the engine: opening it in a home without an index (a mistyped SHOPRANK_HOME) builds a demo
    # store and its index there, minutes and about 100 MB, only to be told "no event log" after
    result = no_event_log(settings, config)
    if result is None:
        engine = open_engine(settings, batch=True)  # the served index, query encoder and first stage, active models
        result = retrain(settings, engine.featurizer([]), engine.ltr, config, engine.hybrid)
    print(json.dumps(result, indent=2, default=str))
    return 1 if result["status"] == "no event log" else 0  # a wrong home or a sink that never ran fails the job


def cmd_warm_scores(args: argparse.Namespace, settings: Settings) -> int:
    """Score the head queries' first-stage top K with the served cross-encoders into the score store, after
    pruning what the store has held longer than ``serving.score_store_ttl_days``.

    The prune comes first: a pair the warm finds in the store is not written again and keeps the time it was
    first written, so a prune after the warm would delete the head pairs it had just warmed (those stored
    longer ago than the TTL). Pruned first, they are scored and written afresh."""
    from dataclasses import asdict

    from online_learning.analysis import head_queries
    from serving.loading import open_engine
    from serving.router import load_router
    from serving.warm import warm_scores

    if args.queries < 1 or args.depth < 1:
        raise InvalidInput(f"--queries {args.queries} and --depth {args.depth} must both be at least 1")
    ranked = head_queries(settings.paths.event_log, 2**31 - 1)  # every logged query, most searched first
    head = ranked[: args.queries]
    if not head:  # nothing to do tonight: not a failure of the nightly job
        print(json.dumps({"warmed": 0, "reason": f"no logged searches in {settings.paths.event_log} (the log "
                          "sink, or `shoprank events import --spool` without Kafka, fills it)"}))
        return 0
    router = load_router(settings.paths)  # the experiment's arms and the shadow: their searches read scores too
    router.close()
    # the served index, analyzer and active models, and the LambdaMART versions the experiment serves
    engine = open_engine(settings, ltr_versions=router.ltr_versions, warm_features=False)
    try:
        ttl = settings.serving.score_store_ttl_days
        pruned = engine.caches.store.prune(ttl * 86400) if ttl and engine.caches.store else 0
        try:
            report = warm_scores(engine, [q for q, _ in head], args.depth, progress=settings.progress)
        except NotReady as reason:  # no cross-encoder served: nothing to warm, not a failure either
            print(json.dumps({"warmed": 0, "pruned": pruned, "reason": reason.message}))
            return 0
    finally:
        engine.close()
    searches = sum(c for _, c in ranked)
    head_searches = sum(c for _, c in head)
    print(json.dumps(asdict(report) | {"pruned": pruned, "head_searches": head_searches, "logged_searches": searches,
                                       "logged_queries": len(ranked),
                                       "searches_covered": round(head_searches / searches, 4)}, indent=2))
    return 1 if report.unwritten else 0


def cmd_suggestions(args: argparse.Namespace, settings: Settings) -> int:
    """Count the texts shoppers searched, for query suggestions (``<home>/suggest/searches.json``)."""
    import pandas as pd

    from online_learning.analysis import searched_texts
    from serving.suggestions import write_searched

    if args.min_shoppers < 1 or args.days < 1:
        raise InvalidInput(f"--min-shoppers {args.min_shoppers} and --days {args.days} must both be at least 1")
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=args.days)
    searches = searched_texts(settings.paths.event_log, args.min_shoppers, since)
    path = settings.paths.suggestions
    write_searched(path, searches, since=since.isoformat(), min_shoppers=args.min_shoppers)
    print(json.dumps({"texts": len(searches), "file": str(path), "since": since.isoformat(),
                      "min_shoppers": args.min_shoppers}, indent=2))
    return 0


def cmd_recommendations(args: argparse.Namespace, settings: Settings) -> int:
    """Count the products shoppers act on together, for ``/v1/recommend`` (``<home>/recommend/together.json``)."""
    import pandas as pd

    from online_learning.cooccurrence import together, write_together
    from online_learning.traffic_filter import FilterConfig

    if args.min_shoppers < 1 or args.days < 1 or not 1 <= args.top <= 500:
        raise InvalidInput(f"--min-shoppers {args.min_shoppers} and --days {args.days} must both be at least 1, "
                           f"--top {args.top} in 1..500")
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=args.days)
    tables = together(settings.paths.event_log, since, args.min_shoppers, args.top,
                      None if args.no_filter else FilterConfig())
    path = settings.paths.recommendations
    about = {"since": since.isoformat(), "min_shoppers": args.min_shoppers, "top": args.top,
             "filtered": not args.no_filter}
    write_together(path, tables, **about)
    print(json.dumps({"file": str(path), **about,
                      "products": {name: len(table) for name, table in tables.items()},
                      "pairs": {name: sum(map(len, table.values())) for name, table in tables.items()}}, indent=2))
    return 0


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    """Decide on the running experiment; with ``--apply``, activate its winner and stop it.

    With no experiment running, the decision is "none running" (exit 0): a nightly ``promote --apply`` stopped the
    experiment it promoted, and the nights after, until the next one starts, are not failures of the job. Another
    experiment than the one named running is the command's error (exit 2): the job names the wrong one."""
    from core.files import exclusive
    from core.registry import ModelRegistry
    from online_learning.analysis import interleaving, searches
    from online_learning.experiments import read_config
    from online_learning.promotion import Policy, decide_experiment, decide_interleaving
    from serving.loading import check_loads, push_state
    from serving.router import save_router_config

    policy = Policy(sequential=not args.single_look)
    config = settings.paths.experiment_config
    experiment, shadow = read_config(config)
    if experiment is None:
        print(json.dumps({"experiment": args.experiment, "decision": "none running",
                          "reasons": [f"no experiment is running (none in {config}): nothing to decide on or "
                                      "activate; `promote --apply` stops the experiment it promotes, and `PUT "
                                      "/v1/admin/experiment` starts the next"]}, indent=2))
        return 0
    if experiment.name != args.experiment:
        raise InvalidInput(f"experiment {args.experiment!r} is not the running one ({experiment.name!r} is): name "
                           "the running experiment with --experiment")
    control = experiment.control
    if experiment.mode == "ab":
        decision, treatment = decide_experiment(searches(settings.paths.event_log, experiment.name), experiment,
                                                policy)
    else:
        treatment = experiment.treatment
        versions = {arm: a.ltr for arm, a in experiment.arms.items()}
        decision = decide_interleaving(interleaving(settings.paths.event_log, experiment.name, control, treatment,
                                                    versions=versions), control, treatment, policy)
    out = {"experiment": experiment.name, "decision": decision.action, "reasons": decision.reasons,
           "details": decision.details}
    if decision.action == "promote":
        out["winner"] = treatment
    if args.apply and decision.action == "promote":
        winner = experiment.arms[treatment].ltr
        check_loads(settings, "ltr", winner)  # refused (409) before anything points at a version that does not load
        with exclusive(config):  # the admin API's experiment changes wait, and none made meanwhile is overwritten
            if read_config(config) != (experiment, shadow):
                raise Conflict(f"the experiment configuration {config} changed while promote decided on experiment "
                               f"{experiment.name!r}; nothing was activated: run promote again to decide on what "
                               "runs now")
            ModelRegistry(settings.paths.models).activate("ltr", winner)
            # every shopper gets the winner now; a shadow of it would only rank every search twice
            save_router_config(settings.paths, None, shadow if shadow != winner else None)
        push_state(settings)
        out["activated"] = {"ltr": winner}
        out["stopped"] = experiment.name
    print(json.dumps(finite(out), indent=2, default=str, allow_nan=False))
    return 0


def cmd_guard(args: argparse.Namespace, settings: Settings) -> int:
    from core.registry import ModelRegistry
    from online_learning.analysis import searches
    from online_learning.promotion import check_regression
    from serving.loading import check_loads, push_state

    registry = ModelRegistry(settings.paths.models)
    active = registry.active("ltr")
    previous = registry.previous("ltr") if active else None
    if active is None or previous is None:
        print(json.dumps({"decision": "keep", "reasons": ["no earlier active version to compare with"]}))
        return 0
    decision = check_regression(searches(settings.paths.event_log), active.version, previous)
    out = {"active": active.version, "previous": previous, "decision": decision.action, "reasons": decision.reasons,
           "details": decision.details}
    if args.apply and decision.action == "rollback":  # refused (409) if another version was activated meanwhile
        out["rolled_back_to"] = registry.rollback("ltr", lambda version: check_loads(settings, "ltr", version),
                                                  expected=active.version, onto=previous).version
        push_state(settings)
    print(json.dumps(finite(out), indent=2, default=str, allow_nan=False))
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from online_learning.analysis import (
        compare_arms,
        interleaving,
        logged_teams,
        searches,
        segments,
    )
    from online_learning.report import render
    from serving.router import load_router

    root = settings.paths.event_log
    table = searches(root, args.experiment)
    if table.empty:
        raise InvalidInput(f"no logged searches of experiment {args.experiment!r} in {root}")
    running = load_router(settings.paths).experiment
    running = running if running is not None and running.name == args.experiment else None
    interleaved = bool((table["arm"] == "interleaved").any())
    # the arms (A/B) or teams (interleaving) the log holds, the running experiment's control first
    names = (logged_teams(root, args.experiment) if interleaved
             else sorted(str(a) for a in table["arm"].dropna().unique()))
    for flag, name in (("--control", args.control), ("--treatment", args.treatment)):
        if name is not None and name not in names:
            raise InvalidInput(f"{flag} {name!r} is not an arm of experiment {args.experiment!r}; its logged "
                               f"{'teams' if interleaved else 'arms'} are {names}")
    default = (running.control if running is not None and running.control in names
               else "control" if "control" in names else (names[0] if names else None))
    control = args.control or default or "control"
    others = [a for a in names if a != control]
    treatment = args.treatment or (others[0] if others else None)
    if treatment is None or treatment == control:
        raise InvalidInput(f"experiment {args.experiment!r} logged {names}: name two different arms with --control "
                           "and --treatment")
    if interleaved:
        report, parts, result = None, None, interleaving(root, args.experiment, control, treatment)
    else:
        report, parts, result = (compare_arms(table, control, treatment), segments(table, control, treatment),
                                 None)
    path = render(args.experiment, table, report, result, Path(args.out), parts)
    print(json.dumps({"report": str(path), "searches": len(table), "control": control, "treatment": treatment}))
    return 0


def cmd_report_terms(args: argparse.Namespace, settings: Settings) -> int:
    """The search terms report: most searched texts, those showing nothing, those never clicked."""
    import pandas as pd

    from online_learning.analysis import searches, terms_report
    from online_learning.report import render_terms

    if args.days < 1 or args.top < 1 or args.min_searches < 1:
        raise InvalidInput(f"--days {args.days}, --top {args.top} and --min-searches {args.min_searches} must each "
                           "be at least 1")
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=args.days)
    report = terms_report(searches(settings.paths.event_log, since=since), args.top, args.min_searches)
    if args.out:
        render_terms(report, since.isoformat(), Path(args.out))
    print(json.dumps({"since": since.isoformat(), **report, **({"report": args.out} if args.out else {})}, indent=2))
    return 0


def cmd_report_reformulations(args: argparse.Namespace, settings: Settings) -> int:
    """What shoppers searched next when a search failed them, and the synonym rules that suggests."""
    import pandas as pd

    from online_learning.reformulations import as_rows, reformulations, synonym_file
    from online_learning.report import render_reformulations

    if args.min_shoppers < 1 or not 1 <= args.window_s <= 3600 or not 1 <= args.top <= 10_000:
        raise InvalidInput(f"--min-shoppers {args.min_shoppers} must be at least 1, --window-s {args.window_s} in "
                           f"1..3600 and --top {args.top} in 1..10000")
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=args.days)
    found = reformulations(settings.paths.event_log, since, args.window_s, args.min_shoppers, args.top)
    rows = as_rows(found)
    if args.out:
        render_reformulations(rows, since.isoformat(), Path(args.out))
    if args.synonyms_out:
        Path(args.synonyms_out).write_text(synonym_file(found))
    print(json.dumps({"since": since.isoformat(), "reformulations": rows,
                      **({"report": args.out} if args.out else {}),
                      **({"synonyms": args.synonyms_out} if args.synonyms_out else {})}, indent=2))
    return 0


def cmd_report_shelves(args: argparse.Namespace, settings: Settings) -> int:
    """Listings and recommendation shelves: shown, clicked, carted, bought, revenue, per shelf."""
    import pandas as pd

    from online_learning.analysis import searches, shelves_report
    from online_learning.report import render_shelves

    if args.days < 1:
        raise InvalidInput(f"--days {args.days} must be at least 1")
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=args.days)
    report = shelves_report(searches(settings.paths.event_log, since=since, shelves=True))
    if args.out:
        render_shelves(report, since.isoformat(), Path(args.out))
    print(json.dumps({"since": since.isoformat(), **report, **({"report": args.out} if args.out else {})}, indent=2))
    return 0


def cmd_report_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Paired comparison of two ``shoprank simulate --out`` files of the same sessions (same --seed)."""
    from simulation.simulator import compare_replays

    reports = []
    for path in (args.first, args.second):
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise InvalidInput(f"cannot read simulation report {path}: {err}") from err
        if not isinstance(report, dict) or "sessions_detail" not in report:
            raise InvalidInput(f"{path} has no 'sessions_detail': write it with `shoprank simulate ... --out FILE`")
        detail = report["sessions_detail"]
        if not isinstance(detail, dict) or not all(
                str(n).isdecimal() and str(n).isascii() and isinstance(s, dict)
                and {"true_ndcg@10", "purchased", "clicked"} <= set(s) for n, s in detail.items()):
            raise InvalidInput(f"{path}: 'sessions_detail' is not session number -> its true_ndcg@10, purchased and "
                               "clicked, as `shoprank simulate ... --out FILE` writes")
        for n, session in detail.items():  # numbers, as the simulator writes them: else a traceback, or no CI
            for metric in ("true_ndcg@10", "purchased", "clicked"):
                value = session[metric]
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise InvalidInput(f"{path}: session {n}'s {metric} is {value!r}, not a finite number as "
                                       "`shoprank simulate ... --out FILE` writes")
        reports.append(report)
    out = compare_replays(*reports)
    out["first"], out["second"] = str(args.first), str(args.second)
    print(json.dumps(out, indent=2))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("consume", help="run a Kafka consumer: the Parquet log sink or streaming features")
    p.add_argument("kind", choices=("sink", "features"))
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--group", default=None)
    p.add_argument("--idle-exit", type=float, default=None,
                   help="stop after N idle seconds (default: run forever); with no partitions for max(N, 60) s "
                        "(a broker out of reach), fail naming the broker")
    p.set_defaults(handler=cmd_consume)

    p = sub.add_parser("simulate", help="simulated shoppers search the HTTP API and click/buy (SIMULATED)")
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--dataset", required=True, type=Path)
    p.add_argument("--split", default="train", choices=("train", "dev"))
    p.add_argument("--sessions", type=positive, default=1000)
    p.add_argument("--concurrency", type=positive, default=4)
    p.add_argument("--seed", type=random_seed, default=0)
    p.add_argument("--start", type=count, default=0, help="first session number (continue a run)")
    p.add_argument("--out", type=out_file, default=None)
    p.add_argument("--attack-product", default=None, help="SIMULATED attack: bots click this product id ...")
    p.add_argument("--attack-query", action="append", default=[], help="... for this query (repeat for several)")
    p.add_argument("--attack-bots", type=positive, default=None,
                   help="bot users sharing the attack (default 1, or a swarm)")
    p.add_argument("--attack-searches", type=count, default=None, help="attack searches in all (default 300)")
    p.set_defaults(handler=cmd_simulate)

    p = sub.add_parser("retrain", help="train and register a LambdaMART candidate from logged traffic")
    p.add_argument("--since", type=timestamp, default=None, help="ISO 8601 (default: the end of the last retrain's "
                   "window)")
    p.add_argument("--until", type=timestamp, default=None, help="ISO 8601 (default: --settle-minutes ago)")
    p.add_argument("--settle-minutes", type=minutes, default=60.0, help="without --until, leave the last "
                   "MINUTES of searches to the next run, so their late clicks and purchases are in (default 60, "
                   "at most 525600: a year)")
    p.add_argument("--min-searches", type=positive, default=200)
    p.add_argument("--no-filter", action="store_true",
                   help="learn from every logged event (no traffic filters): only to measure what they do")
    p.set_defaults(handler=cmd_retrain)

    p = sub.add_parser("warm-scores", help="nightly, after retrain: score the most searched queries' top K "
                       "with the served cross-encoders into the shared score store")
    p.add_argument("--queries", type=int, default=5000, help="head queries of the event log (N most searched; "
                   "the report's searches_covered is the share of logged searches they make)")
    p.add_argument("--depth", type=int, default=20, help="first-stage candidates scored per query (K; "
                   "ranking.teacher_depth is what a search scores)")
    p.set_defaults(handler=cmd_warm_scores)

    p = sub.add_parser("suggestions", help="nightly: the texts enough shoppers searched, for query suggestions "
                       "(servers read the file again once a /v1/suggest call sees it changed)")
    p.add_argument("--min-shoppers", type=int, default=3, help="distinct shoppers (user, else session) who "
                   "searched a text for it to be suggested (default 3)")
    p.add_argument("--days", type=days, default=90, help="searches of the last DAYS days (default 90)")
    p.set_defaults(handler=cmd_suggestions)

    p = sub.add_parser("recommendations", help="nightly: the products shoppers cart, buy or click together, "
                       "for /v1/recommend (servers read the file again once a call sees it changed)")
    p.add_argument("--min-shoppers", type=int, default=2, help="distinct shoppers (user, else session) who acted "
                   "on both products of a pair for it to be recommended (default 2)")
    p.add_argument("--days", type=days, default=90, help="interactions of the last DAYS days (default 90)")
    p.add_argument("--top", type=int, default=50, help="neighbours kept per product (default 50)")
    p.add_argument("--no-filter", action="store_true",
                   help="count every logged event (no traffic filters): only to measure what they do")
    p.set_defaults(handler=cmd_recommendations)

    p = sub.add_parser("promote", help="apply the promotion policy to the running experiment")
    p.add_argument("--experiment", required=True)
    p.add_argument("--apply", action="store_true", help="activate the winner in the registry")
    p.add_argument("--single-look", action="store_true", help="promote on the fixed-horizon p-value: for one look "
                   "at a sample size planned beforehand, not for a job that reads the same experiment again every "
                   "night (the default, always-valid p, holds however often it is read)")
    p.set_defaults(handler=cmd_promote)

    p = sub.add_parser("guard", help="roll back the active LambdaMART if it regressed")
    p.add_argument("--apply", action="store_true")
    p.set_defaults(handler=cmd_guard)

    report = sub.add_parser("report", help="analyst reports")
    kinds = report.add_subparsers(dest="kind", required=True)
    p = kinds.add_parser("ab", help="HTML A/B (and interleaving) report with plots")
    p.add_argument("--experiment", required=True)
    p.add_argument("--out", type=out_file, required=True)
    p.add_argument("--control", default=None)
    p.add_argument("--treatment", default=None)
    p.set_defaults(handler=cmd_report)
    p = kinds.add_parser("terms", help="search terms: the most searched texts, those showing nothing, those "
                         "never clicked (JSON; HTML with --out)")
    p.add_argument("--days", type=days, default=30, help="searches of the last DAYS days (default 30)")
    p.add_argument("--top", type=int, default=50, help="rows per list (default 50)")
    p.add_argument("--min-searches", type=int, default=5, help="searches a text needs to be listed as showing "
                   "nothing or never clicked (default 5)")
    p.add_argument("--out", type=out_file, default=None, help="also write the HTML report here")
    p.set_defaults(handler=cmd_report_terms)
    p = kinds.add_parser("shelves", help="listings and recommendation shelves: shown, clicked, carted, bought, "
                         "revenue, per shelf (JSON; HTML with --out)")
    p.add_argument("--days", type=days, default=30, help="shelves shown in the last DAYS days (default 30)")
    p.add_argument("--out", type=out_file, default=None, help="also write the report as HTML to this path")
    p.set_defaults(handler=cmd_report_shelves)
    p = kinds.add_parser("reformulations", help="what shoppers searched next when a search failed them, with the "
                         "synonym rules that suggests (JSON; HTML with --out)")
    p.add_argument("--days", type=days, default=30, help="searches of the last DAYS days (default 30)")
    p.add_argument("--window-s", type=float, default=120.0, help="most seconds between the two searches "
                   "(default 120)")
    p.add_argument("--min-shoppers", type=int, default=3, help="distinct shoppers a pair needs to be listed "
                   "(default 3)")
    p.add_argument("--top", type=int, default=200, help="most pairs listed (default 200)")
    p.add_argument("--out", type=out_file, default=None, help="also write the HTML report here")
    p.add_argument("--synonyms-out", type=out_file, default=None, help="also write the rules as a synonyms file "
                   "to review (retrieval.synonyms' format)")
    p.set_defaults(handler=cmd_report_reformulations)
    p = kinds.add_parser("replay", help="paired comparison of two `simulate --out` files of the same sessions")
    p.add_argument("first", type=Path, help="simulation report of the baseline")
    p.add_argument("second", type=Path, help="simulation report of the same sessions against the candidate")
    p.set_defaults(handler=cmd_report_replay)
