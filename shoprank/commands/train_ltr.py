"""``shoprank train ltr``: LambdaMART on the served first stage's lists, registered.

By default each training query's list is the first stage's top ``--depth`` as
the engine serves it (the query analyzer included), with judged grades and the unjudged
candidates as grade 0 (``--negatives``); the features are the served
featurizer's (model scores of the registered cross-encoders, served ranks,
query-product text features, store features as of the simulated world's
"now"). LightGBM LambdaMART stops early on the dev split's NDCG@10; the model
is registered with its parameters, feature importance and the versions it was
trained beside (``--activate``: served next; the first version is activated).
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.arguments import count, positive, random_seed
from core.compute import check_scheduler, dask_client
from core.errors import InvalidInput
from core.files import write_text_atomic
from core.registry import ModelRegistry
from core.settings import Settings
from evaluation.dataset import load_dataset
from ranking.lambdamart import GAINS, OBJECTIVES, TUNABLE
from shoprank.commands.arguments import out_folder, run_name
from shoprank.commands.training import own_training_folder

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

    from evaluation.dataset import EvalDataset
    from ranking.lambdamart import LambdaMART, RankingData
    from ranking.training.data import Fold, Group
    from ranking.training.ltr_data import TrainingList
    from serving.engine import SearchEngine


def cmd_train_ltr(args: argparse.Namespace, settings: Settings) -> int:
    from ranking.lambdamart import LambdaMART, training_config

    check_scheduler(settings.compute)  # before the lists are built: a scheduler that is not there is named now
    dataset = load_dataset(args.dataset)
    if args.from_data is not None:
        if args.fold_encoders:
            raise InvalidInput("--fold-encoders builds the training lists; rows read with --from-data are built "
                               "already (save cross-fitted rows with --fold-encoders ... --save-data FOLDER)")
        parts, meta = _load_data(args.from_data)
        saved = meta.get("dataset")
        if saved is not None and saved != dataset.digest:
            raise InvalidInput(f"--from-data {args.from_data} holds rows of another dataset (digest {saved[:12]}, "
                               f"not {dataset.digest[:12]} of {args.dataset}): give the --dataset they were built from")
        top = max(int(parts["train"].labels.max(initial=0)), int(parts["dev"].labels.max(initial=0)))
        if top > dataset.max_grade:
            raise InvalidInput(f"--from-data {args.from_data} has grades up to {top}, above {args.dataset}'s "
                               f"{dataset.max_grade}: give the --dataset they were built from")
    else:
        parts, meta = _build_data(args, settings, dataset)
        if args.save_data is not None:
            _save_data(args.save_data, parts, meta)
    config = training_config(parts["train"].names, dataset.max_grade, args.truncation or meta["depth"], args.monotone,
                             seed=args.seed, gains=args.gains, objective=args.objective, **dict(args.param))
    with dask_client(settings.compute) as client:  # on Dask when compute.scheduler is set (the fit only)
        model = LambdaMART.fit(parts["train"], parts["dev"], config, client=client)
    params = {**asdict(config), "features": model.names,
              **{k: v for k, v in meta.items() if k not in ("parent", "training_data")}}
    _register(args, settings, model, meta, params, int(len(parts["train"].labels)))
    return 0


def _build_data(args: argparse.Namespace, settings: Settings,
                dataset: EvalDataset) -> tuple[dict[str, RankingData], dict[str, Any]]:
    """The train and dev feature rows of the served lists, and what they were built from."""
    from ranking.features import GROUPS as FEATURE_GROUPS
    from ranking.features import feature_names
    from ranking.lambdamart import RankingData
    from ranking.training.data import data_hash, groups_from
    from serving.loading import open_engine

    negatives = getattr(args, "negatives", None if args.lists != "judged" else 3)  # default: all; judged lists 3
    if args.lists == "judged" and negatives is None:
        raise InvalidInput("--negatives all needs --lists served; with --lists judged pass a number of negatives")
    groups_wanted = [g for g in args.features.split(",") if g]
    unknown = [g for g in groups_wanted if g not in (*FEATURE_GROUPS, "store")]
    if unknown or not groups_wanted:
        raise InvalidInput(f"--features {args.features!r}: give groups among {[*FEATURE_GROUPS, 'store']}, "
                           "comma-separated")
    if args.no_store_features:
        groups_wanted = [g for g in groups_wanted if g != "store"]
        if not groups_wanted:
            raise InvalidInput(f"--features {args.features!r} with --no-store-features leaves no feature group; "
                               f"give groups among {list(FEATURE_GROUPS)} too")
    folds = _fold_encoders(args.fold_encoders, settings)
    # the rows' store features are read point-in-time from the offline store (_rows), never online: no warm-up
    engine = open_engine(settings, dataset.products, batch=True, warm_features=False)
    train = groups_from(dataset, args.split, 2)[: args.limit]
    dev = groups_from(dataset, args.dev_split, 2)
    store = _StoreContext.open(settings, train + dev, args.seed) if "store" in groups_wanted else None
    depth = args.depth or settings.ranking.ltr_depth
    names = feature_names(groups_wanted, store.names if store else [])
    build = functools.partial(_rows, args, depth=depth, negatives=negatives, names=names, store=store,
                              progress=settings.progress)
    if folds:  # each fold's lists from the bi-encoder trained without it; the dev lists as served
        chosen = [(_held(fold, train), spec) for fold, spec in folds]  # every fold checked before the work
        held = [build(_fold_engine(settings, dataset, spec), {"train": groups})["train"] for groups, spec in chosen]
        parts = {"train": RankingData.concat(held), "dev": build(engine, {"dev": dev})["dev"]}
    else:
        parts = build(engine, {"train": train, "dev": dev})
    meta = {"split": args.split, "dev_split": args.dev_split, "lists": args.lists, "depth": depth,
            "below_depth": args.below_depth, "negatives": negatives, "feature_groups": groups_wanted,
            "feature_service": settings.features.service if store else None, "served_models": engine.versions,
            # the student picked the teacher's rows of each list (serving keeps it for them: build_pipelines)
            "student_depth": settings.ranking.student_depth if engine.student else 0,
            "parent": f"reranker:{engine.teacher.version}" if engine.teacher else None,
            "training_data": data_hash(train), "dataset": dataset.digest} | (
                {"fold_encoders": [spec for _, spec in folds]} if folds else {}) | (
                {"second_encoder_weight": settings.retrieval.second_encoder_weight}
                if settings.retrieval.second_encoder is not None else {})
    return parts, meta


def _rows(args: argparse.Namespace, engine: SearchEngine, groups: dict[str, list[Group]], depth: int,
          negatives: int | None, names: list[str], store: _StoreContext | None,
          progress: bool) -> dict[str, RankingData]:
    """Each split's feature rows: its lists as ``engine`` serves them, featurized by ``engine``."""
    from ranking.training.ltr_data import entity_rows, historical_features, ranking_data

    lists = _training_lists(args, engine, groups, depth, negatives, progress)
    featurizer = engine.featurizer(names)
    parts = {}
    for name, items in lists.items():
        frame = (historical_features(store.store, store.service, entity_rows(items, store.users, store.when))
                 if store else None)
        if not items:
            raise InvalidInput(f"the {name} split gives no list to learn from: each needs two or more products, one "
                               "of them judged (more queries, --limit, or a deeper --depth)")
        parts[name] = ranking_data(items, featurizer, frame, store.users if store else {}, progress)
    return parts


def _fold_encoders(text: str | None, settings: Settings) -> list[tuple[Fold, str]]:
    """``--fold-encoders``: fold i of K with the bi-encoder (``biencoder:vN``) trained without it."""
    from ranking.training.data import Fold

    if not text:
        return []
    specs = [spec.strip() for spec in text.split(",")]
    if len(specs) < 2:
        raise InvalidInput(f"--fold-encoders {text!r}: name a bi-encoder for each fold, two or more, "
                           "as biencoder:v7,biencoder:v8")
    if settings.retrieval.second_encoder is not None:  # it would build every fold's lists, trained on them or not
        raise InvalidInput(f"--fold-encoders replaces the encoder only, and retrieval.second_encoder "
                           f"{settings.retrieval.second_encoder!r} would build every fold's lists too: unset it to "
                           "cross-fit, or train on the served lists without --fold-encoders")
    registry, folds = ModelRegistry(settings.paths.models), []
    for index, spec in enumerate(specs):
        fold = Fold(index, len(specs))
        role, _, version = spec.partition(":")
        if role != "biencoder" or not version:
            raise InvalidInput(f"--fold-encoders: {spec!r} is not a registered bi-encoder; write biencoder:vN")
        held_out = registry.get("biencoder", version).params.get("held_out")
        if held_out != str(fold):
            trained = f"without fold {held_out}" if held_out else "on every query"
            raise InvalidInput(f"--fold-encoders: {spec} would build fold {fold}'s lists, but it was trained "
                               f"{trained}; train one with `shoprank train biencoder --dataset D --hold-out {fold}`")
        folds.append((fold, spec))
    return folds


def _held(fold: Fold, train: list[Group]) -> list[Group]:
    held = [g for g in train if fold.holds(g.qid)]
    if not held:
        raise InvalidInput(f"fold {fold} holds none of the {len(train)} training queries; name fewer --fold-encoders")
    return held


def _fold_engine(settings: Settings, dataset: EvalDataset, spec: str) -> SearchEngine:
    from serving.loading import open_engine

    return open_engine(settings.model_copy(update={"encoder": spec}), dataset.products, batch=True,
                       warm_features=False)


def _save_data(folder: Path, parts: dict[str, RankingData], meta: dict[str, Any]) -> None:
    """``--save-data``: each split's rows (``train.npz``, ``dev.npz``) and ``lists.json`` (what built them)."""
    from ranking.training.ltr_data import save_ranking_data

    for name, data in parts.items():
        save_ranking_data(folder / f"{name}.npz", data)
    write_text_atomic(folder / "lists.json", json.dumps(meta, indent=2))  # whole or not at all: --from-data reads it


META_KEYS = {"depth", "parent", "training_data"}  # what training and registering read of lists.json


def _load_data(folder: Path) -> tuple[dict[str, RankingData], dict[str, Any]]:
    """``--from-data``: what :func:`_save_data` wrote."""
    from ranking.training.ltr_data import load_ranking_data

    missing = [n for n in ("train.npz", "dev.npz", "lists.json") if not (folder / n).is_file()]
    if missing:
        raise InvalidInput(f"--from-data {folder}: no {', '.join(missing)} there; write them with "
                           f"shoprank train ltr --dataset D --save-data {folder}")
    try:
        meta = json.loads((folder / "lists.json").read_text())
        if not isinstance(meta, dict) or not META_KEYS <= set(meta):
            raise ValueError(f"lists.json is not a JSON object with {', '.join(sorted(META_KEYS))}")
        return {n: load_ranking_data(folder / f"{n}.npz") for n in ("train", "dev")}, meta
    except (ValueError, OSError, KeyError) as error:  # a file of something else (numpy raises ValueError)
        raise InvalidInput(f"--from-data {folder}: its files are not what `shoprank train ltr --save-data` writes "
                           f"({str(error)[:200]}); write them again") from None


@dataclass
class _StoreContext:
    """The Feast store the training rows read, its feature names, a simulated user per judged query,
    and the time every row stands at (the simulated world's "now")."""

    store: FeatureStore
    service: str
    names: list[str]
    users: dict[str, str]
    when: pd.Timestamp

    @classmethod
    def open(cls, settings: Settings, groups: list[Group], seed: int) -> _StoreContext:
        import pandas as pd

        from core import feast_repo
        from ranking.training.ltr_data import assign_users
        from simulation.world import StoreWorld

        command = f"shoprank --store {settings.store}" if settings.store else "shoprank"  # this store's commands
        if not (feast_repo.features_dir(settings) / "registry.db").is_file():
            raise InvalidInput(f"the store feature group reads the feature store, which is not built here: run "
                               f"`{command} features build`, `{command} features apply` and `{command} features "
                               "materialize`, or pass --no-store-features")
        store = feast_repo.open_store(settings)
        try:
            service = store.get_feature_service(settings.features.service)
        except Exception as error:  # noqa: BLE001 - Feast's FeatureServiceNotFoundException, among others
            raise InvalidInput(f"feature service {settings.features.service!r} is not in the feature store ({error}); "
                               f"run `{command} features apply`, or pass --no-store-features") from None
        names = [f.name for p in service.feature_view_projections for f in p.features]
        world = StoreWorld.load(settings.paths.world)
        users = assign_users(groups, world.users["user_id"].tolist(), seed)
        return cls(store, settings.features.service, names, users, pd.Timestamp(world.config.now))


def _training_lists(args: argparse.Namespace, engine: SearchEngine, groups: dict[str, list[Group]], depth: int,
                    negatives: int | None, progress: bool) -> dict[str, list[TrainingList]]:
    """Each split's lists: the served first stage's top ``depth`` (``--lists served``, and the
    judged products ranked among themselves once more for ``served+judged``), or the judged
    products with ``negatives`` mined first-stage candidates (``--lists judged``)."""
    from ranking.training.data import mine_negatives
    from ranking.training.ltr_data import judged_lists, served_lists

    first_stage = engine.pipeline("hybrid")  # the served first stage (query analyzer included)
    lists = {}
    for name, chosen in groups.items():
        if args.lists != "judged":
            lists[name] = served_lists(chosen, first_stage, engine.index, depth, negatives, args.seed,
                                       progress, below=args.below_depth)
            if args.lists == "served+judged" and name == "train":
                lists[name] += judged_lists(chosen, first_stage, engine.index)
        else:
            if negatives:  # unjudged first-stage candidates as grade 0 (see ranking/training/ltr_data.py)
                mine_negatives(chosen, first_stage, engine.index, negatives, seed=args.seed, progress=progress)
            lists[name] = judged_lists(chosen, first_stage, engine.index)
    return lists


def _register(args: argparse.Namespace, settings: Settings, model: LambdaMART, meta: dict[str, Any],
              params: dict[str, object], train_rows: int) -> None:
    """Save the model, register it with its parameters and metrics, activate it when asked (or first)."""
    # a folder of this run's own: two runs of one --run-name at once never register each other's model
    work = own_training_folder(settings, f"ltr-{args.run_name}")
    model.save(work)
    registry = ModelRegistry(settings.paths.models)
    try:
        entry = registry.register(
            "ltr", work, base_model="lightgbm-lambdarank", parent=meta["parent"],
            training_data=meta["training_data"], params=params,
            metrics={"dev_ndcg@10_lightgbm": model.history["dev_ndcg@10"],
                     "best_iteration": model.history["best_iteration"],
                     "train_rows": train_rows, "importance": model.importance()})
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the registry holds its copy
    if args.activate or registry.active("ltr") is None:
        registry.activate("ltr", entry.version)
    print(json.dumps({"registered": entry.to_json()}, indent=2))


def tunable(text: str) -> tuple[str, float | int]:
    """argparse type of ``--param``: NAME=VALUE of a LambdaMART setting."""
    from ranking.lambdamart import parse_tunable

    try:
        return parse_tunable(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def negatives_count(text: str) -> int | None:
    """argparse type of ``--negatives``: a whole number >= 0, or ``all``."""
    return None if text == "all" else count(text)


def add_parser(kinds: argparse._SubParsersAction) -> None:
    """``train ltr`` under ``shoprank train``."""
    p = kinds.add_parser("ltr", help="LambdaMART (LightGBM) over model scores and store features")
    p.add_argument("--dataset", required=True, type=Path)
    p.add_argument("--split", default="train")
    p.add_argument("--dev-split", default="dev", help="early stopping on this split's NDCG@10")
    p.add_argument("--no-store-features", action="store_true", help="leave the store features out")
    p.add_argument("--features", default="base,ranks,relevance,store",
                   help="feature groups, comma-separated: base (BM25, dense, cross-encoder scores), ranks (served "
                        "ranks), relevance (query-product text features), store (feature store)")
    p.add_argument("--lists", choices=("served", "judged", "served+judged"), default="served",
                   help="served: each query's first-stage top --depth as served, with judged grades; judged: the "
                        "judged products ranked among themselves; served+judged: both lists of each training query")
    p.add_argument("--depth", type=positive, default=None, help="served list depth (default: ranking.ltr_depth)")
    p.add_argument("--below-depth", action=argparse.BooleanOptionalAction, default=False,
                   help="with --lists served: also learn from the judged products retrieved below --depth (default: "
                        "off; on, the model learns that deep ranks hold judged products and must never serve deeper)")
    p.add_argument("--negatives", type=negatives_count, default=argparse.SUPPRESS,
                   help="unjudged first-stage candidates per query kept with grade 0: a number, or 'all' (with --lists "
                        "served); default: all with --lists served, 3 with --lists judged")
    p.add_argument("--monotone", action=argparse.BooleanOptionalAction, default=True,
                   help="BM25, dense and cross-encoder scores may only raise a product's rank (default: on)")
    p.add_argument("--gains", choices=GAINS, default="linear",
                   help="gain of a grade in the objective: linear (as NDCG is reported, default) or exponential "
                        "(2^grade - 1: the best grades weigh more)")
    p.add_argument("--objective", choices=OBJECTIVES, default="lambdarank",
                   help="LightGBM's ranking objective: lambdarank (pairwise, default) or rank_xendcg (XE-NDCG: "
                        "listwise, gains 2^grade; --gains and --truncation do not apply)")
    p.add_argument("--truncation", type=positive, default=None,
                   help="the objective weighs a pair of products only when one of them is in the top N of the "
                        "model's current ranking (LightGBM's lambdarank_truncation_level); default: the list depth")
    p.add_argument("--param", type=tunable, action="append", default=[], metavar="NAME=VALUE",
                   help=f"a LightGBM setting, repeatable: {', '.join(TUNABLE)}")
    rows = p.add_mutually_exclusive_group()  # rows read back are already saved: one or the other
    rows.add_argument("--save-data", type=out_folder, default=None, metavar="FOLDER",
                      help="also write the train and dev feature rows there (for --from-data and "
                           "benchmarks/ltr_search.py)")
    rows.add_argument("--from-data", type=Path, default=None, metavar="FOLDER",
                      help="train on rows written by --save-data instead of building the lists (the list and "
                           "feature options are those saved)")
    p.add_argument("--fold-encoders", default=None, metavar="SPEC,SPEC[,...]",
                   help="cross-fitting: fold i of the training queries gets its lists from the i-th bi-encoder "
                        "(biencoder:vN, trained with `shoprank train biencoder --hold-out i/K`), so their first-stage "
                        "scores and ranks are a model's on queries it never saw, as when served; the dev lists stay "
                        "the served encoder's")
    p.add_argument("--seed", type=random_seed, default=13)
    p.add_argument("--limit", type=positive, default=None)
    p.add_argument("--run-name", type=run_name, default="run")
    p.add_argument("--activate", action="store_true")
    p.set_defaults(handler=cmd_train_ltr)
