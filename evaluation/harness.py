"""Run a pipeline over a judged split and average the metrics.

Two modes (see ``docs/models.md``, *Evaluation*):

- ``rerank``: each query's judged products are the candidates; the pipeline
  only orders them. They are handed over in an order drawn per query (seeded
  by its id), so products a pipeline scores alike land in a random order, not
  the catalog's. Queries with fewer than 2 judged products or a single
  distinct grade carry no signal and are skipped (counted).
- ``retrieval``: the pipeline searches the whole catalog, ``depth`` (1,000)
  deep. Recall@100/@1000 count products with grade >= ceil(0.6 * max grade);
  NDCG@10 and MRR@10 are computed on the condensed top-100 list (unjudged
  results dropped before the cut; Sakai 2007). Queries whose judgments are all
  grade 0 are skipped (their ideal DCG is 0). Condensing hides a ranker that
  lifts unjudged products into the top 10, so two more figures are reported:
  ``ndcg@10_unjudged_as_0`` (the uncondensed list, unjudged = grade 0) and
  ``judged@10`` (the share of the top 10 that is judged).

MRR@10 counts a hit at grade >= ceil(0.75 * max grade). Latency is the wall
time of each pipeline call, one query at a time.

``subset`` restricts the split to a named query subset (``evaluation.subsets``:
``all``, ``misspelled``, ``correct``) before ``limit`` applies. ``typos`` types each query
with one synthetic slip (``evaluation.typos``, seeded by the query's id) and leaves out the
queries with no word a slip can hit: paired with a run without, the same queries and
judgments measure what a typing slip costs. Every result also
keeps each metric's per-query values (``EvalResult.per_query``, not printed) so
two pipelines can be compared query by query (``evaluation.compare``).
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from core.errors import InvalidInput
from core.files import finite
from evaluation.dataset import EvalDataset
from evaluation.metrics import condense, grade_threshold, mrr_at_k, ndcg_at_k, recall_at_k
from evaluation.subsets import subset_ids
from evaluation.typos import slipped
from retrieval.hybrid import Retriever
from retrieval.index import ProductIndex

Mode = Literal["rerank", "retrieval"]


@dataclass(frozen=True)
class Thresholds:
    recall: float = 0.6
    mrr: float = 0.75


@dataclass
class EvalResult:
    dataset: str
    mode: str
    pipeline: str
    split: str | None
    queries: int
    skipped: int
    metrics: dict[str, float]
    latency_ms: dict[str, float]
    details: dict[str, object] = field(default_factory=dict)
    subset: str = "all"
    # metric -> query id -> unrounded value, for the queries the metric averages (not printed)
    per_query: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    label: str | None = None  # the name a saved result was saved under (:meth:`save`), read back by :meth:`load`

    def to_json(self) -> dict[str, object]:
        out = {"dataset": self.dataset, "mode": self.mode, "pipeline": self.pipeline, "split": self.split,
               "subset": self.subset, "queries": self.queries, "skipped": self.skipped}
        return {**out, **self.metrics, "latency_ms": dict(self.latency_ms), **self.details}

    def save(self, path: Path, label: str | None = None) -> None:
        """Write the result with its per-query values (``shoprank evaluate --save``), for a later
        paired comparison with another run (``shoprank compare``): another encoder, setting or model."""
        payload = {"result": self.to_json(), "per_query": self.per_query, "label": label or self.pipeline}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(finite(payload), allow_nan=False))  # a metric of no query: null, read as NaN

    @classmethod
    def load(cls, path: Path) -> EvalResult:
        """A result written by :meth:`save`; :class:`InvalidInput` naming the file when it is not one."""
        try:
            payload = json.loads(path.read_text())
            data, per_query = dict(payload["result"]), payload["per_query"]
            fixed = {k: data.pop(k) for k in ("dataset", "mode", "pipeline", "split", "subset", "queries", "skipped")}
            latency = data.pop("latency_ms")
            if not isinstance(per_query, dict) or not all(
                    isinstance(v, dict) and all(isinstance(x, int | float) for x in v.values())
                    for v in per_query.values()):
                raise ValueError("per_query is not metric -> {query id: value}")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InvalidInput(f"{path} is not a result saved by 'shoprank evaluate --save' ({err})") from err
        metrics = {k: math.nan if (v := data.pop(k)) is None else v for k in list(data) if k in per_query}
        label = payload.get("label")
        return cls(**fixed, metrics=metrics, latency_ms=latency, details=data, per_query=per_query,
                   label=label if isinstance(label, str) else None)


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 4) if values else float("nan")


def _percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50": float("nan"), "p95": float("nan")}
    ms = np.asarray(seconds) * 1e3
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p95": round(float(np.percentile(ms, 95)), 2)}


RERANK_METRICS = ("ndcg@10", "mrr@10")
RETRIEVAL_METRICS = ("ndcg@10", "mrr@10", "recall@100", "recall@1000", "ndcg@10_unjudged_as_0", "judged@10")


def evaluate(dataset: EvalDataset, index: ProductIndex, pipeline: Retriever, pipeline_name: str,
             mode: Mode, split: str | None = None, thresholds: Thresholds = Thresholds(),
             depth: int = 1000, limit: int | None = None, progress: bool = True,
             subset: str = "all", typos: bool = False) -> EvalResult:
    """Evaluate ``pipeline`` on ``split`` of ``dataset``.

    Args:
        index: The index the pipeline searches; must hold the dataset's products.
        depth: Results requested per query in retrieval mode.
        limit: Evaluate only the first ``limit`` queries of the split (smoke runs).
        subset: A query subset of :data:`evaluation.subsets.SUBSETS`; ``limit`` counts within it.
        typos: Search each query (of the subset) typed with one slip; leave out those without a word to slip.
    """
    if mode not in ("rerank", "retrieval"):
        raise InvalidInput(f"mode {mode!r} is not one of 'rerank', 'retrieval'")
    hit_grade = grade_threshold(thresholds.mrr, dataset.max_grade)
    relevant_grade = grade_threshold(thresholds.recall, dataset.max_grade)
    selected = dataset.select(split)
    if subset != "all":
        members = subset_ids(dataset, selected, subset)
        selected = [(qid, query) for qid, query in selected if qid in members]
    unslipped = 0
    if typos:
        selected, unslipped = _typed_with_slips(selected, limit)
    selected = selected[:limit]  # within the subset, of the queries searched
    order = list(RERANK_METRICS if mode == "rerank" else RETRIEVAL_METRICS)
    per_query: dict[str, dict[str, float]] = {metric: {} for metric in order}
    latency: list[float] = []
    skipped = 0
    for qid, query in tqdm(selected, disable=not progress, desc=f"{pipeline_name}/{mode}", unit="q"):
        grades = dataset.qrels.get(qid, {})
        if not _scorable(mode, grades):
            skipped += 1
            continue
        if mode == "rerank":
            docs = given_order(qid, (index.doc_of(p) for p in grades))
            started = time.perf_counter()
            ranked = pipeline.rank(query, docs).product_ids
        else:
            started = time.perf_counter()
            ranked = pipeline.search(query, depth).product_ids
        latency.append(time.perf_counter() - started)
        for metric, value in query_metrics(mode, ranked, grades, hit_grade, relevant_grade).items():
            per_query[metric][qid] = value
    metrics = {metric: _mean(list(per_query[metric].values())) for metric in order}
    details: dict[str, object] = {"max_grade": dataset.max_grade, "mrr_min_grade": hit_grade}
    if mode == "retrieval":
        details |= {"recall_min_grade": relevant_grade, "recall_queries": len(per_query["recall@100"]),
                    "depth": depth}
    if typos:
        details["typos"] = {"slipped": len(selected), "left_out": unslipped}
    details["dropped_judgments"] = dataset.dropped_judgments
    details["dataset_digest"] = dataset.digest
    return EvalResult(dataset=dataset.name, mode=mode, pipeline=pipeline_name, split=split,
                      queries=len(per_query["ndcg@10"]), skipped=skipped, metrics=metrics,
                      latency_ms=_percentiles(latency), details=details, subset=subset,
                      per_query=per_query)


def _typed_with_slips(selected: list[tuple[str, str]], limit: int | None) -> tuple[list[tuple[str, str]], int]:
    """The first ``limit`` of the ``selected`` queries that a slip can hit, typed with it, and how many were
    left out on the way (so the two counts cover the same queries)."""
    typed: list[tuple[str, str]] = []
    left_out = 0
    for qid, query in selected:
        if limit is not None and len(typed) >= limit:
            break
        text = slipped(qid, query)
        if text is None:
            left_out += 1
        else:
            typed.append((qid, text))
    return typed, left_out


def given_order(qid: str, docs: Iterable[int | None]) -> list[int]:
    """The judged products of query ``qid`` in the order rerank mode hands them to a pipeline: shuffled by a
    generator seeded with the query's id, the same at every run. A ranker that scores some of them alike keeps
    them in the order given (a stable sort), so the order given must not be the catalog's: BM25 scores every
    product 0 on a query none of whose words it knows, and the catalog's order then decides the metric."""
    ordered = sorted(d for d in docs if d is not None)
    random.Random(zlib.crc32(qid.encode())).shuffle(ordered)
    return ordered


def _scorable(mode: Mode, grades: dict[str, int]) -> bool:
    """Rerank mode needs two judged products of two grades; retrieval mode one relevant product."""
    if mode == "rerank":
        return len(grades) >= 2 and len(set(grades.values())) >= 2
    return any(grades.values())


def query_metrics(mode: Mode, ranked: list[str], grades: dict[str, int], hit_grade: int,
                   relevant_grade: int) -> dict[str, float]:
    """One query's metrics. Retrieval mode scores NDCG@10 and MRR@10 on the list condensed to its
    judged products (of the top 100), and also NDCG@10 with unjudged products as grade 0; a query
    with no product of the recall grade has no recall."""
    if mode == "rerank":
        return {"ndcg@10": ndcg_at_k(ranked, grades, 10), "mrr@10": mrr_at_k(ranked, grades, 10, hit_grade)}
    condensed = condense(ranked, grades, 100)
    out = {"ndcg@10": ndcg_at_k(condensed, grades, 10), "mrr@10": mrr_at_k(condensed, grades, 10, hit_grade),
           "ndcg@10_unjudged_as_0": ndcg_at_k(ranked, grades, 10),
           "judged@10": sum(p in grades for p in ranked[:10]) / max(1, min(10, len(ranked)))}
    for k in (100, 1000):
        value = recall_at_k(ranked, grades, k, relevant_grade)
        if value is not None:
            out[f"recall@{k}"] = value
    return out
