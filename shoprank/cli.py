"""The ``shoprank`` command line: index, delete, serve, demo, and the command groups.

Every command reads settings from the environment / ``SHOPRANK_CONFIG`` and
flags override them. A failing command prints one ``error:`` line naming the
bad value and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.arguments import positive, whole_at_least
from core.errors import InvalidInput, ShopRankError
from core.hardware import limit_math_threads
from core.service_settings import ApiSettings
from core.settings import Settings, get_settings, home_problem, unknown_variables
from shoprank.commands.arguments import in_file, index_name

logger = logging.getLogger("shoprank")


def _settings(args: argparse.Namespace) -> Settings:
    settings = get_settings()
    updates = {}
    if getattr(args, "home", None) is not None:  # an empty --home "$HOME_DIR" is an error, not the default home
        if not str(args.home).strip():
            raise InvalidInput("--home is empty: give the artifact home's folder (or leave --home out)")
        updates["home"] = Path(args.home)
    if getattr(args, "no_progress", False):
        updates["progress"] = False
    if getattr(args, "log_level", None) is not None:  # the flag overrides the environment, as every flag does
        updates["log_level"] = args.log_level
    settings = settings.model_copy(update=updates) if updates else settings
    if (problem := home_problem(settings.home)) is not None:  # --home, else SHOPRANK_HOME or the config file's
        given = f"--home {args.home}" if "home" in updates else f"the artifact home {settings.home} (SHOPRANK_HOME)"
        raise InvalidInput(f"{given} {problem}: give the artifact home's folder")
    if getattr(args, "store", None) is not None:  # the command's own --store (index, keys create): it checks it
        if getattr(args, "global_store", None) not in (None, args.store):
            raise InvalidInput(f"shoprank --store {args.global_store!r} and the command's --store {args.store!r} "
                               "name two stores: give one")
        return settings.model_copy(update={"store": None})
    # --store "" names no store: refused, not the default; SHOPRANK_STORE (or the config file's store) is
    # checked as the flag is, so that no command writes into a store `shoprank serve` never serves, but only by
    # the commands that work on one store: those on the whole home (the cluster, the key file, the artifact
    # store, the settings) use none, and a store deleted while still exported must not block them
    store = getattr(args, "global_store", None)
    if store is None and not getattr(args, "home_wide", False):
        store = settings.store
    if store is not None:
        from core.keys import check_store_name

        settings = settings.for_store(check_store_name(store))
        if not settings.paths.base.is_dir() and getattr(args, "command", None) != "index":
            folder = settings.paths.stores
            known = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
            raise InvalidInput(f"store {store!r} does not exist ({folder}/ holds {known or 'none'}); "
                               f"`shoprank --store {store} index --catalog FILE` makes it")
    return settings


def cmd_index(args: argparse.Namespace) -> int:
    from retrieval.catalog import read_catalog
    from retrieval.index import ProductIndex
    from serving import indexing

    settings = _settings(args)
    if args.store is not None:  # `shoprank index --store NAME` = `shoprank --store NAME index` ("": refused)
        from core.keys import check_store_name

        settings = settings.for_store(check_store_name(args.store))
    if args.scheduler:  # encode the catalog on Dask (see docs/batch_jobs.md)
        settings = settings.model_copy(update={"compute": settings.compute.model_copy(
            update={"scheduler": args.scheduler})})
    products, report = read_catalog(args.catalog, skip_bad_rows=args.skip_bad_rows)
    if products.empty:
        raise InvalidInput(f"catalog {args.catalog} has no valid product ({report.rows_read} rows read, "
                           f"{report.rows_skipped} skipped as bad); the index is left as it was")
    encoder = indexing.open_encoder(settings)
    path = indexing.index_path(settings, encoder, args.name)
    summary: dict[str, object] = {"catalog": str(args.catalog), "rows_read": report.rows_read,
                                  "rows_skipped": report.rows_skipped, "index": str(path)}
    with indexing.building(path):  # one write of an index at a time (another command, a starting server)
        if args.upsert and (path / "manifest.json").is_file():
            index = ProductIndex.load(path, indexing.retrieval_settings(settings))
            cache = indexing.embedding_cache(settings, encoder)
            upserted = index.upsert(products, encoder, cache, progress=settings.progress)
            if index.needs_compaction():
                index = index.compact(encoder, cache)
                summary["compacted"] = True
            summary["upsert"] = asdict(upserted)
        else:
            index = indexing.build_index(settings, products, path, encoder)
    summary |= {"products": index.count, "dense_index": index.manifest.dense_kind,
                "catalog_hash": index.manifest.catalog_hash, "build_seconds": index.manifest.build_seconds}
    print(json.dumps(summary, indent=2))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from retrieval.index import ProductIndex
    from serving import indexing

    settings = _settings(args)
    ids = list(args.product_ids)
    if args.from_file:
        try:
            text = Path(args.from_file).read_bytes().decode("utf-8-sig")  # a byte-order mark is no part of an id
        except UnicodeDecodeError as error:
            raise InvalidInput(f"--from-file {args.from_file} is not UTF-8 text (byte {error.start}); save it as "
                               "UTF-8, one product id a line") from None
        ids += [line.strip() for line in text.splitlines() if line.strip()]
    ids = list(dict.fromkeys(ids))  # an id named twice is deleted (and counted) once
    encoder = indexing.open_encoder(settings)
    path = indexing.index_path(settings, encoder, args.name)
    with indexing.building(path):  # one write of an index at a time
        index = ProductIndex.load(path, indexing.retrieval_settings(settings))
        deleted, unknown = index.delete(ids)
        summary: dict[str, object] = {"deleted": deleted, "not_found": unknown, "products": index.count}
        if index.needs_compaction():  # as an upsert does: a fifth of the rows dead
            index = index.compact(encoder, indexing.embedding_cache(settings, encoder))
            summary["compacted"] = True
    print(json.dumps(summary))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``api.workers`` server processes sharing the port (0: one per usable core; each loads its
    own engine and gets its share of the cores' ONNX Runtime threads), or one process."""
    import uvicorn

    settings = _settings(args)
    if args.workers is not None and not 0 <= args.workers <= 64:
        raise InvalidInput(f"--workers {args.workers} is out of range; pass 1..64 server processes, or 0 for "
                           "one per core")
    updates = {}
    if args.catalog:
        if not Path(args.catalog).is_file():
            raise InvalidInput(f"--catalog {args.catalog}: no such file; give a CSV, Parquet or JSONL catalog")
        updates["catalog"] = Path(args.catalog)
    flags = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v is not None}
    try:  # checked as the settings are: --port 70000 is refused, not served on another port
        api = ApiSettings.model_validate({**settings.api.model_dump(), **flags})
    except ValidationError as error:
        bad = "; ".join(f"--{e['loc'][0]} {e.get('input')!r}: {e['msg']}" for e in error.errors())
        raise InvalidInput(f"bad flag(s): {bad}") from None
    settings = settings.model_copy(update=updates | {"api": api})
    from serving.indexing import check_catalog_to_build

    check_catalog_to_build(settings)  # SHOPRANK_CATALOG it would index: refused before any server process starts
    level = (args.log_level or settings.log_level).lower()
    limit_math_threads(settings.serving.math_threads)  # before FAISS loads
    processes = api.processes()
    # a replica brings its home up to date here, before any server process starts (its own pull at start then
    # finds nothing to pull) and before anything is built: it serves what the artifact store holds, and a pull
    # that fails is this command's one error line
    from serving.loading import pull_artifacts

    pull_artifacts(settings)
    if processes == 1:
        from api.main import create_app

        # access_log off: the app logs every request itself (shoprank.access: request id, status, ms)
        uvicorn.run(create_app(settings), host=api.host, port=api.port, log_level=level, access_log=False)
        return 0
    # worker processes build their app from the environment: pass the flags on through it
    os.environ["SHOPRANK_API__WORKERS"] = str(processes)  # each takes its share of the cores
    os.environ["SHOPRANK_API__HOST"], os.environ["SHOPRANK_API__PORT"] = api.host, str(api.port)  # X-Served-By
    os.environ["SHOPRANK_HOME"] = str(settings.home.resolve())
    os.environ["SHOPRANK_PROGRESS"] = "true" if settings.progress else "false"
    os.environ["SHOPRANK_LOG_LEVEL"] = level.upper()  # the workers log at the level the command was given
    if settings.catalog:
        os.environ["SHOPRANK_CATALOG"] = str(Path(settings.catalog).resolve())
    # once, before the workers start, so they only load it; in a child process, so that this
    # supervisor does not keep the index and encoder it loaded (~370 MiB on 54,667 products)
    from serving.indexing import build_index_in_child

    build_index_in_child(tolerate_not_ready=True)  # one it cannot build: the workers then answer 503, naming it
    # the workers' counters and histograms go to one folder, so that /metrics sums them all
    own_metrics = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    if own_metrics:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="shoprank-metrics-")
    else:  # the operator's folder: made when missing (every worker would fail to start on it)
        Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    logger.info("serving with %d processes on %s:%d", processes, api.host, api.port)
    try:
        _serve_processes(uvicorn.Config("api.main:app_from_env", factory=True, host=api.host, port=api.port,
                                         workers=processes, log_level=level, access_log=False), api.worker_start_s)
    finally:
        if own_metrics:
            shutil.rmtree(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"), ignore_errors=True)
    return 0


def _serve_processes(config: Any, start_s: float) -> None:
    """uvicorn's supervisor of ``config.workers`` processes on one socket, whose rolling restart (SIGHUP) gives
    each new process ``start_s`` to load (it takes connections once loaded while its peers serve); its pings of
    running processes keep uvicorn's own timeout, so a hung one is still replaced within seconds."""
    from uvicorn.supervisors import Multiprocess

    class Rolling(Multiprocess):
        def restart_all(self) -> None:
            ping_s = self.config.timeout_worker_healthcheck
            self.config.timeout_worker_healthcheck = start_s  # read by restart_all's wait for the new process
            try:
                super().restart_all()
            finally:
                self.config.timeout_worker_healthcheck = ping_s

    Rolling(config, sockets=[config.bind_socket()]).run()


at_least_10 = whole_at_least(10)  # a demo catalog: enough products to judge queries against


def cmd_demo(args: argparse.Namespace) -> int:
    from simulation.demo import write_demo

    if not args.out.strip():  # an empty --out "$DIR" would be the working directory: its README.md written over
        raise InvalidInput("--out is empty: name a folder for the demo store")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InvalidInput(f"--out {args.out} is a file: name a folder for the demo store")
    try:
        out = write_demo(Path(args.out), n_products=args.products, n_queries=args.queries, seed=args.seed)
    except OSError as error:
        raise InvalidInput(f"--out {args.out} cannot be written ({error.strerror or error}): name a folder you "
                           "may write for the demo store") from None
    print(json.dumps({"out": str(out), "products": args.products, "queries": args.queries}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoprank", description="Learning-to-rank product search.")
    parser.add_argument("--home", help="artifacts folder (default: $SHOPRANK_HOME or ./artifacts)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--store", dest="global_store", default=None, metavar="NAME",
                        help="work on this store's index, models, features and events (<home>/stores/NAME/; "
                             "default: the default store)")
    parser.add_argument("--log-level", default=None, type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="any case")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="build (or upsert into) a product index from a catalog file")
    p.add_argument("--catalog", required=True, type=Path, help="CSV, Parquet or JSONL with product_id, title")
    p.add_argument("--name", type=index_name, default=None, help="index name (default: settings.index_name)")
    p.add_argument("--upsert", action="store_true", help="add/update these products in the existing index")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip bad rows (counted) instead of failing")
    p.add_argument("--store", default=None, metavar="NAME", help="index another store's catalog (<home>/stores/NAME/; "
                   "`shoprank serve` then serves it under /v1/stores/NAME/)")
    p.add_argument("--scheduler", default=None, help="encode on Dask: 'local' or 'tcp://HOST:PORT' (default: "
                   "settings.compute.scheduler; unset: in this process)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("delete", help="delete products from an index by id")
    p.add_argument("product_ids", nargs="*", help="product ids")
    p.add_argument("--from-file", type=in_file, help="file with one product id per line")
    p.add_argument("--name", type=index_name, default=None)
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("serve", help="start the HTTP API")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--catalog", default=None, help="catalog to index if no index exists (default: demo store)")
    p.add_argument("--workers", type=int, default=None, help="server processes (default: api.workers; 0: one per "
                   "core)")
    p.set_defaults(func=cmd_serve)

    from shoprank.commands import (
        artifacts,
        cluster,
        config,
        evaluate,
        events,
        features,
        keys,
        loop,
        models,
        train,
    )

    evaluate.add_parsers(sub)
    train.add_parsers(sub)
    models.add_parsers(sub)
    features.add_parsers(sub)
    loop.add_parsers(sub)
    config.add_parsers(sub)
    keys.add_parsers(sub)
    events.add_parsers(sub)
    cluster.add_parsers(sub)
    artifacts.add_parsers(sub)

    p = sub.add_parser("demo", help="write the synthetic demo store (catalog + judged queries)")
    p.add_argument("--out", required=True)
    p.add_argument("--products", type=at_least_10, default=2000, help="products in the catalog (at least 10)")
    p.add_argument("--queries", type=positive, default=300, help="judged queries (at least 1)")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_demo)
    return parser


def _warn_unknown_variables() -> None:
    """Warn of every ``SHOPRANK_*`` variable that names no setting, once per command a person runs: here, where
    logging is set up (the level holds), and not in the processes `shoprank cluster up` starts (marked with
    ``SHOPRANK_STARTED_BY``), which inherit the same environment; server worker processes never run this."""
    if os.environ.get("SHOPRANK_STARTED_BY"):
        return
    for warning in unknown_variables():
        logger.warning("%s", warning)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        level = args.log_level or get_settings().log_level
    except ShopRankError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _warn_unknown_variables()
    try:
        if hasattr(args, "handler"):
            return int(args.handler(args, _settings(args)))
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except ShopRankError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder that cannot be made or written (a read-only disk, /proc): one line, not a trace
        logger.debug("the command failed", exc_info=True)
        where = f"{err.filename}: " if err.filename else ""  # an error of no file: no empty name before it
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
