"""Fine-tune the bi-encoder: ``shoprank train biencoder``.

Contrastive training with the multiple-negatives ranking loss (Henderson et al.
2017; sentence-transformers' MNRL): for a batch of (query, relevant product)
pairs, each query must score its own product above every other product in the
batch, and above one *hard negative* of its own when ``hard_negatives`` is on.
Every relevant product of a query makes a pair (``positives``), and a query's
other relevant products in the batch are masked out of its negatives, whether
they come as another example's positive or as another query's hard negative.

Why hard negatives matter: in-batch negatives are random products (a drill vs a
garden hose), which the zero-shot model already separates; the mistakes that
cost recall are near misses (a 1/2 in. vs a 3/4 in. fitting, the wrong brand's
battery). Hard negatives supply exactly those. They come from the query's own
judged products with a low grade when it has any (judged non-relevant: clean),
else from the first stage's top 30, excluding judged products and duplicates of
their titles (unjudged top results are often relevant: false negatives).
benchmarks/RESULTS.md shows Recall@100 with and without them.

With a teacher (``shoprank train biencoder --distill W``) the cross-encoder's
scores of each query's judged and mined products guide training twice: a mined
product the teacher scores at least as high as one of the query's relevant
products is not drawn as a negative (it is probably a relevant product nobody
judged; RocketQA's denoised negatives, Qu et al. 2021), and with ``distill`` > 0
the bi-encoder's margins ``cos_pos - cos_neg`` over a batch's pairs learn to
correlate with the teacher's ``score_pos - score_neg`` (weight ``distill``;
:func:`ranking.training.losses.margin_correlation`). The correlation is blind to
both scales: on Home Depot the teacher's margins average 0.6 logits and the
fine-tuned bi-encoder's (cosines times the softmax's scale, 20) 2.0, so matching
them outright (Margin-MSE, Hofstatter et al. 2020) would shrink every margin the
softmax opens.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from core.arguments import non_negative_number, positive
from core.errors import InvalidInput
from evaluation.metrics import grade_threshold
from evaluation.typos import add_typo
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
from ranking.training.dense_check import DevSet, dense_dev_metrics

logger = logging.getLogger(__name__)


@dataclass
class BiEncoderConfig:
    base_model: str
    epochs: int = 1
    lr: float = 2e-5
    batch_size: int = 64
    max_length: int = 48
    hard_negatives: bool = True
    scale: float = 20.0
    warmup: float = 0.1
    seed: int = 13
    max_grade: int = 8
    # "all": every (query, relevant product) pair is an example (in a batch, a query's other
    # positives are not its negatives); "one": one random relevant product per query and epoch.
    # On Home Depot "all" (32,612 pairs, 4.6x the examples and the time) lifted the first stage's
    # Recall@100 by +0.0057 [+0.0021, +0.0094] and NDCG@10 by +0.0057 (benchmarks/RESULTS.md).
    positives: str = "all"
    # "typed": each training query as the dataset spells it; "analyzed": as the server encodes it
    # (retrieval.analyzer: normalized units, fractions and symbols, spelling corrected). On Home Depot
    # the two tied on every first-stage metric (Recall@100 -0.0004 [-0.0025, +0.0016], NDCG@10
    # +0.0007 [-0.0012, +0.0026]; benchmarks/RESULTS.md), so the default stays as it was.
    queries: str = "typed"
    # Share of examples (drawn again each epoch) whose query gets one synthetic typing slip
    # (evaluation.typos): a dropped, doubled, swapped or neighbouring-key letter, or two
    # words run together. 0 trains on the queries as they are.
    typos: float = 0.0
    # "auto": a CUDA GPU when torch sees one, else the CPU
    device: str = "auto"
    # the forward pass in "fp32" or "bf16" (autocast); "auto": bf16 on a CPU with AMX or AVX-512 BF16, else fp32
    precision: str = "auto"
    # the fold of the split's queries left out ("I/K", shoprank train biencoder --hold-out), "" none:
    # recorded with the model, so `shoprank train ltr --fold-encoders` can check which queries it never saw
    held_out: str = ""
    # weight of the teacher's margins in the loss (0: its scores only denoise the negatives), the teacher used
    distill: float = 0.0
    teacher: str = ""


# query id -> product id -> the teacher's score (``shoprank train biencoder --distill``)
TeacherScores = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Triple:
    query: str
    positive: str
    negative: str | None
    group: str | None = None  # the training query it came from (a slipped query keeps its group)
    margin: float | None = None  # the teacher's score of the positive minus the negative's
    # the texts of every product its query's judges graded relevant, in the batch or not (:func:`false_negatives`);
    # empty: only the positives of the batch count as the query's products
    relevant: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        return self.group if self.group is not None else self.query


def triples(groups: Sequence[Group], texts: dict[str, str], config: BiEncoderConfig, seed: int,
            teacher: TeacherScores | None = None) -> list[Triple]:
    """(query, relevant product, hard negative): one per query with a relevant product, or with
    ``config.positives == "all"`` one per relevant product (a hard negative drawn for each). With
    ``teacher`` scores, mined negatives it scores like a relevant product are left out, and each
    triple carries the teacher's margin where it scored both products. Each triple carries the texts
    of its query's relevant products, which are never its negatives."""
    rng = random.Random(seed)
    relevant = grade_threshold(0.6, config.max_grade)
    low = grade_threshold(0.25, config.max_grade)
    out = []
    for group in groups:
        positives = [p for p, g in group.judged.items() if g >= relevant]
        if not positives:
            continue
        scores = (teacher or {}).get(group.qid, {})
        relevant_texts = frozenset(texts[p] for p in positives)
        pool = ([p for p, g in group.judged.items() if g < low] or denoised(group.mined, positives, scores)
                if config.hard_negatives else [])
        if config.positives == "all":
            pairs = [(p, rng.choice(pool) if pool else None) for p in positives]
        else:
            negative = rng.choice(pool) if pool else None
            pairs = [(rng.choice(positives), negative)]
        for p, negative in pairs:
            margin = scores[p] - scores[negative] if negative in scores and p in scores else None
            out.append(Triple(group.query, texts[p], texts[negative] if negative else None, group.qid, margin,
                              relevant_texts))
    if config.typos > 0:  # drawn after the pairs, so the pairs are the same with and without slips
        slips = random.Random(seed + 7919)
        out = [replace(t, query=add_typo(t.query, slips)) if slips.random() < config.typos else t for t in out]
    return out


def denoised(mined: Sequence[str], positives: Sequence[str], scores: dict[str, float]) -> list[str]:
    """The mined products the teacher scores below every relevant product of the query (all of
    them without scores; the lowest-scored one where it ranks every mined product that high)."""
    if not scores or not mined or any(p not in scores for p in [*mined, *positives]):
        return list(mined)
    floor = min(scores[p] for p in positives)
    return [p for p in mined if scores[p] < floor] or [min(mined, key=lambda p: scores[p])]


def false_negatives(batch: Sequence[Triple]) -> np.ndarray:
    """(batch, columns) mask of in-batch "negatives" that are not, over the loss's columns (every
    example's positive, then the hard negatives present, in batch order): a column whose text is a
    relevant product of this example's query (typed or slipped), such as another example's positive
    that is this example's product, another positive of its query, or another example's hard negative
    that is one of its query's relevant products (one query's negative can be relevant to another).
    A query's relevant products are those its triples carry (``Triple.relevant``, from its judged
    list, so a product counts whether or not its own pair is in the batch) and its positives in the batch."""
    relevant: dict[str, set[str]] = {}
    for t in batch:
        relevant.setdefault(t.key, set()).update({t.positive, *t.relevant})
    columns = [t.positive for t in batch] + [t.negative for t in batch if t.negative]
    mask = np.array([[text in relevant[t.key] for text in columns] for t in batch], dtype=bool)
    own = np.arange(len(batch))
    mask[own, own] = False  # each example's own positive is its target
    return mask


def train_biencoder(config: BiEncoderConfig, train: Sequence[Group], texts: dict[str, str], out: Path,
                    progress: bool = True, dev: DevSet | None = None,
                    teacher: TeacherScores | None = None) -> dict[str, object]:
    """Fine-tune ``config.base_model`` and save it (sentence-transformers folder) to ``out``.
    With ``dev``, the dense search is checked on it after each epoch (``history``); with ``teacher``
    scores, negatives are denoised and (``config.distill`` > 0) its margins distilled."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import batch_to_device
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    # trained in float32 whatever the base was saved in (a half-precision base would load as such)
    model = SentenceTransformer(config.base_model, device=device).float()
    model.max_seq_length = config.max_length
    model.train()
    per_epoch = [triples(train, texts, config, config.seed + e, teacher) for e in range(config.epochs)]
    steps = sum((len(t) + config.batch_size - 1) // config.batch_size for t in per_epoch)
    if steps == 0:
        raise InvalidInput("no training pair: the queries given have no judged product of the catalog to learn "
                           "from; give more queries (--limit) or another split")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup * steps), steps)
    started = time.perf_counter()

    def embed(batch_texts: list[str]) -> torch.Tensor:
        features = batch_to_device(model.tokenize(batch_texts), device)
        return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)

    losses, history = [], []
    with tqdm(total=steps, disable=not progress, desc="biencoder", unit="step") as bar:
        for epoch, examples in enumerate(per_epoch):
            random.Random(config.seed + 100 + epoch).shuffle(examples)
            for start in range(0, len(examples), config.batch_size):
                with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = _batch_loss(embed, examples[start : start + config.batch_size], config.scale, device,
                                       config.distill)
                losses.append(optimizer_step(loss, model, optimizer, scheduler))
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            if dev is not None:
                model.eval()
                history.append({"epoch": epoch + 1, **dense_dev_metrics(model, texts, dev)})
                model.train()
                logger.info("epoch %d: dense search on the dev queries %s", epoch + 1, history[-1])
    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save(str(out))
    summary = {"steps": steps, "examples": sum(len(t) for t in per_epoch), "final_loss": float(np.mean(losses[-50:])),
               "seconds": round(time.perf_counter() - started, 1), "device": device, "precision": precision,
               "history": history, "teacher_margins": sum(t.margin is not None for t in per_epoch[0]),
               "data_hash": data_hash(train), "config": asdict(config)}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _batch_loss(embed, batch: Sequence[Triple], scale: float, device: str,  # type: ignore[no-untyped-def]
                distill: float = 0.0):
    """Multiple negatives ranking loss (Henderson et al. 2017): each query against every positive
    and hard negative of the batch, its own positive the target; another query's positive or hard
    negative that is also relevant to this one (a known false negative, :func:`false_negatives`)
    is masked out. With ``distill`` > 0, plus
    that weight times :func:`margin_loss` over the triples with a teacher margin."""
    import torch

    queries = embed([t.query for t in batch]).float()  # the similarities in float32, also under autocast
    docs = embed([t.positive for t in batch] + [t.negative for t in batch if t.negative]).float()
    logits = scale * queries @ docs.T
    extra = margin_loss(logits, batch) if distill > 0 else None
    masked = false_negatives(batch)
    if masked.any():
        logits = logits.masked_fill(torch.from_numpy(masked).to(device), float("-inf"))
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(batch), device=device))
    return loss if extra is None else loss + distill * extra


def margin_loss(logits, batch: Sequence[Triple]):  # type: ignore[no-untyped-def]
    """The bi-encoder's margins of the triples' positives over their negatives, ``logit_pos - logit_neg``,
    against the teacher's (:func:`ranking.training.losses.margin_correlation`). ``logits`` is the
    batch's (queries, positives + negatives) matrix; None where fewer than two triples have a margin."""
    import torch

    from ranking.training.losses import margin_correlation

    rows, columns, margins, column = [], [], [], len(batch)
    for i, triple in enumerate(batch):
        if triple.negative is None:
            continue
        if triple.margin is not None:
            rows.append(i)
            columns.append(column)
            margins.append(triple.margin)
        column += 1
    if len(rows) < 2:
        return None
    index = torch.tensor(rows, device=logits.device)
    student = logits[index, index] - logits[index, torch.tensor(columns, device=logits.device)]
    return margin_correlation(student, torch.tensor(margins, dtype=student.dtype, device=logits.device))


@dataclass(frozen=True)
class Examples:
    """What ``shoprank train biencoder --export`` writes: everything training needs."""

    config: BiEncoderConfig
    train: list[Group]
    texts: dict[str, str]
    dev: DevSet | None
    teacher: TeacherScores | None = None


def save_examples(path: Path, examples: Examples) -> None:
    """Everything training needs, for :func:`main` on another machine (``--export``)."""
    dev = examples.dev
    write_examples(path, "biencoder", {
        "config": asdict(examples.config), "train": examples.train, "texts": examples.texts,
        "dev": None if dev is None else {"queries": dev.queries, "relevant_grade": dev.relevant_grade},
        "teacher": examples.teacher})


def load_examples(path: Path) -> Examples:
    payload = read_examples(path, "biencoder")
    known = {f.name for f in fields(BiEncoderConfig)}
    config = BiEncoderConfig(**{k: v for k, v in payload["config"].items() if k in known})
    dev = payload["dev"]
    dev_set = None if dev is None else DevSet([tuple(q) for q in dev["queries"]], dev["relevant_grade"])
    return Examples(config, payload["train"], payload["texts"], dev_set, payload.get("teacher"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = training_parser(
        "biencoder", "Fine-tune the bi-encoder from a file written by `shoprank train biencoder --export`; "
                     "register the folder with `shoprank train biencoder --dataset D --trained FOLDER`.",
        out_help="folder for the trained model")
    parser.add_argument("--batch-size", type=positive)
    add_precision_argument(parser, None)
    parser.add_argument("--no-dev", action="store_true", help="skip the per-epoch check on the dev queries")
    parser.add_argument("--distill", type=non_negative_number,
                        help="weight of the teacher's preferences, 0 for none (needs exported scores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    examples = load_examples(args.examples)
    config = overridden(examples.config, args)
    if config.distill and not examples.teacher:
        parser.error(f"--distill {config.distill} needs teacher scores in {args.examples}: export it with "
                     "`shoprank train biencoder --distill W --export FILE`")
    summary = train_biencoder(config, examples.train, examples.texts, args.out,
                              dev=None if args.no_dev else examples.dev, teacher=examples.teacher)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0


def product_texts(products) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """product_id -> the text the bi-encoder embeds."""
    from retrieval.catalog import product_text

    return {p: product_text(t, d) for p, t, d in zip(products["product_id"], products["title"], products["description"])}


if __name__ == "__main__":
    raise SystemExit(main())
