from __future__ import annotations

import numpy as np
import pytest

from retrieval.rrf import fuse
from retrieval.types import Candidates, Hits


def run(*docs: int) -> Hits:
    return Hits.of(docs, [1.0 / (i + 1) for i in range(len(docs))])


def scores_of(hits: Hits) -> dict[int, float]:
    return dict(zip(hits.docs.tolist(), hits.scores.tolist()))


def test_rrf_scores_match_the_formula() -> None:
    scores = scores_of(fuse({"a": run(1, 2, 3), "b": run(3, 1)}, k=60))
    assert scores[1] == pytest.approx(1 / 61 + 1 / 62)
    assert scores[2] == pytest.approx(1 / 62)
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)


def test_fuse_orders_by_fused_score_and_breaks_ties_by_doc() -> None:
    assert fuse({"a": run(1, 2, 3), "b": run(3, 1)}, k=60).docs.tolist() == [1, 3, 2]
    assert fuse({"a": run(5), "b": run(4)}, k=60).docs.tolist() == [4, 5]
    assert len(fuse({"a": Hits.empty(), "b": Hits.empty()})) == 0


def test_fuse_limit_and_small_k_sharpens_top_ranks() -> None:
    assert len(fuse({"a": run(1, 2, 3)}, limit=2)) == 2
    # doc 9 is first in one list only; doc 8 is fourth in both: 2/(k+4) vs 1/(k+1), k decides
    runs = {"a": run(9, 1, 2, 8), "b": run(7, 3, 4, 8)}
    assert fuse(runs, k=1).docs[0] in (7, 9)
    assert fuse(runs, k=100).docs[0] == 8


def test_rrf_rejects_bad_k() -> None:
    with pytest.raises(ValueError, match="k=0"):
        fuse({"a": run(1)}, k=0)


def test_candidates_carry_each_source_and_reorder() -> None:
    bm25, dense = run(1, 2, 3), run(3, 4)
    fused = fuse({"bm25": bm25, "dense": dense}, k=60)
    ids = [f"p{d}" for d in fused.docs]
    cands = Candidates.from_hits(fused, "rrf", ids, {"bm25": bm25, "dense": dense})
    rows = list(cands)
    assert [r.product_id for r in rows] == ["p3", "p1", "p2", "p4"]  # p2/p4 tie: lower doc first
    assert rows[0].ranks == {"rrf": 1, "bm25": 3, "dense": 1}
    assert rows[3].ranks == {"rrf": 4, "dense": 2} and "bm25" not in rows[3].scores
    again = cands.reorder("student", np.array([0.1, 0.9, 0.5, 0.2]))
    assert again.product_ids == ["p1", "p2", "p4", "p3"] and again.stage == "student"
    assert list(again)[0].ranks == {"rrf": 2, "bm25": 1, "student": 1}
    assert again.top(2).product_ids == ["p1", "p2"]
