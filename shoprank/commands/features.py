"""``shoprank features build|apply|materialize``: the feature store from the shell.

``build`` simulates the store world for a catalog (SIMULATED prices, stock,
promotions, users and histories; see :mod:`simulation.world`) and writes the
offline Parquet tables; ``apply`` registers the Feast definitions in
``feature_repo/``; ``materialize`` loads the online store (sqlite or Redis).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core import feast_repo
from core.settings import Settings


def _index_for(args: argparse.Namespace, settings: Settings):  # type: ignore[no-untyped-def]
    products = None
    if args.dataset:
        from evaluation.dataset import load_dataset

        products = load_dataset(args.dataset).products
    from serving import (
        indexing,  # here, not at the top: `shoprank serve` sets OpenMP threads before FAISS loads
    )

    return indexing.open_index(settings, indexing.open_encoder(settings), products)


def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    from simulation.feature_data import write_feature_tables
    from simulation.world import WorldConfig, build_world

    index = _index_for(args, settings)
    live = index.products["live"].to_numpy()
    world = build_world(index.live_products(), index.dense.vectors[live],
                        WorldConfig(seed=args.seed, users=args.users, categories=args.categories))
    world.save(settings.paths.world)
    counts = write_feature_tables(world, feast_repo.features_dir(settings))
    print(json.dumps({"world": str(settings.paths.world), "tables": counts, "categories": len(world.category_names),
                      "note": "SIMULATED store signals"}, indent=2))
    return 0


def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    settings = _with_store(args, settings)
    names = feast_repo.apply(settings)
    print(json.dumps({"applied": names, "online_store": settings.features.online_store}))
    return 0


def cmd_materialize(args: argparse.Namespace, settings: Settings) -> int:
    settings = _with_store(args, settings)
    feast_repo.materialize(settings)
    print(json.dumps({"materialized": True, "online_store": settings.features.online_store}))
    return 0


def _with_store(args: argparse.Namespace, settings: Settings) -> Settings:
    if not getattr(args, "online_store", None):
        return settings
    features = settings.features.model_copy(update={"online_store": args.online_store})
    return settings.model_copy(update={"features": features})


def add_parsers(sub: argparse._SubParsersAction) -> None:
    features = sub.add_parser("features", help="build, apply and materialize the feature store")
    verbs = features.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("build", help="simulate the store world and write offline feature tables")
    p.add_argument("--dataset", type=Path, help="a dataset folder (default: the served catalog)")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--categories", type=int, default=48)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(handler=cmd_build)
    for verb, handler, text in (("apply", cmd_apply, "register feature_repo/ definitions (feast apply)"),
                                ("materialize", cmd_materialize, "load the online store (feast materialize)")):
        p = verbs.add_parser(verb, help=text)
        p.add_argument("--online-store", choices=("sqlite", "redis"), default=None)
        p.set_defaults(handler=handler)
