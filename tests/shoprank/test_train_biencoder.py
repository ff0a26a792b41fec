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


def model_folder(folder: Path) -> Path:
    """``folder`` holding the files the encoder loads (not a model that loads: what is checked is their presence)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "modules.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    return folder


def test_a_fold_model_trained_elsewhere_is_registered_never_served(home: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The fold is the one its training recorded (the --hold-out of the export), not this command's --hold-out,
    which registering a folder does not take: before, the first fold model became the served bi-encoder."""
    trained = model_folder(tmp_path / "trained")
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
        folder = model_folder(tmp_path / f"model{held_out.replace('/', '-')}")
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


def test_a_folder_without_the_model_is_neither_registered_nor_served(home: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a folder holding only train_summary.json was registered and activated (the first of its role), and
    `models activate` and `rollback` took such a version; the next `shoprank index` failed with a traceback."""
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "train_summary.json").write_text(json.dumps({"config": {"epochs": 1}, "device": "cuda"}))
    dataset = tmp_path / "dataset"  # not read: the model was trained elsewhere
    code, _, err = run_cli(capsys, "train", "biencoder", "--dataset", str(dataset), "--trained", str(trained))
    assert code == 2 and (f"--trained {trained}: no config.json and modules.json and model.safetensors or "
                          "pytorch_model.bin and tokenizer.json there") in err, err
    registry = ModelRegistry(Settings(home=home).paths.models)
    assert registry.versions("biencoder") == []
    model_folder(trained)
    code, out, err = run_cli(capsys, "train", "biencoder", "--dataset", str(dataset), "--trained", str(trained))
    assert code == 0 and json.loads(out)["registered"]["version"] == "v1", err
    assert registry.active_version("biencoder") == "v1"
    assert (trained / "config.json").is_file() and not list(Settings(home=home).paths.training("x").parent.iterdir())
    empty = tmp_path / "empty"  # registered by hand, or its files lost since: nothing the encoder loads
    empty.mkdir()
    (empty / "train_summary.json").write_text("{}")
    registry.register("biencoder", empty, base_model="minilm")
    code, _, err = run_cli(capsys, "models", "activate", "biencoder", "v2")
    assert code == 2 and "biencoder v2 does not load: no config.json and modules.json" in err, err
    assert "cannot activate it, the active version keeps serving" in err
    assert registry.active_version("biencoder") == "v1"
    registry.activate("biencoder", "v2")  # a registry that served it before it was refused
    registry.activate("biencoder", "v1")
    code, _, err = run_cli(capsys, "models", "rollback", "biencoder")
    assert code == 2 and "biencoder v2 does not load" in err and "cannot roll back to it" in err
    assert registry.active_version("biencoder") == "v1"
