"""The student's distillation target: the teacher alone, or its blend with LambdaMART; what it selects on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInput
from ranking.training.data import Group
from ranking.training.reranker import RerankerConfig, train_reranker
from ranking.training.student import (
    StudentConfig,
    distillation_targets,
    ensemble_pool,
    train_student,
)


def _pool() -> pd.DataFrame:
    return pd.DataFrame({"query_id": ["a", "a", "a", "b", "b"], "product_id": ["1", "2", "3", "1", "4"],
                         "teacher": [4.0, 0.0, -4.0, 2.0, -2.0]})


def test_weight_zero_is_the_teacher_and_needs_no_lambdamart() -> None:
    pool = _pool()
    assert distillation_targets(pool, 0.0).tolist() == pool["teacher"].tolist()


def test_the_blend_puts_lambdamart_on_the_teachers_spread() -> None:
    # LambdaMART orders query a the other way round, on a scale 100x smaller
    pool = _pool().assign(ltr=[-0.04, 0.0, 0.04, 0.02, -0.02])
    full = distillation_targets(pool, 1.0)
    assert np.allclose(full.to_numpy(), [-4.0, 0.0, 4.0, 2.0, -2.0])  # rescaled, not 100x smaller
    half = distillation_targets(pool, 0.5)
    assert np.allclose(half[:3].to_numpy(), 0.0)  # the two disagree on query a: a tie
    assert np.allclose(half[3:].to_numpy(), [2.0, -2.0])  # and agree on query b


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_a_weight_outside_zero_one_is_refused_by_value(weight: float) -> None:
    with pytest.raises(ValueError, match=str(weight)):
        distillation_targets(_pool().assign(ltr=0.0), weight)


def test_a_blend_without_lambdamart_scores_is_refused() -> None:
    with pytest.raises(ValueError, match="ensemble_pool"):
        distillation_targets(_pool(), 0.5)


def test_ensemble_pool_adds_lambdamarts_scores_and_drops_what_it_did_not_score() -> None:
    calls = []

    def rank(query: str, product_ids: list[str]) -> dict[str, float]:
        calls.append((query, product_ids))
        return {} if query == "timed out" else {p: float(i) for i, p in enumerate(product_ids) if p != "3"}

    out = ensemble_pool(_pool(), {"a": "drill", "b": "timed out"}, rank, progress=False)
    assert calls == [("drill", ["1", "2", "3"]), ("timed out", ["1", "4"])]
    assert out[["query_id", "product_id", "ltr"]].values.tolist() == [["a", "1", 0.0], ["a", "2", 1.0]]


def test_the_cross_encoders_refuse_an_empty_dev_sample(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Before any model is loaded: with no dev query every epoch scored NaN, and the first was kept."""
    train = [Group("q1", "drill", {"p1": 3, "p2": 0})]
    with pytest.raises(InvalidInput, match="distinct grades"):
        train_reranker(RerankerConfig(base_model="unused"), train, [], {}, tmp_path / "reranker", progress=False)
    with pytest.raises(InvalidInput, match="distinct grades"):
        train_student(StudentConfig(teacher="unused"), train, _pool(), [], {}, tmp_path / "student", progress=False)


def test_a_run_killed_while_writing_the_teacher_scores_leaves_no_part(  # type: ignore[no-untyped-def]
        tmp_path, monkeypatch) -> None:
    """Before: the part was written in place, and a kill mid-write left a truncated one that every later run
    took as scored, then failed to read."""
    import io
    from pathlib import Path

    import pyarrow.parquet

    import ranking.cross_encoder
    from ranking.training.student import teacher_pool

    class Teacher:
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            pass

        def score(self, query: str, titles: list[str]) -> np.ndarray:
            return np.arange(len(titles), dtype=np.float32)

    monkeypatch.setattr(ranking.cross_encoder, "CrossEncoderScorer", Teacher)
    groups = [Group("q1", "drill", {"p1": 3, "p2": 0})]
    titles = {"p1": "red drill", "p2": "garden hose"}
    real_write = pyarrow.parquet.write_table

    def killed(table, where, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Pandas writing: the first 200 bytes are out when the process is killed."""
        whole = io.BytesIO()
        real_write(table, whole, *args, **kwargs)
        if isinstance(where, str):  # a file written in place (else a buffer in memory, which dies with the run)
            Path(where).write_bytes(whole.getvalue()[:200])
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(pyarrow.parquet, "write_table", killed)
    with pytest.raises(KeyboardInterrupt):
        teacher_pool(groups, {}, tmp_path / "teacher", titles, tmp_path, progress=False)
    assert list((tmp_path / "pool_parts").glob("*.parquet")) == []
    monkeypatch.setattr(pyarrow.parquet, "write_table", real_write)
    pool = teacher_pool(groups, {}, tmp_path / "teacher", titles, tmp_path, progress=False)
    assert pool["product_id"].tolist() == ["p1", "p2"] and pool["teacher"].tolist() == [0.0, 1.0]


def test_the_teacher_pool_scores_at_the_length_the_teacher_is_served_at(  # type: ignore[no-untyped-def]
        tmp_path, monkeypatch) -> None:
    """Before: the pool's teacher truncated pairs at 48 tokens, the served one at ``ranking.max_length`` (40):
    targets on long titles were scores serving never gives."""
    import ranking.cross_encoder
    from ranking.training.student import teacher_pool

    made: list[dict] = []

    class Teacher:
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            made.append(kwargs)

        def score(self, query: str, titles: list[str]) -> np.ndarray:
            return np.zeros(len(titles), dtype=np.float32)

    monkeypatch.setattr(ranking.cross_encoder, "CrossEncoderScorer", Teacher)
    teacher_pool([Group("q1", "drill", {"p1": 3})], {}, tmp_path / "teacher", {"p1": "drill"}, tmp_path,
                 progress=False, max_length=24)
    assert made == [{"precision": "fp32", "max_length": 24}]
