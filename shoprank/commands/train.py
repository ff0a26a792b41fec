"""``shoprank train reranker|student|biencoder``: train, register, export.

Each command trains on ``--split`` of ``--dataset``, selects on a fixed sample
of the dev split, registers the result in the model registry with a manifest
(training-data hash, base model, parameters, dev metrics, parent) and exports
ONNX fp32 + int8 for serving. ``--activate`` makes it the active version (the
first version of a role is activated automatically).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
from dataclasses import asdict
from pathlib import Path

from shoprank import artifacts
from shoprank.engine import SearchEngine
from shoprank.evaluation.dataset import EvalDataset, load_dataset
from shoprank.registry import ModelRegistry
from shoprank.settings import Settings

logger = logging.getLogger(__name__)


def dev_sample(dataset: EvalDataset, split: str, size: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """A fixed sample of queries with signal (>= 2 judged, >= 2 distinct grades)."""
    from ranking.training.data import groups_from

    groups = [g for g in groups_from(dataset, split, 2) if len(set(g.judged.values())) > 1]
    random.Random(seed).shuffle(groups)
    return groups[:size]


def first_stage(settings: Settings, dataset: EvalDataset) -> SearchEngine:
    encoder = artifacts.open_encoder(settings)
    path = artifacts.eval_index_path(settings, dataset.products, encoder)
    return SearchEngine(artifacts.ensure_index(settings, dataset.products, path, encoder), encoder, settings)


def _register(settings: Settings, role: str, folder: Path, base: str, data_hash: str, params: dict,
              metrics: dict, activate: bool, parent: str | None = None) -> dict:
    from ranking.cross_encoder import export

    export(folder)
    registry = ModelRegistry(settings.models_dir)
    entry = registry.register(role, folder, base_model=base, parent=parent, training_data=data_hash,
                              params=params, metrics=metrics)
    if activate or registry.active(role) is None:
        registry.activate(role, entry.version)
    return entry.to_json()


def cmd_train_reranker(args: argparse.Namespace, settings: Settings) -> int:
    from ranking.training.data import data_hash, groups_from, mine_negatives
    from ranking.training.reranker import RerankerConfig, train_reranker
    from retrieval.encoder import resolve_model_dir

    dataset = load_dataset(args.dataset)
    base = str(resolve_model_dir(args.base)) if args.base == "minilm" else args.base
    config = RerankerConfig(base_model=base, layers=args.layers, epochs=args.epochs, lr=args.lr,
                            batch_groups=args.batch_groups, max_length=args.max_length,
                            negatives=args.negatives, seed=args.seed, max_grade=dataset.max_grade)
    train = groups_from(dataset, args.split, 1)[: args.limit]
    if config.negatives:
        engine = first_stage(settings, dataset)
        mine_negatives(train, engine.pipeline("hybrid"), engine.index, config.negatives, seed=args.seed,
                       progress=settings.progress)
    dev = dev_sample(dataset, args.dev_split, args.dev_queries)
    titles = dict(zip(dataset.products["product_id"], dataset.products["title"]))
    work = Path(args.work_dir) if args.work_dir else settings.home / "training" / f"reranker-{args.run_name}"
    summary = train_reranker(config, train, dev, titles, work, progress=settings.progress)
    folder = work / "registered"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(work / "best", folder)
    metrics = {f"dev_sample_{k}": v for k, v in summary["best"].items() if k != "score"}
    metrics |= {"train_seconds": summary["seconds"], "dev_sample_queries": len(dev)}
    entry = _register(settings, args.role, folder, args.base, data_hash(train), asdict(config) | {"split": args.split},
                      metrics, args.activate)
    print(json.dumps({"registered": entry, "history": summary["history"]}, indent=2))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model and register it")
    kinds = train.add_subparsers(dest="kind", required=True)
    p = kinds.add_parser("reranker", help="the teacher cross-encoder (from the MiniLM weights)")
    p.add_argument("--dataset", required=True, type=Path)
    p.add_argument("--split", default="train")
    p.add_argument("--dev-split", default="dev")
    p.add_argument("--dev-queries", type=int, default=400, help="dev sample for model selection")
    p.add_argument("--base", default="minilm", help="'minilm' (bundled) or a model folder")
    p.add_argument("--role", default="reranker", choices=("reranker", "student"))
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--batch-groups", type=int, default=8, help="queries per step")
    p.add_argument("--max-length", type=int, default=40)
    p.add_argument("--negatives", type=int, default=4, help="mined hard negatives per query")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--limit", type=int, default=None, help="only the first N training queries")
    p.add_argument("--run-name", default="run", help="work folder name (resumes if it exists)")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--activate", action="store_true")
    p.set_defaults(handler=cmd_train_reranker)
