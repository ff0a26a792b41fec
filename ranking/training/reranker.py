"""Train the teacher cross-encoder: ``shoprank train reranker``.

Initialised from the bundled all-MiniLM-L6-v2 weights with a fresh mean-pooled
score head (:mod:`ranking.cross_encoder_net`), trained on each train query's group (graded judgments + mined hard
negatives, see :mod:`ranking.training.data`) with a grade-weighted pairwise
RankNet loss plus a small pointwise term that anchors scores to grade / max.
Seeded; checkpoints every ``checkpoint_every`` steps and resumes from the last
checkpoint; evaluates rerank-mode NDCG@10 / MRR@10 on a fixed dev sample after
each epoch and keeps the best epoch (model selection on dev). Trains on a CUDA GPU when
torch sees one (``device``); ``shoprank train reranker --export FILE`` writes the examples for
:func:`main` to train from on another machine (a GPU box).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from core.arguments import positive
from core.errors import InvalidInput
from evaluation.metrics import grade_threshold, mrr_at_k, ndcg_at_k
from ranking.training.checkpoint import Checkpoint
from ranking.training.data import (
    Group,
    add_precision_argument,
    data_hash,
    optimizer_step,
    overridden,
    read_examples,
    resolve_device,
    resolve_precision,
    training_parser,
    write_examples,
)
from ranking.training.losses import pairwise_loss

logger = logging.getLogger(__name__)


@dataclass
class RerankerConfig:
    base_model: str
    layers: int = 6
    epochs: int = 3
    lr: float = 3e-5
    batch_groups: int = 8
    max_length: int = 40
    negatives: int = 4
    pointwise_weight: float = 0.2
    mined_weight: float = 0.5
    warmup: float = 0.05
    seed: int = 13
    checkpoint_every: int = 200
    max_grade: int = 8
    threads: int = 0
    loss: str = "pairwise"  # pairwise (RankNet, grade-weighted) | listnet (softmax over each judged list)
    temperature: float = 2.0  # listnet: target = softmax(grade / temperature)
    device: str = "auto"  # auto: a CUDA GPU when torch sees one, else the CPU
    # the forward pass in "fp32" or "bf16" (autocast); "auto": bf16 on a CPU with AMX or AVX-512 BF16, else fp32
    precision: str = "auto"
    queries: str = "typed"  # typed: as the dataset spells them; analyzed: as the served stages score them


def load_model(base: str, layers: int):  # type: ignore[no-untyped-def]
    """A :class:`~ranking.cross_encoder_net.PairScorer` on ``base``, keeping its first ``layers`` layers."""
    from ranking.cross_encoder_net import PairScorer

    return PairScorer.from_base(base, layers)


def _pairs(group: Group, relevant: int, mined_weight: float, max_grade: int) -> tuple[list[str], list[int], list[tuple[int, int, float]]]:
    items = list(group.judged) + group.mined
    grades = [group.judged[p] for p in group.judged] + [-1] * len(group.mined)
    pairs = []
    for i, gi in enumerate(grades):
        for j, gj in enumerate(grades):
            if gi < 0 or gi <= gj:
                continue
            if gj < 0:
                if gi >= relevant:
                    pairs.append((i, j, mined_weight * gi / max_grade))
            else:
                pairs.append((i, j, (gi - gj) / max_grade))
    return items, grades, pairs


class _Batcher:
    def __init__(self, tokenizer, titles: dict[str, str], max_length: int, device: str = "cpu") -> None:  # type: ignore[no-untyped-def]
        self.tokenizer = tokenizer
        self.titles = titles
        self.max_length = max_length
        self.device = device

    def __call__(self, queries: Sequence[str], products: Sequence[str]):  # type: ignore[no-untyped-def]
        return self.tokenizer(list(queries), [self.titles[p] for p in products], padding=True, truncation=True,
                              max_length=self.max_length, return_tensors="pt").to(self.device)


def evaluate_groups(model, batcher: _Batcher, groups: Sequence[Group], max_grade: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Rerank-mode NDCG@10 / MRR@10 of ``model`` over judged products of ``groups``."""
    import torch

    hit = grade_threshold(0.75, max_grade)
    ndcg, mrr = [], []
    model.eval()
    with torch.inference_mode():
        for group in groups:
            products = list(group.judged)
            scores = model(**batcher([group.query] * len(products), products)).float().cpu().numpy()
            ranked = [products[i] for i in np.argsort(-scores, kind="stable")]
            ndcg.append(ndcg_at_k(ranked, group.judged, 10))
            mrr.append(mrr_at_k(ranked, group.judged, 10, hit))
    model.train()
    return {"ndcg@10": round(float(np.mean(ndcg)), 4), "mrr@10": round(float(np.mean(mrr)), 4)}


def check_dev(dev: Sequence[Group]) -> None:
    """InvalidInput where ``dev`` holds no query: each epoch's dev metrics would be NaN, and model
    selection would keep the first epoch whatever the others scored."""
    if not dev:
        raise InvalidInput("no dev query to select the best epoch on: the dev sample needs queries with >= 2 "
                           "judged products of >= 2 distinct grades; give another dev split")


def train_reranker(config: RerankerConfig, train: Sequence[Group], dev: Sequence[Group], titles: dict[str, str],
                   out: Path, progress: bool = True) -> dict[str, object]:
    """Train, checkpointing into ``out/checkpoint`` and saving the best epoch to ``out/best``.

    Returns:
        Training summary: best epoch, its dev metrics, per-epoch history, seconds.
    """
    import torch
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    if not train:
        raise InvalidInput("no training query with a judged product of the catalog; give more queries (--limit) "
                           "or another split")
    check_dev(dev)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    # in float32 whatever the base was saved in (a half-precision base would load as such)
    model = load_model(config.base_model, config.layers).float().to(device)
    batcher = _Batcher(tokenizer, titles, config.max_length, device)
    steps_per_epoch = (len(train) + config.batch_groups - 1) // config.batch_groups
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    total = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup * total), total)
    # resumed only by a run of the same config on the same queries (another night's data starts afresh)
    checkpoint = Checkpoint(out / "checkpoint" / "state.pt",
                            {**asdict(config), "train": data_hash(train), "dev": data_hash(dev)}, model, optimizer,
                            scheduler)
    state = checkpoint.restore(device)
    model.train()
    started = time.perf_counter() - state["seconds"]
    while state["epoch"] < config.epochs:
        _train_epoch(model, batcher, train, config, optimizer, scheduler, checkpoint, state, started, progress,
                     precision)
        metrics = evaluate_groups(model, batcher, dev, config.max_grade)
        state["history"].append({"epoch": state["epoch"] + 1, **metrics,
                                 "seconds": round(time.perf_counter() - started, 1)})
        logger.info("epoch %d dev %s", state["epoch"] + 1, metrics)
        score = metrics["ndcg@10"] + metrics["mrr@10"]
        if state["best"] is None or score > state["best"]["score"]:
            state["best"] = {"epoch": state["epoch"] + 1, "score": score, **metrics}
            model.save(out / "best")
            tokenizer.save_pretrained(out / "best")
        state["epoch"] += 1
        state["step"] = 0
        state["seconds"] = time.perf_counter() - started
        checkpoint.save(state)
    summary = {"best": state["best"], "history": state["history"], "seconds": round(state["seconds"], 1),
               "train_groups": len(train), "dev_groups": len(dev), "device": device, "precision": precision,
               "data_hash": data_hash(train),
               "config": asdict(config)}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _train_epoch(model, batcher: _Batcher, train: Sequence[Group], config: RerankerConfig,  # type: ignore[no-untyped-def]
                 optimizer, scheduler, checkpoint: Checkpoint, state: dict, started: float,  # type: ignore[type-arg]
                 progress: bool, precision: str = "fp32") -> None:
    """The rest of the epoch ``state`` stands in, from its step on, in the epoch's seeded order; the
    model's forward pass in ``precision`` (bf16: torch autocast), the losses in float32."""
    from tqdm.auto import tqdm

    relevant = grade_threshold(0.6, config.max_grade)
    steps_per_epoch = (len(train) + config.batch_groups - 1) // config.batch_groups
    order = list(range(len(train)))
    random.Random(config.seed + state["epoch"]).shuffle(order)
    bar = tqdm(range(state["step"], steps_per_epoch), disable=not progress,
               desc=f"epoch {state['epoch'] + 1}/{config.epochs}", unit="step")
    for step in bar:
        batch = [train[i] for i in order[step * config.batch_groups : (step + 1) * config.batch_groups]]
        loss = _batch_loss(model, batcher, batch, relevant, config, precision)
        bar.set_postfix(loss=f"{optimizer_step(loss, model, optimizer, scheduler):.4f}")
        state["step"] = step + 1
        if state["step"] % config.checkpoint_every == 0:
            state["seconds"] = time.perf_counter() - started
            checkpoint.save(state)


def _batch_loss(model, batcher: _Batcher, batch: Sequence[Group], relevant: int, config: RerankerConfig,  # type: ignore[no-untyped-def]
                precision: str = "fp32"):
    import torch

    queries, products, spans, all_pairs, point_rows, point_targets = [], [], [], [], [], []
    for group in batch:
        items, grades, pairs = _pairs(group, relevant, config.mined_weight, config.max_grade)
        offset = len(products)
        queries += [group.query] * len(items)
        products += items
        spans.append((offset, len(items)))
        all_pairs += [(offset + i, offset + j, w) for i, j, w in pairs]
        for i, grade in enumerate(grades):
            if grade >= 0:
                point_rows.append(offset + i)
                point_targets.append(grade / config.max_grade)
    inputs = batcher(queries, products)
    with torch.autocast(inputs["input_ids"].device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        scores = model(**inputs)
    scores = scores.float()
    if config.loss == "listnet":
        return _listnet(scores, spans, batch, config)
    device = scores.device
    better = torch.tensor([p[0] for p in all_pairs], dtype=torch.long, device=device)
    worse = torch.tensor([p[1] for p in all_pairs], dtype=torch.long, device=device)
    weights = torch.tensor([p[2] for p in all_pairs], dtype=torch.float32, device=device)
    loss = pairwise_loss(scores, better, worse, weights)
    if config.pointwise_weight and point_rows:
        rows = torch.tensor(point_rows, dtype=torch.long, device=device)
        targets = torch.tensor(point_targets, dtype=torch.float32, device=device)
        loss = loss + config.pointwise_weight * torch.nn.functional.binary_cross_entropy_with_logits(scores[rows], targets)
    return loss


def _listnet(scores, spans: list[tuple[int, int]], batch: Sequence[Group], config: RerankerConfig):  # type: ignore[no-untyped-def]
    """ListNet (Cao et al. 2007): cross-entropy between softmax(grade / T) and softmax(scores) per judged list."""
    import torch

    losses = []
    for (offset, size), group in zip(spans, batch):
        judged = len(group.judged)
        if judged < 2:
            continue
        grades = torch.tensor(list(group.judged.values()), dtype=torch.float32, device=scores.device)
        target = torch.softmax(grades / config.temperature, dim=0)
        log_probs = torch.log_softmax(scores[offset : offset + judged], dim=0)
        losses.append(-(target * log_probs).sum())
    return torch.stack(losses).mean() if losses else scores.sum() * 0.0


def save_examples(path: Path, config: RerankerConfig, train: Sequence[Group], dev: Sequence[Group],
                  titles: dict[str, str]) -> None:
    """Everything training needs, for :func:`main` on another machine (``--export``)."""
    write_examples(path, "reranker", {"config": asdict(config), "train": train, "titles": titles,
                                      "dev": [[g.qid, g.query, g.judged] for g in dev]})


def load_examples(path: Path) -> tuple[RerankerConfig, list[Group], list[Group], dict[str, str]]:
    payload = read_examples(path, "reranker")
    known = {f.name for f in fields(RerankerConfig)}
    config = RerankerConfig(**{k: v for k, v in payload["config"].items() if k in known})
    dev = [Group(qid, query, judged) for qid, query, judged in payload["dev"]]
    return config, payload["train"], dev, payload["titles"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = training_parser(
        "reranker", "Train the cross-encoder from a file written by `shoprank train reranker --export`; "
                    "register the folder with `shoprank train reranker --dataset D --trained FOLDER`.",
        out_help="folder for the training run (best/ is the model)")
    parser.add_argument("--batch-groups", type=positive, help="queries per step")
    parser.add_argument("--loss", choices=("pairwise", "listnet"))
    add_precision_argument(parser, None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, train, dev, titles = load_examples(args.examples)
    summary = train_reranker(overridden(config, args), train, dev, titles, args.out)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
