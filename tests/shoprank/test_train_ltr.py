"""``shoprank train ltr --save-data`` / ``--from-data``: the rows written are the rows read, and what is not
what ``--save-data`` writes is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import InvalidInput
from ranking.lambdamart import RankingData
from shoprank.commands.train_ltr import _load_data, _save_data


def rows() -> RankingData:
    return RankingData(np.array([[0.5], [0.1]], np.float32), np.array([1, 0]), [2], ["bm25"], ["q1"], ["P1", "P2"])


def test_saved_rows_are_read_back(tmp_path: Path) -> None:
    meta = {"depth": 30, "parent": None, "training_data": "abc", "dataset": "d"}
    _save_data(tmp_path / "rows", {"train": rows(), "dev": rows()}, meta)
    parts, read = _load_data(tmp_path / "rows")
    assert read == meta and parts["train"].groups == [2] and parts["dev"].product_ids == ["P1", "P2"]
    assert sorted(p.name for p in (tmp_path / "rows").iterdir()) == ["dev.npz", "lists.json", "train.npz"]


@pytest.mark.parametrize("lists", [{}, [], {"depth": 30}, "rows"])
def test_a_lists_file_without_what_training_reads_is_refused(tmp_path: Path, lists: object) -> None:
    """Before: {} passed, and training failed with a KeyError (a list: AttributeError) after the rows were read."""
    _save_data(tmp_path, {"train": rows(), "dev": rows()}, {"depth": 30, "parent": None, "training_data": "abc"})
    (tmp_path / "lists.json").write_text(json.dumps(lists))
    with pytest.raises(InvalidInput, match=r"not what `shoprank train ltr --save-data` writes \(lists.json is not a "
                                           r"JSON object with depth, parent, training_data\)"):
        _load_data(tmp_path)
