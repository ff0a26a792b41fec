"""``shoprank train biencoder --trained``: which models trained elsewhere may be served."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.registry import ModelRegistry
from core.settings import Settings
from tests.helpers import run_cli


@pytest.fixture()
def home(cli_home: Path) -> Path:
    return cli_home


def test_a_fold_model_trained_elsewhere_is_registered_never_served(home: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The fold is the one its training recorded (the --hold-out of the export), not this command's --hold-out,
    which registering a folder does not take: before, the first fold model became the served bi-encoder."""
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "train_summary.json").write_text(json.dumps({
        "steps": 1, "device": "cuda", "data_hash": "x", "config": {"base_model": "/gpu/minilm", "held_out": "0/2"}}))
    dataset = tmp_path / "dataset"  # not read: the model was trained elsewhere
    code, out, err = run_cli(capsys, "train", "biencoder", "--dataset", str(dataset), "--trained", str(trained))
    assert code == 0, err
    assert json.loads(out)["registered"]["params"]["held_out"] == "0/2"
    registry = ModelRegistry(Settings(home=home).paths.models)
    assert registry.active("biencoder") is None
    code, _, err = run_cli(capsys, "train", "biencoder", "--dataset", str(dataset), "--trained", str(trained),
                           "--activate")
    assert code == 2 and "trained without fold 0/2" in err
    assert [v.version for v in registry.versions("biencoder")] == ["v1"]  # refused before registering


def test_models_activate_and_rollback_refuse_a_fold_model(home: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `shoprank models activate biencoder vN` and `rollback` made a fold model the served bi-encoder."""
    registry = ModelRegistry(Settings(home=home).paths.models)
    for held_out in ("0/2", ""):  # v1: trained without fold 0 of 2; v2: on every query
        folder = tmp_path / f"model{held_out.replace('/', '-')}"
        folder.mkdir()
        (folder / "weights.bin").write_text("w")
        registry.register("biencoder", folder, base_model="minilm", params={"held_out": held_out} if held_out else {})
    code, _, err = run_cli(capsys, "models", "activate", "biencoder", "v1")
    assert code == 2 and "activate biencoder v1, a model trained without fold 0/2" in err
    assert registry.active("biencoder") is None
    code, out, err = run_cli(capsys, "models", "activate", "biencoder", "v2")
    assert code == 0 and json.loads(out)["active"] == "v2", err
    registry.activate("biencoder", "v1")  # a registry that served the fold model before it was refused
    registry.activate("biencoder", "v2")
    code, _, err = run_cli(capsys, "models", "rollback", "biencoder")
    assert code == 2 and "roll back to biencoder v1, a model trained without fold 0/2" in err
    assert registry.active_version("biencoder") == "v2"
