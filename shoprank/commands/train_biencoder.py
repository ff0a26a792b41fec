"""``shoprank train biencoder``: fine-tune the bi-encoder (MNRL, one mined hard negative per pair), register it.

The examples are the split's (query, relevant product) pairs, each with a negative mined
from the served first stage; ``--export`` writes them for a GPU box instead of training
here, and ``--trained`` registers the folder that training wrote there.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from core.arguments import positive, positive_number, random_seed
from core.errors import InvalidInput
from core.registry import ModelRegistry, ModelVersion
from core.settings import Settings
from evaluation.dataset import EvalDataset, load_dataset
from ranking.training.biencoder import TeacherScores
from ranking.training.data import Group, add_precision_argument
from retrieval.encoder import BUNDLED
from shoprank.commands.arguments import base_model, fold, run_name, share
from shoprank.commands.training import (
    add_elsewhere_arguments,
    base_label,
    first_stage,
    teacher_model,
    trained,
)

# what the served bi-encoder loads (retrieval.encoder): a sentence-transformers folder's config and modules,
# its weights and the fast tokenizer
MODEL_FILES = ("config.json", "modules.json", "model.safetensors|pytorch_model.bin", "tokenizer.json")


def cmd_train_biencoder(args: argparse.Namespace, settings: Settings) -> int:
    if args.activate and getattr(args, "hold_out", None) is not None:
        raise fold_served(args.hold_out)
    work = settings.paths.training(f"biencoder-{args.run_name}")
    outcome = trained(args, settings, work, "biencoder", _train_biencoder_here,
                      needs=("train_summary.json", *MODEL_FILES))
    if outcome is None:  # --export: written, not trained
        return 0
    summary, params, folder = outcome
    # the fold it was trained without: this run's --hold-out, or for one trained elsewhere (--trained) the
    # fold its training recorded
    held_out = params.get("held_out") or getattr(args, "hold_out", None)
    registry = ModelRegistry(settings.paths.models)
    try:
        if args.activate and held_out:  # refused before anything is registered
            raise fold_served(held_out)
        entry = registry.register("biencoder", folder, base_model=base_label(args, summary),
                                  training_data=summary.get("data_hash", ""), params=params,
                                  metrics={"train": {k: v for k, v in summary.items() if k != "config"}})
    finally:
        if args.trained is not None:  # this run's copy of the folder trained elsewhere (registered: moved)
            shutil.rmtree(folder, ignore_errors=True)
    if args.activate or (registry.active("biencoder") is None and not held_out):
        registry.activate("biencoder", entry.version)  # the first one, unless a fold model
    print(json.dumps({"registered": entry.to_json()}, indent=2))
    return 0


def fold_served(fold: object, action: str = "--activate with a model") -> InvalidInput:
    """The error for serving a bi-encoder trained without ``fold`` (``action``: what was asked, naming the model)."""
    return InvalidInput(f"{action} trained without fold {fold} (--hold-out): a fold model only "
                        "builds LambdaMART's training lists; the served bi-encoder is one trained on every query")


def _train_biencoder_here(args: argparse.Namespace, settings: Settings, work: Path) -> dict | None:
    """Mine the negatives, then train into ``work`` (its summary), or with --export write the examples (None)."""
    from evaluation.harness import Thresholds
    from evaluation.metrics import grade_threshold
    from ranking.training.biencoder import (
        BiEncoderConfig,
        Examples,
        product_texts,
        save_examples,
        train_biencoder,
    )
    from ranking.training.data import as_served, groups_from, mine_negatives
    from ranking.training.dense_check import DevSet
    from retrieval.encoder import resolve_model_dir

    dataset = load_dataset(args.dataset)
    teacher = _teacher(args, settings)
    base = str(resolve_model_dir(BUNDLED)) if args.base in (None, BUNDLED) else args.base
    config = BiEncoderConfig(base_model=base, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                             hard_negatives=not args.no_hard_negatives, seed=args.seed, max_grade=dataset.max_grade,
                             positives=args.positives, queries=args.queries, typos=args.typos, device=args.device,
                             precision=args.precision, held_out=str(args.hold_out or ""), distill=args.distill or 0.0,
                             teacher=f"reranker:{teacher.version}" if teacher else "")
    train = [g for g in groups_from(dataset, args.split, 1) if args.hold_out is None or not args.hold_out.holds(g.qid)]
    train = train[: args.limit]
    if config.hard_negatives or config.queries == "analyzed":
        engine = first_stage(settings, dataset)
        if config.hard_negatives:
            mine_negatives(train, engine.pipeline("hybrid"), engine.index, args.negatives or (4 if teacher else 1),
                           seed=args.seed, progress=settings.progress)
        if config.queries == "analyzed":  # after mining: the first stage analyzes the query itself
            train = as_served(train, engine.pipeline("hybrid"))
    texts = product_texts(dataset.products)
    scores = None if teacher is None else _teacher_scores(settings, dataset, train, teacher)
    if args.export is not None:
        judged = groups_from(dataset, args.dev_split, 1) if args.dev_split else []
        relevant = grade_threshold(Thresholds().recall, dataset.max_grade)
        # a split without a judged query gets no per-epoch check, as --dev-split '' gets none
        dev = DevSet([(g.qid, g.query, g.judged) for g in judged], relevant) if judged else None
        save_examples(args.export, Examples(config, train, texts, dev, scores))
        print(json.dumps({"exported": str(args.export), "train_queries": len(train),
                          "dev_queries": 0 if dev is None else len(dev.queries), "products": len(texts),
                          "next": f"python -m ranking.training.biencoder {args.export} --out FOLDER --base MODEL_FOLDER; "
                                  f"shoprank train biencoder --dataset {args.dataset} --trained FOLDER"}, indent=2))
        return None
    shutil.rmtree(work, ignore_errors=True)
    return train_biencoder(config, train, texts, work, progress=settings.progress, teacher=scores)


def _teacher(args: argparse.Namespace, settings: Settings) -> ModelVersion | None:
    """The cross-encoder whose preferences ``--distill`` teaches (None without it)."""
    if args.distill is None:
        return None
    if args.no_hard_negatives:
        raise InvalidInput("--distill teaches the teacher's margins of a positive over a hard negative; "
                           "it cannot be used with --no-hard-negatives")
    return teacher_model(settings, args.teacher, f"--distill needs a reranker to learn from ({args.teacher!r}); "
                                                 "train one with `shoprank train reranker`")


def _teacher_scores(settings: Settings, dataset: EvalDataset, train: list[Group],
                    teacher: ModelVersion) -> TeacherScores:
    """The teacher's score of each training query's judged and mined products (cached by data and teacher)."""
    from ranking.training.data import data_hash
    from ranking.training.student import teacher_pool

    titles = dict(zip(dataset.products["product_id"], dataset.products["title"]))  # what the teacher reads
    folder = settings.paths.training(f"biencoder-teacher-{teacher.version}-{data_hash(train)[:12]}")
    pool = teacher_pool(train, {g.qid: g.mined for g in train}, teacher.path, titles, folder,
                        progress=settings.progress)
    scores: TeacherScores = {}
    for qid, product, score in pool.itertuples(index=False):
        scores.setdefault(qid, {})[product] = score
    return scores


def add_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("biencoder", help="fine-tune the bi-encoder (MNRL + hard negatives)")
    p.add_argument("--dataset", required=True, type=Path)
    p.add_argument("--split", default="train")
    p.add_argument("--base", type=base_model, default=None, help="'minilm' (bundled, default) or a model folder")
    p.add_argument("--epochs", type=positive, default=1)
    p.add_argument("--lr", type=positive_number, default=2e-5)
    p.add_argument("--batch-size", type=positive, default=64)
    p.add_argument("--no-hard-negatives", action="store_true", help="in-batch negatives only")
    p.add_argument("--positives", choices=("one", "all"), default="all",
                   help="every relevant product of a query is a training pair (default), or one per query "
                        "and epoch (4-5x faster on Home Depot, lower recall)")
    p.add_argument("--queries", choices=("typed", "analyzed"), default="typed",
                   help="train on each query as the dataset spells it (typed, default) or as the server encodes "
                        "it (analyzed: normalized, spelling corrected; tied on Home Depot)")
    p.add_argument("--typos", type=share, default=0.0, metavar="P",
                   help="share of training pairs, 0-1, whose query gets one synthetic typing slip (a dropped, "
                        "doubled, swapped or neighbouring-key letter, or two words run together); default 0")
    add_elsewhere_arguments(p, "biencoder", "the training examples (and the --dev-split queries)",
                            "torch and sentence-transformers")
    add_precision_argument(p, "auto")
    p.add_argument("--hold-out", type=fold, default=None, metavar="I/K",
                   help="leave fold I of K of the split's queries out (cross-fitting: `shoprank train ltr "
                        "--fold-encoders` builds that fold's LambdaMART lists with this model)")
    p.add_argument("--distill", type=positive_number, default=None, metavar="W",
                   help="learn from the teacher cross-encoder too: mined negatives it scores like a relevant "
                        "product are dropped, and the margins of each positive over its negative learn to "
                        "correlate with the teacher's, with weight W (try 1)")
    p.add_argument("--teacher", default="active", help="with --distill: the reranker version (default: active)")
    p.add_argument("--negatives", type=positive, default=None, metavar="N",
                   help="products mined per query from the first stage's top 30 (default 1; 4 with --distill)")
    p.add_argument("--dev-split", default="dev", help="with --export: queries for the per-epoch dense check ('' none)")
    p.add_argument("--seed", type=random_seed, default=13)
    p.add_argument("--limit", type=positive, default=None)
    p.add_argument("--run-name", type=run_name, default="run")
    p.add_argument("--activate", action="store_true")
    p.set_defaults(handler=cmd_train_biencoder)
