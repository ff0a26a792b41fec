"""The standalone trainers' command lines (``python -m ranking.training.biencoder|reranker``): counts and rates
are checked as the CLI checks them, before the examples file is read."""

from __future__ import annotations

import pytest

from ranking.training import biencoder, reranker


@pytest.mark.parametrize(("main", "option", "value", "said"), [
    (biencoder.main, "--epochs", "0", "'0' is not a whole number >= 1"),
    (biencoder.main, "--batch-size", "-4", "'-4' is not a whole number >= 0"),
    (biencoder.main, "--lr", "nan", "'nan' is not a number > 0"),
    (reranker.main, "--epochs", "-1", "'-1' is not a whole number >= 0"),
    (reranker.main, "--batch-groups", "0", "'0' is not a whole number >= 1"),
    (reranker.main, "--lr", "0", "'0' is not a number > 0"),
], ids=["bi-epochs", "bi-batch", "bi-lr", "rr-epochs", "rr-batch", "rr-lr"])
def test_zero_negative_and_nan_settings_are_refused_by_value(  # type: ignore[no-untyped-def]
        main, option: str, value: str, said: str, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: accepted, and a run of 0 epochs or batches of 0 failed deep in training, or trained nothing."""
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "missing.json.gz"), "--out", str(tmp_path / "out"), option, value])
    assert exit_.value.code == 2 and said in capsys.readouterr().err
