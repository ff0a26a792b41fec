"""``shoprank train``: the command group, and its cross-encoders, ``reranker`` and ``student``.

``biencoder`` is :mod:`shoprank.commands.train_biencoder`, ``ltr`` :mod:`shoprank.commands.train_ltr`;
what they share is in :mod:`shoprank.commands.training`. Each command trains on ``--split`` of ``--dataset``, selects on a fixed sample
of the dev split, registers the result in the model registry with a manifest
(training-data hash, base model, parameters, dev metrics, parent) and exports
ONNX fp32 + int8 for serving. ``--activate`` makes it the active version (the
first version of a role is activated automatically).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from core.arguments import count, positive, positive_number, random_seed
from core.errors import InvalidInput, NotFound
from core.files import write_text_atomic
from core.registry import ModelRegistry
from core.settings import Settings
from evaluation.dataset import EvalDataset, load_dataset
from ranking.training.data import add_precision_argument
from retrieval.encoder import BUNDLED
from shoprank.commands import train_biencoder, train_ltr
from shoprank.commands.arguments import base_model, run_name
from shoprank.commands.training import (
    add_elsewhere_arguments,
    base_label,
    check_work_folder,
    dev_sample,
    first_stage,
    teacher_model,
    trained,
)

if TYPE_CHECKING:  # serving loads FAISS: imported where used, after `shoprank serve` set its OpenMP threads
    from serving.engine import SearchEngine

logger = logging.getLogger(__name__)


def _register(settings: Settings, role: str, folder: Path, base: str, data_hash: str, params: dict,
              metrics: dict, activate: bool, parent: str | None = None) -> dict:
    from ranking.cross_encoder import export

    export(folder)
    registry = ModelRegistry(settings.paths.models)
    entry = registry.register(role, folder, base_model=base, parent=parent, training_data=data_hash,
                              params=params, metrics=metrics)
    if activate or registry.active(role) is None:
        registry.activate(role, entry.version)
    return entry.to_json()


# what registering a reranker trained elsewhere reads: its summary and best epoch's model (the ONNX export loads
# the weights and score head, serving reads the fast tokenizer)
RERANKER_FILES = ("train_summary.json", "best/config.json", "best/model.safetensors|best/pytorch_model.bin",
                  "best/score_head.pt", "best/tokenizer.json")


def cmd_train_reranker(args: argparse.Namespace, settings: Settings) -> int:
    work = Path(args.work_dir) if args.work_dir else settings.paths.training(f"reranker-{args.run_name}")
    check_work_folder(work, settings)
    outcome = trained(args, settings, work, "reranker", _train_reranker_here, needs=RERANKER_FILES,
                      keys=("best", "seconds", "dev_groups", "history"))
    if outcome is None:  # --export: written, not trained
        return 0
    summary, params, work = outcome
    try:
        folder = work / "registered"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(work / "best", folder)
        metrics = {f"dev_sample_{k}": v for k, v in summary["best"].items() if k != "score"}
        metrics |= {"train_seconds": summary["seconds"], "dev_sample_queries": summary["dev_groups"]}
        entry = _register(settings, args.role, folder, base_label(args, summary), summary.get("data_hash", ""),
                          params, metrics, args.activate)
    finally:
        if args.trained is not None:  # this run's copy of the folder trained elsewhere
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"registered": entry, "history": summary["history"]}, indent=2))
    return 0


def _train_reranker_here(args: argparse.Namespace, settings: Settings, work: Path) -> dict | None:
    """Mine the negatives, then train into ``work`` (its summary), or with --export write the examples (None)."""
    from ranking.training.data import as_served, groups_from, mine_negatives
    from ranking.training.reranker import RerankerConfig, save_examples, train_reranker
    from retrieval.encoder import resolve_model_dir

    dataset = load_dataset(args.dataset)
    base = str(resolve_model_dir(BUNDLED)) if args.base in (None, BUNDLED) else args.base
    config = RerankerConfig(base_model=base, layers=args.layers, epochs=args.epochs, lr=args.lr,
                            batch_groups=args.batch_groups, max_length=args.max_length,
                            negatives=args.negatives, seed=args.seed, max_grade=dataset.max_grade, loss=args.loss,
                            device=args.device, precision=args.precision, queries=args.queries)
    train = groups_from(dataset, args.split, 1)[: args.limit]
    dev = dev_sample(dataset, args.dev_split, args.dev_queries)  # before the mining: a split without one is refused
    if config.negatives or config.queries == "analyzed":
        engine = first_stage(settings, dataset)
        if config.negatives:
            mine_negatives(train, engine.pipeline("hybrid"), engine.index, config.negatives, seed=args.seed,
                           progress=settings.progress)
        if config.queries == "analyzed":  # after mining: the first stage analyzes the query itself
            train, dev = as_served(train, engine.pipeline("hybrid")), as_served(dev, engine.pipeline("hybrid"))
    titles = dict(zip(dataset.products["product_id"], dataset.products["title"]))
    if args.export is not None:
        save_examples(args.export, config, train, dev, titles)
        print(json.dumps({"exported": str(args.export), "train_queries": len(train), "dev_queries": len(dev),
                          "products": len(titles),
                          "next": f"python -m ranking.training.reranker {args.export} --out FOLDER --base MODEL_FOLDER; "
                                  f"shoprank train reranker --dataset {args.dataset} --trained FOLDER"}, indent=2))
        return None
    return train_reranker(config, train, dev, titles, work, progress=settings.progress)


def cmd_train_student(args: argparse.Namespace, settings: Settings) -> int:
    from ranking.training.data import as_served, data_hash, groups_from
    from ranking.training.student import StudentConfig, ensemble_pool, teacher_pool, train_student
    from serving.loading import served_max_length

    dataset = load_dataset(args.dataset)
    registry = ModelRegistry(settings.paths.models)
    teacher = teacher_model(settings, args.teacher,
                            "no active reranker to distil from; train one with `shoprank train reranker`")
    config = StudentConfig(teacher=str(teacher.path), layers=args.layers, epochs=args.epochs, lr=args.lr,
                           batch_groups=args.batch_groups, max_length=args.max_length, pool_depth=args.pool_depth,
                           seed=args.seed, max_grade=dataset.max_grade, ensemble=args.ensemble,
                           queries=args.queries)
    if not 0.0 <= args.ensemble <= 1.0:
        raise InvalidInput(f"--ensemble {args.ensemble} is not a weight within [0, 1]")
    train = groups_from(dataset, args.split, 1)[: args.limit]
    dev = dev_sample(dataset, args.dev_split, args.dev_queries)  # before the pool: a split without one is refused
    engine = first_stage(settings, dataset)
    hybrid = engine.pipeline("hybrid")
    candidates = {g.qid: hybrid.search(g.query, args.pool_depth).product_ids for g in train}
    if config.queries == "analyzed":  # the first stage analyzes the query itself
        train, dev = as_served(train, hybrid), as_served(dev, hybrid)
    titles = dict(zip(dataset.products["product_id"], dataset.products["title"]))
    length = served_max_length(settings, teacher)  # the teacher's scores as serving gives them
    # the teacher's scores of these queries' candidates: kept for a run on the same queries and catalog only
    pool_dir = settings.paths.training(f"pool-{teacher.role}-{teacher.version}-{args.split}-d{args.pool_depth}-"
                                       f"L{length}-{data_hash(train)}-{dataset.digest[:12]}")
    pool = teacher_pool(train, candidates, teacher.path, titles, pool_dir, progress=settings.progress,
                        max_length=length)
    ltr = None
    if args.ensemble:
        ltr = registry.active("ltr")
        if ltr is None:
            raise NotFound("--ensemble needs an active LambdaMART; train one with `shoprank train ltr`")
        cached = pool_dir / f"ltr-{ltr.version}.parquet"
        if cached.is_file():
            import pandas as pd

            pool = pd.read_parquet(cached)
        else:
            rank = _ltr_scores(settings, dataset, engine, int(pool.groupby("query_id").size().max()))
            pool = ensemble_pool(pool, {g.qid: g.query for g in train}, rank, settings.progress)
            write_text_atomic(cached, pool.to_parquet())  # whole or not at all: a later run reads it as done
        logger.info("ensemble target: teacher %s + LambdaMART %s (weight %.2f), %d pairs",
                    teacher.version, ltr.version, args.ensemble, len(pool))
    work = settings.paths.training(f"student-L{args.layers}-{args.run_name}")
    summary = train_student(config, train, pool, dev, titles, work, progress=settings.progress)
    folder = work / "registered"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(work / "best", folder)
    metrics = {f"dev_sample_{k}": v for k, v in summary["best"].items() if k != "score"}
    metrics |= {"train_seconds": summary["seconds"], "pool_pairs": summary["pool_pairs"]}
    entry = _register(settings, "student", folder, f"reranker:{teacher.version}", data_hash(train),
                      asdict(config) | {"split": args.split} | ({"ensemble_ltr": ltr.version} if ltr else {}),
                      metrics, args.activate, parent=f"reranker:{teacher.version}")
    print(json.dumps({"registered": entry, "history": summary["history"]}, indent=2))
    return 0


def _ltr_scores(settings: Settings, dataset: EvalDataset, first: SearchEngine, depth: int):  # type: ignore[no-untyped-def]
    """``rank(query, product_ids) -> {product_id: LambdaMART score}``: the served ``ltr`` pipeline
    (teacher, then the active LambdaMART) over those products, the teacher scoring every one
    (adaptive depth off, depth at least ``depth``); {} when LambdaMART did not run (a timeout)."""
    from serving.loading import open_engine

    ranking = settings.ranking.model_copy(update={"teacher_depth_confident": 0,
                                                  "teacher_depth": max(depth, settings.ranking.teacher_depth)})
    engine = open_engine(settings.model_copy(update={"ranking": ranking}), dataset.products, index=first.index,
                         encoder=first.encoder, batch=True)
    pipeline = engine.pipeline("ltr")

    def rank(query: str, product_ids: list[str]) -> dict[str, float]:
        docs = [d for d in (engine.index.doc_of(p) for p in product_ids) if d is not None]
        ranked = pipeline.rank(query, docs)
        if "ltr" not in ranked.scores:
            return {}
        return {p: float(s) for p, s in zip(ranked.product_ids, ranked.scores["ltr"])}

    return rank


def add_queries_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queries", choices=("typed", "analyzed"), default="typed",
                        help="train on each query as the dataset spells it (typed, default) or as the served "
                             "cross-encoders score it (analyzed: normalized, spelling corrected)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model and register it")
    kinds = train.add_subparsers(dest="kind", required=True)
    p = kinds.add_parser("reranker", help="the teacher cross-encoder (from the MiniLM weights)")
    p.add_argument("--dataset", required=True, type=Path)
    p.add_argument("--split", default="train")
    p.add_argument("--dev-split", default="dev")
    p.add_argument("--dev-queries", type=positive, default=400, help="dev sample for model selection")
    p.add_argument("--base", type=base_model, default=None, help="'minilm' (bundled, default) or a model folder, "
                   "such as a fine-tuned bi-encoder's")
    p.add_argument("--role", default="reranker", choices=("reranker", "student"))
    p.add_argument("--layers", type=positive, default=6)
    p.add_argument("--epochs", type=positive, default=3)
    p.add_argument("--lr", type=positive_number, default=3e-5)
    p.add_argument("--batch-groups", type=positive, default=8, help="queries per step")
    p.add_argument("--max-length", type=positive, default=40)
    p.add_argument("--negatives", type=count, default=4, help="mined hard negatives per query")
    p.add_argument("--loss", choices=("pairwise", "listnet"), default="pairwise")
    add_queries_argument(p)
    add_precision_argument(p, "auto")
    add_elsewhere_arguments(p, "reranker", "the training examples, the dev sample and the titles",
                            "torch and transformers")
    p.add_argument("--seed", type=random_seed, default=13)
    p.add_argument("--limit", type=positive, default=None, help="only the first N training queries")
    p.add_argument("--run-name", type=run_name, default="run", help="work folder name (resumes if it exists)")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--activate", action="store_true")
    p.set_defaults(handler=cmd_train_reranker)

    p = kinds.add_parser("student", help="distil a small cross-encoder from the active reranker")
    p.add_argument("--dataset", required=True, type=Path)
    p.add_argument("--split", default="train")
    p.add_argument("--dev-split", default="dev")
    p.add_argument("--dev-queries", type=positive, default=400)
    p.add_argument("--teacher", default="active", help="reranker version (default: the active one)")
    p.add_argument("--layers", type=positive, default=2)
    p.add_argument("--epochs", type=positive, default=1)
    p.add_argument("--lr", type=positive_number, default=5e-5)
    p.add_argument("--batch-groups", type=positive, default=8)
    p.add_argument("--max-length", type=positive, default=40)
    p.add_argument("--pool-depth", type=positive, default=10, help="first-stage candidates per query in the pool")
    add_queries_argument(p)
    p.add_argument("--ensemble", type=float, default=0.0,
                   help="weight of the active LambdaMART in the distillation target, 0-1 (0: the teacher alone)")
    p.add_argument("--seed", type=random_seed, default=13)
    p.add_argument("--limit", type=positive, default=None)
    p.add_argument("--run-name", type=run_name, default="run")
    p.add_argument("--activate", action="store_true")
    p.set_defaults(handler=cmd_train_student)

    train_biencoder.add_parser(kinds)
    train_ltr.add_parser(kinds)
