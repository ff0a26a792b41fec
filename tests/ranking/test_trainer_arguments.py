"""The standalone trainers' command lines (``python -m ranking.training.biencoder|reranker``): counts and rates
are checked as the CLI checks them, before the examples file is read."""

from __future__ import annotations

import pytest

from ranking.training import biencoder, reranker


@pytest.mark.parametrize(("main", "option", "value", "said"), [
    (biencoder.main, "--epochs", "0", "'0' is not a whole number >= 1"),
    (biencoder.main, "--batch-size", "-4", "'-4' is not a whole number >= 1"),  # before: ">= 0", a rule not kept
    (biencoder.main, "--lr", "nan", "'nan' is not a number > 0"),
    (reranker.main, "--epochs", "-1", "'-1' is not a whole number >= 1"),
    (reranker.main, "--batch-groups", "0", "'0' is not a whole number >= 1"),
    (reranker.main, "--lr", "0", "'0' is not a number > 0"),
    (biencoder.main, "--distill", "nan", "'nan' is not a number >= 0"),  # before: accepted
    (biencoder.main, "--distill", "-2", "'-2' is not a number >= 0"),
    (biencoder.main, "--seed", "-1", "'-1' is not a seed: a whole number from 0 to 4294967295"),  # before: a traceback
    (reranker.main, "--seed", str(2**32), "is not a seed"),
], ids=["bi-epochs", "bi-batch", "bi-lr", "rr-epochs", "rr-batch", "rr-lr", "bi-distill-nan", "bi-distill-negative",
        "bi-seed", "rr-seed"])
def test_zero_negative_and_nan_settings_are_refused_by_value(  # type: ignore[no-untyped-def]
        main, option: str, value: str, said: str, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: accepted, and a run of 0 epochs or batches of 0 failed deep in training, or trained nothing."""
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "missing.json.gz"), "--out", str(tmp_path / "out"), option, value])
    assert exit_.value.code == 2 and said in capsys.readouterr().err
