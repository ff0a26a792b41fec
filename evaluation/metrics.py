"""Ranking metrics over one query; the harness averages them.

- NDCG@k (Jarvelin and Kekalainen 2002) with linear gains (gain = grade) and
  ``log2(rank + 1)`` discounts; the ideal list is built from every judged grade
  of the query, so unretrieved relevant products lower the score.
- Condensed lists (Sakai 2007): unjudged results are removed before the cut,
  which keeps sparse judgments from penalising unjudged-but-good results.
- MRR@k: reciprocal rank of the first result with grade >= a threshold.
- Recall@k: share of products with grade >= a threshold found in the first k.

Checked against ranx in ``tests/evaluation/test_metrics.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int = 10) -> float:
    """NDCG@k of a ranked list of product ids; unjudged products gain 0."""
    ideal = dcg(sorted(grades.values(), reverse=True)[:k])
    if ideal <= 0:
        return 0.0
    return dcg([grades.get(pid, 0) for pid in ranked[:k]]) / ideal


def mrr_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int, min_grade: int) -> float:
    """1/rank of the first product in the top ``k`` with grade >= ``min_grade``, else 0."""
    for rank, pid in enumerate(ranked[:k], start=1):
        if grades.get(pid, 0) >= min_grade:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int, min_grade: int) -> float | None:
    """Share of products with grade >= ``min_grade`` in the top ``k``; None if there are none."""
    relevant = {pid for pid, grade in grades.items() if grade >= min_grade}
    if not relevant:
        return None
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def condense(ranked: Sequence[str], grades: Mapping[str, int], depth: int = 100) -> list[str]:
    """The judged products among the first ``depth`` results, in order (Sakai 2007)."""
    return [pid for pid in ranked[:depth] if pid in grades]


def grade_threshold(fraction: float, max_grade: int) -> int:
    """``ceil(fraction * max_grade)``, the smallest grade counted as a hit."""
    if not 0 < fraction <= 1:
        raise ValueError(f"threshold fraction {fraction} must be in (0, 1]")
    return max(1, math.ceil(fraction * max_grade - 1e-9))
