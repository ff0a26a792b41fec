"""What the ``shoprank train`` commands share: the dev sample the cross-encoders select on."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from shoprank.commands.training import dev_sample


class Judged:
    """A dataset's queries and grades (what :func:`dev_sample` reads of an EvalDataset)."""

    def __init__(self, qrels: dict[str, dict[str, int]]) -> None:
        self.qrels = qrels

    def select(self, split: str) -> list[tuple[str, str]]:
        return [(qid, f"query {qid}") for qid in self.qrels]


def test_the_dev_sample_holds_queries_with_two_grades() -> None:
    dataset = Judged({"d1": {"a": 2, "b": 0}, "d2": {"c": 1, "d": 1}, "d3": {"e": 2}})
    assert [g.qid for g in dev_sample(dataset, "dev", 400)] == ["d1"]  # type: ignore[arg-type]


def test_a_dev_split_without_such_a_query_is_refused_by_name() -> None:
    """A dataset that judges only relevant products: before, an empty sample, NaN metrics and the first epoch kept."""
    dataset = Judged({"d1": {"a": 1, "b": 1}, "d2": {"c": 1, "d": 1, "e": 1}})
    with pytest.raises(InvalidInput, match="dev split 'dev' .* >= 2 distinct grades"):
        dev_sample(dataset, "dev", 400)  # type: ignore[arg-type]
