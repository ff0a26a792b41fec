"""The bought- and viewed-together table a server reads: again when the file changes, or after a failed read."""

from __future__ import annotations

from pathlib import Path

import pytest

import serving.recommendations as recommendations
from online_learning.cooccurrence import Neighbour, write_together
from serving.recommendations import together_table


def test_a_read_that_failed_is_tried_again_and_a_damaged_file_is_not(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "together.json"
    write_together(path, {"bought": {"a": [Neighbour("b", 0.5, 3)]}, "viewed": {}})
    real, calls = recommendations.read_together, []

    def flaky(where: Path):  # type: ignore[no-untyped-def]
        calls.append(where)
        if len(calls) == 1:
            raise OSError(24, "Too many open files")
        return real(where)

    monkeypatch.setattr(recommendations, "read_together", flaky)
    assert together_table(path)["bought"] == {}  # the shelves fill from similar and popular products
    assert [n.product_id for n in together_table(path)["bought"]["a"]] == ["b"]  # read again: it passes now
    path.write_text('{"neighbours": {"bought": {"a": [["b", 0.5, 1e400]]}}}')  # damaged: kept until it changes
    assert together_table(path)["bought"] == {} and together_table(path)["bought"] == {}
    assert len(calls) == 3
