"""``shoprank features build|apply|materialize``: the feature store from the shell.

``build --from-catalog`` writes the offline Parquet tables from the store's own
data (:mod:`online_learning.feature_tables`); ``build`` alone simulates the store
world for a catalog (SIMULATED prices, stock, promotions, users and histories; see
:mod:`simulation.world`) and writes them from it; ``apply`` registers the Feast definitions in
``feature_repo/``; ``materialize`` loads the online store (sqlite or Redis).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core import feast_repo
from core.arguments import positive, random_seed
from core.errors import InvalidInput
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
    if args.from_catalog:
        return _build_from_catalog(args, settings)
    from online_learning.consumers.streaming_features import seed_history
    from simulation.feature_data import write_feature_tables
    from simulation.world import WorldConfig, build_world

    index = _index_for(args, settings)
    live = index.products["live"].to_numpy()
    world = build_world(index.live_products(), index.dense.vectors[live],
                        WorldConfig(seed=args.seed, users=args.users, categories=args.categories))
    world.save(settings.paths.world)
    counts = write_feature_tables(world, feast_repo.features_dir(settings))
    # the world's purchases in the streaming state: a shopper's next purchase adds to their profile
    seed_history(settings.paths.streaming_state, world.history, prefix="world-")
    print(json.dumps({"world": str(settings.paths.world), "tables": counts, "categories": len(world.category_names),
                      "note": "SIMULATED store signals"}, indent=2))
    return 0


def _build_from_catalog(args: argparse.Namespace, settings: Settings) -> int:
    """The store's own feature tables: its served catalog's columns and its event log (no simulation)."""
    from datetime import UTC, datetime

    from online_learning.feature_tables import write_catalog_tables

    if args.dataset:
        raise InvalidInput("--from-catalog reads the served catalog (`shoprank index --catalog FILE`); leave out "
                           "--dataset, which names a catalog to simulate a store world for")
    from serving import indexing

    encoder = indexing.open_encoder(settings)
    if not (indexing.index_path(settings, encoder) / "manifest.json").is_file() and not settings.catalog:
        raise InvalidInput("no served index to read the catalog from: index the store's catalog first (`shoprank "
                           "index --catalog FILE`, or set SHOPRANK_CATALOG); --from-catalog never reads the demo store")
    index = indexing.open_index(settings, encoder)
    counts = write_catalog_tables(index.live_products(), settings.paths.event_log, feast_repo.features_dir(settings),
                                  datetime.now(UTC), settings.paths.streaming_state, settings.paths.forgotten)
    print(json.dumps({"tables": counts, "catalog": str(index.path), "event_log": str(settings.paths.event_log),
                      "note": "the store's own data: catalog columns and the event log's last 30 days"}, indent=2))
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
    p = verbs.add_parser("build", help="write the offline feature tables: from the store's catalog and event log "
                         "(--from-catalog), or from a simulated store world")
    p.add_argument("--from-catalog", action="store_true", help="the store's own data: prices, categories, brands, "
                   "stock and promotions from the served catalog's columns, popularity and shopper profiles from the "
                   "event log (no simulation)")
    p.add_argument("--dataset", type=Path, help="simulate for a dataset folder's catalog (default: the served one)")
    p.add_argument("--users", type=positive, default=2000)
    p.add_argument("--categories", type=positive, default=48)
    p.add_argument("--seed", type=random_seed, default=7)
    p.set_defaults(handler=cmd_build)
    for verb, handler, text in (("apply", cmd_apply, "register feature_repo/ definitions (feast apply)"),
                                ("materialize", cmd_materialize, "load the online store (feast materialize)")):
        p = verbs.add_parser(verb, help=text)
        p.add_argument("--online-store", choices=("sqlite", "redis"), default=None)
        p.set_defaults(handler=handler)
