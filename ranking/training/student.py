"""Distil a small student from the teacher: ``shoprank train student``.

1. A pool of (query, candidate) pairs for the training queries: each query's
   judged products plus the first stage's top ``pool_depth`` products, scored by
   the teacher (ONNX fp32) and cached to ``pool.parquet`` in chunks, so an
   interrupted run resumes.
2. Optionally (``ensemble`` > 0) the served LambdaMART scores the same pairs
   (:func:`ensemble_pool`) and the target becomes a blend of the two
   (:func:`distillation_targets`): the student then learns the teacher-and-
   LambdaMART ensemble, which also sees BM25, the dense score and the text
   features.
3. The student starts from the teacher's first ``layers`` layers (and its head)
   and learns the target's score differences within each query with the
   Margin-MSE loss (Hofstatter et al. 2020).
4. Model selection on a fixed dev sample (rerank NDCG@10 + MRR@10) per epoch.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.files import write_text_atomic
from ranking.training.data import Group, optimizer_step
from ranking.training.losses import margin_mse
from ranking.training.reranker import _Batcher, check_dev, evaluate_groups, load_model

logger = logging.getLogger(__name__)


@dataclass
class StudentConfig:
    teacher: str
    layers: int = 2
    epochs: int = 1
    lr: float = 5e-5
    batch_groups: int = 8
    max_length: int = 40
    pool_depth: int = 10
    seed: int = 13
    max_grade: int = 8
    ensemble: float = 0.0  # weight of LambdaMART in the target (0: the teacher alone)
    queries: str = "typed"  # typed: as the dataset spells them; analyzed: as the served stages score them


def teacher_pool(groups: Sequence[Group], candidates: dict[str, list[str]], teacher_dir: Path,
                 titles: dict[str, str], out: Path, chunk: int = 200, progress: bool = True,
                 max_length: int = 40) -> pd.DataFrame:
    """Teacher scores of every (query, judged or candidate product) pair, cached in ``out`` (a part per
    ``chunk`` queries, each written whole, so a rerun scores only the parts not yet written). ``max_length``:
    the token cap the teacher is served at (:func:`serving.loading.served_max_length`), so the targets score
    the pairs serving scores (in fp32: the served int8 or bf16 scores stay within a rounding of them)."""
    from tqdm.auto import tqdm

    from ranking.cross_encoder import CrossEncoderScorer

    parts_dir = out / "pool_parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    scorer = None
    for start in tqdm(range(0, len(groups), chunk), disable=not progress, desc="teacher pool", unit="chunk"):
        part = parts_dir / f"{start:07d}.parquet"
        if part.is_file():
            continue
        scorer = scorer or CrossEncoderScorer(teacher_dir, precision="fp32", max_length=max_length)
        rows = []
        for group in groups[start : start + chunk]:
            products = list(dict.fromkeys([*group.judged, *candidates.get(group.qid, [])]))
            scores = scorer.score(group.query, [titles[p] for p in products])
            rows += [(group.qid, p, float(s)) for p, s in zip(products, scores)]
        # whole or not at all: a run killed mid-write leaves no part that a later run would take as done
        write_text_atomic(part, pd.DataFrame(rows, columns=["query_id", "product_id", "teacher"]).to_parquet())
    return pd.concat([pd.read_parquet(p) for p in sorted(parts_dir.glob("*.parquet"))], ignore_index=True)


def ensemble_pool(pool: pd.DataFrame, queries: dict[str, str],
                  rank: Callable[[str, list[str]], dict[str, float]], progress: bool = True) -> pd.DataFrame:
    """``pool`` with an ``ltr`` column: ``rank(query, product_ids)`` -> LambdaMART score per product
    (a product it did not score is dropped from its query's group)."""
    from tqdm.auto import tqdm

    parts = []
    for qid, frame in tqdm(pool.groupby("query_id", sort=True), disable=not progress, desc="LambdaMART pool",
                           unit="q"):
        if qid not in queries:
            continue
        scores = rank(queries[qid], frame["product_id"].tolist())
        parts.append(frame.assign(ltr=frame["product_id"].map(scores)).dropna(subset=["ltr"]))
    return pd.concat(parts, ignore_index=True) if parts else pool.assign(ltr=pd.Series(dtype=float))


def distillation_targets(pool: pd.DataFrame, ensemble: float) -> pd.Series:
    """Each pair's target: the teacher's score, or with ``ensemble`` = w > 0 the blend
    ``(1 - w) * teacher + w * c * ltr``, where ``c`` puts LambdaMART's within-query spread on the
    teacher's (pooled standard deviations of the scores minus their query means), so the weight
    means the same whatever the two models' scales."""
    if not 0.0 <= ensemble <= 1.0:
        raise ValueError(f"ensemble weight {ensemble!r} is not within [0, 1]")
    if ensemble == 0.0:
        return pool["teacher"]
    if "ltr" not in pool:
        raise ValueError("an ensemble target needs the pool's LambdaMART scores (ensemble_pool)")

    def spread(column: str) -> float:
        centred = pool[column] - pool.groupby("query_id")[column].transform("mean")
        return float(np.sqrt((centred**2).mean()))

    scale = spread("teacher") / max(spread("ltr"), 1e-9)
    return (1.0 - ensemble) * pool["teacher"] + ensemble * scale * pool["ltr"]


def train_student(config: StudentConfig, groups: Sequence[Group], pool: pd.DataFrame, dev: Sequence[Group],
                  titles: dict[str, str], out: Path, progress: bool = True) -> dict[str, object]:
    """Train the student on ``pool``; the best epoch on ``dev`` (InvalidInput when empty) is saved to ``out/best``."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    check_dev(dev)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.teacher)
    model = load_model(config.teacher, config.layers)
    batcher = _Batcher(tokenizer, titles, config.max_length)
    queries = {g.qid: g.query for g in groups}
    pool = pool.assign(target=distillation_targets(pool, config.ensemble))
    by_query = [(qid, frame["product_id"].tolist(), torch.tensor(frame["target"].to_numpy(), dtype=torch.float32))
                for qid, frame in pool.groupby("query_id", sort=True) if qid in queries and len(frame) > 1]
    steps_per_epoch = (len(by_query) + config.batch_groups - 1) // config.batch_groups
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.05 * steps_per_epoch * config.epochs),
                                                steps_per_epoch * config.epochs)
    best, history, started = None, [], time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        order = list(range(len(by_query)))
        random.Random(config.seed + epoch).shuffle(order)
        bar = tqdm(range(steps_per_epoch), disable=not progress, desc=f"student L{config.layers} e{epoch + 1}")
        for step in bar:
            batch = [by_query[i] for i in order[step * config.batch_groups : (step + 1) * config.batch_groups]]
            texts_q = [queries[qid] for qid, products, _ in batch for _ in products]
            products = [p for _, ps, _ in batch for p in ps]
            scores = model(**batcher(texts_q, products))
            loss, offset = scores.sum() * 0.0, 0
            for _, ps, target in batch:
                loss = loss + margin_mse(scores[offset : offset + len(ps)], target)
                offset += len(ps)
            loss = loss / len(batch)
            bar.set_postfix(loss=f"{optimizer_step(loss, model, optimizer, scheduler):.4f}")
        metrics = evaluate_groups(model, batcher, dev, config.max_grade)
        history.append({"epoch": epoch + 1, **metrics, "seconds": round(time.perf_counter() - started, 1)})
        score = metrics["ndcg@10"] + metrics["mrr@10"]
        if best is None or score > best["score"]:
            best = {"epoch": epoch + 1, "score": score, **metrics}
            model.save(out / "best")
            tokenizer.save_pretrained(out / "best")
    summary = {"best": best, "history": history, "seconds": round(time.perf_counter() - started, 1),
               "pool_pairs": int(len(pool)), "groups": len(by_query)}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
