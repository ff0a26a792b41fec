"""Metrics on hand-made runs: closed-form values and parity with ranx."""

from __future__ import annotations

import math

import pytest
from ranx import Qrels, Run, evaluate

from evaluation.metrics import condense, grade_threshold, mrr_at_k, ndcg_at_k, recall_at_k

# 3 queries x 5 docs, grades 0..8
QRELS = {
    "q1": {"d1": 8, "d2": 5, "d3": 0, "d4": 2},
    "q2": {"d1": 1, "d5": 8},
    "q3": {"d2": 3, "d3": 6, "d4": 6},
}
RUNS = {
    "q1": ["d2", "d1", "d5", "d4", "d3"],
    "q2": ["d1", "d2", "d3", "d4", "d5"],
    "q3": ["d3", "d1", "d4", "d5", "d2"],
}


def test_ndcg_closed_form() -> None:
    dcg = 5 / math.log2(2) + 8 / math.log2(3) + 0 + 2 / math.log2(5)
    idcg = 8 / math.log2(2) + 5 / math.log2(3) + 2 / math.log2(4)
    assert ndcg_at_k(RUNS["q1"], QRELS["q1"], 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["d1"], {"d1": 0}, 10) == 0.0
    assert ndcg_at_k(["d5", "d1"], QRELS["q2"], 10) == pytest.approx(1.0)


def test_ndcg_matches_ranx_linear_gains() -> None:
    qrels = Qrels(QRELS)
    run = Run({q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in RUNS.items()})
    for k in (3, 5, 10):
        expected = evaluate(qrels, run, f"ndcg@{k}", make_comparable=True)
        ours = sum(ndcg_at_k(RUNS[q], QRELS[q], k) for q in RUNS) / len(RUNS)
        assert ours == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("min_grade", [1, 5, 6, 8])
def test_mrr_and_recall_match_ranx_on_binarised_qrels(min_grade: int) -> None:
    binary = {q: {d: 1 for d, g in grades.items() if g >= min_grade} for q, grades in QRELS.items()}
    run = Run({q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in RUNS.items()})
    with_relevant = [q for q in RUNS if binary[q]]
    qrels = Qrels({q: binary[q] for q in with_relevant})
    sub_run = Run({q: run.to_dict()[q] for q in with_relevant})
    expected_mrr = evaluate(qrels, sub_run, "mrr@3", make_comparable=True)
    ours_mrr = sum(mrr_at_k(RUNS[q], QRELS[q], 3, min_grade) for q in with_relevant) / len(with_relevant)
    assert ours_mrr == pytest.approx(expected_mrr)
    expected_recall = evaluate(qrels, sub_run, "recall@2", make_comparable=True)
    recalls = [recall_at_k(RUNS[q], QRELS[q], 2, min_grade) for q in with_relevant]
    assert sum(recalls) / len(recalls) == pytest.approx(expected_recall)


def test_recall_none_without_relevant_and_mrr_zero_without_hit() -> None:
    assert recall_at_k(["d1"], {"d1": 2}, 10, 5) is None
    assert mrr_at_k(["d1", "d2"], {"d1": 2, "d2": 5}, 10, 6) == 0.0
    assert mrr_at_k(["d1", "d2"], {"d1": 2, "d2": 6}, 10, 6) == 0.5
    assert mrr_at_k(["d1", "d2"], {"d1": 2, "d2": 6}, 1, 6) == 0.0


def test_condensed_list_drops_unjudged_before_the_cut() -> None:
    ranked = ["x", "d1", "y", "d2", "z"]
    assert condense(ranked, {"d1": 8, "d2": 0}, depth=100) == ["d1", "d2"]
    assert condense(ranked, {"d1": 8, "d2": 0}, depth=3) == ["d1"]
    # condensed NDCG ignores the unjudged x at rank 1
    assert ndcg_at_k(condense(ranked, {"d1": 8}), {"d1": 8}) == 1.0


def test_grade_threshold_is_ceiling_of_fraction() -> None:
    assert grade_threshold(0.6, 8) == 5
    assert grade_threshold(0.75, 8) == 6
    assert grade_threshold(0.5, 2) == 1
    assert grade_threshold(1.0, 3) == 3
    with pytest.raises(ValueError, match="must be in"):
        grade_threshold(0.0, 8)
