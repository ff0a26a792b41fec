"""Training groups from a judged dataset: one group per query.

A group holds the query's judged products with their grades and up to
``negatives`` hard negatives mined from the first stage. Mined products are
unjudged, so they may be relevant: they are only used below judged products
of grade >= ``ceil(0.6 * max grade)``, never compared with low-grade judged
ones, and products whose normalised title equals a judged product's title
(the Home Depot catalog has 1,193 duplicate titles) are never mined.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from core.arguments import positive, positive_number, random_seed
from core.query import Query

if TYPE_CHECKING:  # annotations only: a GPU box that trains from an exported file has none of these
    from evaluation.dataset import EvalDataset
    from ranking.cascade import Cascade
    from retrieval.hybrid import Retriever
    from retrieval.index import ProductIndex


@dataclass
class Group:
    """One query's training examples."""

    qid: str
    query: str
    judged: dict[str, int]
    mined: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Fold:
    """Fold ``index`` of ``count`` of a split's queries, chosen by a stable hash of the query id.

    Cross-fitting (stacking): a bi-encoder trained without one fold scores that fold's queries as it
    scores a shopper's, so LambdaMART's training lists built with it carry first-stage scores and
    ranks that mean what they mean when served (a model's scores on its own training queries are
    better than on any other).
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Fold:
        """``I/K``: fold I (0 to K-1) of K >= 2."""
        index, _, count = text.partition("/")
        if not (index.isdigit() and count.isdigit() and int(count) >= 2 and int(index) < int(count)):
            raise ValueError(f"{text!r} is not a fold: write I/K, fold I (0 to K-1) of K >= 2 folds, as 0/2")
        return cls(int(index), int(count))

    def holds(self, query_id: str) -> bool:
        return int(hashlib.md5(query_id.encode()).hexdigest(), 16) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def normalise_title(title: str) -> str:
    return re.sub(r"\W+", " ", title.lower()).strip()


def groups_from(dataset: EvalDataset, split: str | None, min_judged: int = 1) -> list[Group]:
    """Groups of ``split`` with at least ``min_judged`` judged products."""
    out = []
    for qid, query in dataset.select(split):
        grades = dataset.qrels.get(qid, {})
        if len(grades) >= min_judged:
            out.append(Group(qid, query, dict(grades)))
    return out


def as_served(groups: Sequence[Group], pipeline: Cascade) -> list[Group]:
    """The groups with each query as ``pipeline`` hands it to its stages: analyzed (normalized
    units, fractions and symbols; spelling corrected where the pipeline corrects), or as typed
    when the analysis leaves no word (:meth:`ranking.cascade.Cascade.analyze`)."""
    return [replace(g, query=pipeline.analyze(Query(g.query)).text) for g in groups]


def mine_negatives(groups: Sequence[Group], retriever: Retriever, index: ProductIndex, negatives: int,
                   depth: int = 30, seed: int = 0, progress: bool = True) -> None:
    """Fill each group's ``mined`` with up to ``negatives`` products from the top ``depth``."""
    rng = random.Random(seed)
    titles = index.live_products().set_index("product_id")["title"]  # an updated product's old rows are not live
    for group in tqdm(groups, disable=not progress, desc="mine negatives", unit="q"):
        judged_titles = {normalise_title(titles[p]) for p in group.judged if p in titles.index}
        pool = [p for p in retriever.search(group.query, depth).product_ids
                if p not in group.judged and normalise_title(titles[p]) not in judged_titles]
        group.mined = rng.sample(pool, k=min(negatives, len(pool)))


def data_hash(groups: Sequence[Group]) -> str:
    """Content hash of the training groups (recorded in the model manifest)."""
    digest = hashlib.sha256()
    for g in groups:
        digest.update(json.dumps([g.qid, g.query, sorted(g.judged.items()), g.mined]).encode())
    return digest.hexdigest()[:16]


# Training away from the catalog: `shoprank train biencoder|reranker --export FILE` mines the hard
# negatives where the first stage runs and writes everything training needs to one gzipped JSON
# file; `python -m ranking.training.biencoder|reranker FILE --out FOLDER` trains from it on any
# machine with torch and transformers (a GPU box); `--trained FOLDER` registers the result.
EXAMPLES_FORMAT = 1


def write_examples(path: Path, kind: str, payload: dict[str, Any]) -> None:
    """Write a ``kind`` (biencoder, reranker) examples file; ``payload["train"]`` holds Groups."""
    body = dict(payload, format=EXAMPLES_FORMAT, kind=kind,
                train=[[g.qid, g.query, g.judged, g.mined] for g in payload["train"]])
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(body, f)


def read_examples(path: Path, kind: str) -> dict[str, Any]:
    """The payload of a ``kind`` examples file, its ``train`` as Groups."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        payload = json.load(f)
    if payload.get("format") != EXAMPLES_FORMAT:
        raise ValueError(f"{path}: examples format {payload.get('format')!r}, this version reads {EXAMPLES_FORMAT}")
    if payload.get("kind", "biencoder") != kind:
        raise ValueError(f"{path} holds {payload.get('kind')} examples, not {kind} ones: export it with "
                         f"`shoprank train {kind} --export FILE`")
    payload["train"] = [Group(qid, query, judged, mined) for qid, query, judged, mined in payload["train"]]
    return payload


def training_parser(kind: str, description: str, out_help: str) -> argparse.ArgumentParser:
    """The command line of ``python -m ranking.training.<kind> FILE --out FOLDER``, with the options
    both trainers take; a trainer adds its own, named as its config's fields (``--batch-size``). Counts
    and rates are checked as the CLI checks them (:mod:`core.arguments`)."""
    parser = argparse.ArgumentParser(prog=f"python -m ranking.training.{kind}", description=description)
    parser.add_argument("examples", type=Path)
    parser.add_argument("--out", type=Path, required=True, help=out_help)
    parser.add_argument("--base", help="base model folder (default: the one the file names)")
    parser.add_argument("--epochs", type=positive)
    parser.add_argument("--lr", type=positive_number)
    parser.add_argument("--seed", type=random_seed)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    return parser


def overridden(config: Any, args: argparse.Namespace) -> Any:
    """``config`` (a dataclass) with each of its fields given on the command line; ``--base`` sets
    ``base_model``; an option left out keeps the file's value."""
    changes = {f.name: getattr(args, f.name) for f in fields(config) if getattr(args, f.name, None) is not None}
    if args.base is not None:
        changes["base_model"] = args.base
    return replace(config, **changes)


def optimizer_step(loss, model, optimizer, scheduler) -> float:  # type: ignore[no-untyped-def]
    """One training step from ``loss``: backward, gradients clipped to norm 1, the optimizer and
    the learning-rate schedule stepped, gradients cleared. Returns the loss as a float."""
    import torch

    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return float(loss.item())


TRAINING_PRECISIONS = ("auto", "fp32", "bf16")


def add_precision_argument(parser: argparse.ArgumentParser, default: str | None) -> None:
    """``--precision`` (see :func:`resolve_precision`); ``default`` None keeps an exported file's value."""
    parser.add_argument("--precision", choices=TRAINING_PRECISIONS, default=default,
                        help="the forward pass in fp32 or bf16 (torch autocast; weights, gradients and the "
                             "optimizer in float32); auto: bf16 on a CPU with AMX bf16 tiles or AVX-512 BF16, "
                             "else fp32")


def resolve_precision(precision: str, device: str) -> str:
    """What a training run computes its forward pass in: ``fp32``, or ``bf16`` (torch autocast;
    weights, gradients and the optimizer stay in float32). ``auto``: bf16 on a CPU with bf16 dot
    products, AMX tiles or AVX-512 BF16, where a bi-encoder's steps took 54% (AMX) and 58% (AMD EPYC
    with AVX-512 BF16) of fp32's time and the trained model tied fp32's on the Home Depot dev queries
    (benchmarks/RESULTS.md, "Bi-encoder trained in bf16 on AMX" and "On AVX-512 BF16 without AMX"); fp32
    elsewhere (on a GPU too)."""
    from core.hardware import cpu

    if precision not in TRAINING_PRECISIONS:
        raise ValueError(f"training precision {precision!r} is not one of {', '.join(TRAINING_PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device == "cpu" and cpu().torch_bf16 else "fp32"
    return precision


def resolve_device(device: str) -> str:
    """``auto`` (a CUDA GPU when torch sees one, else the CPU), ``cpu`` or ``cuda``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not one of auto, cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return device
