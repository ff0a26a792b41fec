"""What the ``shoprank train`` commands share: the dev sample the cross-encoders select on, and a model trained
elsewhere (``--trained``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import InvalidInput
from core.registry import ModelRegistry
from core.settings import Settings
from shoprank.commands.training import dev_sample
from tests.helpers import run_cli


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


def test_a_reranker_trained_elsewhere_leaves_a_local_runs_checkpoint(cli_home: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `train reranker --trained FOLDER` replaced <home>/training/reranker-run, where a local run of the
    default --run-name resumes from its checkpoint, with its copy of FOLDER."""
    import ranking.cross_encoder

    monkeypatch.setattr(ranking.cross_encoder, "export", lambda folder: {})  # the files are no model
    training = Settings(home=cli_home).paths.training("reranker-run")
    (training / "checkpoint").mkdir(parents=True)
    (training / "checkpoint" / "state.pt").write_text("epoch 1 of 3")
    trained = tmp_path / "trained"
    (trained / "best").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "score_head.pt", "tokenizer.json"):
        (trained / "best" / name).write_text("{}")
    (trained / "train_summary.json").write_text(json.dumps({"best": {"ndcg@10": 0.5}, "seconds": 1.0,
                                                            "dev_groups": 2, "history": []}))
    code, out, err = run_cli(capsys, "train", "reranker", "--dataset", str(tmp_path / "dataset"),
                             "--trained", str(trained))
    assert code == 0, err
    assert json.loads(out)["registered"]["version"] == "v1"
    assert (training / "checkpoint" / "state.pt").read_text() == "epoch 1 of 3"
    assert sorted(p.name for p in training.parent.iterdir()) == ["reranker-run"]  # this run's copy removed
    registered = ModelRegistry(Settings(home=cli_home).paths.models).get("reranker", "v1").path
    assert registered is not None and (registered / "score_head.pt").is_file()
