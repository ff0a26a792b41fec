"""The ONNX query encoder reproduces sentence-transformers for models other than the bundled MiniLM:
their own pooling (cls, max) and transformers without token types (MPNet). Tiny random models, made here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import InvalidInput
from retrieval.encoder import (
    OnnxEncoder,
    TorchEncoder,
    model_fingerprint,
    pooling_of,
    resolve_model_dir,
)

TEXTS = ["cordless drill 18 volt", "1/2 in copper pipe", "led flood light", "a"]


def tiny_model(folder: Path, kind: str, pooling: str, extra_modules: tuple[dict, ...] = ()) -> Path:
    """A random two-layer ``kind`` (bert or mpnet) sentence-transformers folder with ``pooling``, the bundled
    MiniLM's tokenizer (its vocabulary size)."""
    import torch
    from transformers import BertConfig, BertModel, MPNetConfig, MPNetModel

    torch.manual_seed(0)
    sizes = {"vocab_size": 30527, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 520}
    model = BertModel(BertConfig(**sizes)) if kind == "bert" else MPNetModel(MPNetConfig(**sizes))
    model.save_pretrained(folder)
    bundled = resolve_model_dir("minilm")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (bundled / name).is_file():
            shutil.copy(bundled / name, folder / name)
    (folder / "1_Pooling").mkdir()
    modes = {f"pooling_mode_{m}": m.split("_")[0] == pooling for m in ("cls_token", "mean_tokens", "max_tokens")}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **modes}))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               *extra_modules]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    return folder


@pytest.mark.parametrize(("kind", "pooling"), [("bert", "cls"), ("bert", "max"), ("mpnet", "mean")])
def test_onnx_encoder_matches_sentence_transformers(tmp_path: Path, kind: str, pooling: str) -> None:
    folder = tiny_model(tmp_path / "model", kind, pooling)
    assert pooling_of(folder) == pooling
    # indexes and cached vectors are keyed by it: a CLS model's are not those made mean-pooled before
    assert model_fingerprint(folder).endswith("" if pooling == "mean" else f"-{pooling}")
    onnx = OnnxEncoder(folder, tmp_path / "cache").encode(TEXTS)
    torch = TorchEncoder(folder).encode(TEXTS)
    # before: every model was mean-pooled, and an MPNet one failed on the token types it has no input for
    np.testing.assert_allclose(onnx, torch, atol=1e-4)


def test_a_model_the_graph_cannot_reproduce_is_refused_by_name(tmp_path: Path) -> None:
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    folder = tiny_model(tmp_path / "model", "bert", "mean", (dense,))
    with pytest.raises(InvalidInput, match=r"\['Dense'\] are not supported"):
        OnnxEncoder(folder, tmp_path / "cache")
    assert "-" not in model_fingerprint(folder)  # sentence-transformers still runs it: its vectors keyed as before
    config = folder / "1_Pooling" / "config.json"
    config.write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}))
    (folder / "modules.json").write_text(json.dumps(json.loads((folder / "modules.json").read_text())[:2]))
    with pytest.raises(InvalidInput, match=r"pooling \['cls', 'mean'\]"):
        pooling_of(folder)
    config.write_text(json.dumps({"pooling_mode": "lasttoken"}))
    with pytest.raises(InvalidInput, match=r"pooling \['lasttoken'\]"):
        pooling_of(folder)


def test_pooling_as_sentence_transformers_5_writes_it(tmp_path: Path) -> None:
    folder = tiny_model(tmp_path / "model", "bert", "cls")
    config = folder / "1_Pooling" / "config.json"
    for written, read in (("cls", "cls"), (["max"], "max"), ("mean_sqrt_len_tokens", "mean")):
        config.write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": written, "include_prompt": True}))
        assert pooling_of(folder) == read
    config.write_text(json.dumps({"pooling_mode_mean_tokens": False}))  # no flag set: mean, as sentence-transformers
    assert pooling_of(folder) == "mean"
