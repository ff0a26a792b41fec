from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InvalidInput, NotFound
from core.registry import ModelRegistry


def model_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "weights.bin").write_text(name)
    return folder


def test_register_activate_rollback(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    first = registry.register("reranker", model_folder(tmp_path, "a"), base_model="minilm", training_data="h1",
                              params={"layers": 6}, metrics={"ndcg@10": 0.93})
    assert first.version == "v1" and registry.active("reranker") is None
    second = registry.register("reranker", model_folder(tmp_path, "b"), base_model="minilm", parent="v1",
                               activate=True)
    assert second.version == "v2" and registry.active("reranker").version == "v2"  # type: ignore[union-attr]
    registry.activate("reranker", "v1")
    assert registry.active("reranker").version == "v1"  # type: ignore[union-attr]
    assert registry.rollback("reranker").version == "v2"
    assert [v.version for v in registry.versions("reranker")] == ["v1", "v2"]
    loaded = registry.get("reranker", "v1")
    assert loaded.params == {"layers": 6} and loaded.metrics == {"ndcg@10": 0.93} and loaded.training_data == "h1"
    assert (loaded.path / "weights.bin").read_text() == "a"  # type: ignore[operator]
    assert registry.get("reranker", "v2").parent == "v1"


def test_errors_name_what_exists(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(InvalidInput, match="model role 'ranker' is not one of"):
        registry.versions("ranker")
    with pytest.raises(NotFound, match=r"reranker version 'v9' is not registered; registered: none"):
        registry.get("reranker", "v9")
    registry.register("ltr", model_folder(tmp_path, "m"), base_model="lightgbm", activate=True)
    with pytest.raises(InvalidInput, match="no earlier active version"):
        registry.rollback("ltr")
