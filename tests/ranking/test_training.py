"""Fast training tests on the generated demo store (loose bars), and ONNX parity.

A 2-layer cross-encoder from the bundled MiniLM weights is trained for one short
epoch; it must beat its own untrained start on the dev queries, and its ONNX
exports must agree with torch: fp32 to 1e-4, int8 and bf16 in ranking (Kendall tau).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from evaluation.dataset import load_dataset
from ranking.cross_encoder import CrossEncoderScorer, TorchCrossEncoder, export
from ranking.training.data import groups_from
from ranking.training.reranker import (
    RerankerConfig,
    _batch_loss,
    _Batcher,
    evaluate_groups,
    load_model,
    train_reranker,
)
from retrieval.encoder import resolve_model_dir
from tests.helpers import needs_bf16_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    dataset = load_dataset(demo_dir)
    train = groups_from(dataset, "train", 1)
    dev = [g for g in groups_from(dataset, "dev", 2) if len(set(g.judged.values())) > 1]
    titles = dict(zip(dataset.products["product_id"], dataset.products["title"]))
    config = RerankerConfig(base_model=str(resolve_model_dir("minilm")), layers=2, epochs=2, lr=1e-4,
                            batch_groups=4, negatives=0, max_grade=dataset.max_grade)
    out = tmp_path_factory.mktemp("reranker")
    summary = train_reranker(config, train, dev, titles, out, progress=False)
    return out, summary, dev, titles, config


def test_training_beats_the_untrained_start(trained) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    out, summary, dev, titles, config = trained
    untrained = load_model(config.base_model, config.layers)
    batcher = _Batcher(AutoTokenizer.from_pretrained(config.base_model), titles, config.max_length)
    before = evaluate_groups(untrained, batcher, dev, config.max_grade)
    after = summary["best"]
    assert after["ndcg@10"] >= before["ndcg@10"] + 0.02, (before, after)
    assert after["mrr@10"] > before["mrr@10"], (before, after)
    assert (out / "best" / "config.json").is_file() and (out / "train_summary.json").is_file()


def test_training_resumes_from_its_checkpoint(trained, demo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    out, summary, dev, titles, config = trained
    dataset = load_dataset(demo_dir)
    again = train_reranker(config, groups_from(dataset, "train", 1), dev, titles, out, progress=False)
    assert again["history"] == summary["history"]  # every epoch was done: nothing re-trained


def test_a_bf16_step_computes_the_fp32_loss_in_float32(trained, demo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """The forward pass under bf16 autocast: the loss stays float32, near fp32's, and gradients flow."""
    import torch
    from transformers import AutoTokenizer

    out, summary, dev, titles, config = trained
    model = load_model(config.base_model, config.layers)
    batcher = _Batcher(AutoTokenizer.from_pretrained(config.base_model), titles, config.max_length)
    batch = groups_from(load_dataset(demo_dir), "train", 1)[:4]
    losses = {p: _batch_loss(model, batcher, batch, 4, config, p) for p in ("fp32", "bf16")}
    assert losses["bf16"].dtype == torch.float32
    assert abs(losses["bf16"].item() - losses["fp32"].item()) < 0.05 * abs(losses["fp32"].item()), losses
    losses["bf16"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) and g.dtype == torch.float32 for g in grads)


def exported_against_torch(trained):  # type: ignore[no-untyped-def]
    """The trained model exported to ONNX, the dev pairs, and torch's scores of them (the reference)."""
    out, _, dev, titles, _ = trained
    model_dir = out / "best"
    export(model_dir)
    queries = [g.query for g in dev for _ in g.judged]
    texts = [titles[p] for g in dev for p in g.judged]
    return model_dir, queries, texts, TorchCrossEncoder(model_dir, max_length=40).score_pairs(queries, texts)


def test_onnx_exports_match_torch(trained) -> None:  # type: ignore[no-untyped-def]
    model_dir, queries, texts, reference = exported_against_torch(trained)
    fp32 = CrossEncoderScorer(model_dir, "fp32", max_length=40).score_pairs(queries, texts)
    int8 = CrossEncoderScorer(model_dir, "int8", max_length=40).score_pairs(queries, texts)
    assert np.abs(fp32 - reference).max() < 1e-4
    tau = kendalltau(int8, reference).statistic
    assert tau > 0.9, f"int8 ranking agreement too low: tau={tau:.3f}"
    assert np.abs(int8 - reference).max() < 0.5


@needs_bf16_path
def test_the_bf16_path_ranks_like_torch(trained) -> None:  # type: ignore[no-untyped-def]
    """bf16 on the OpenVINO execution provider (computed in fp32 where the CPU has no bf16 instructions)."""
    model_dir, queries, texts, reference = exported_against_torch(trained)
    bf16 = CrossEncoderScorer(model_dir, "bf16", max_length=40, threads=1).score_pairs(queries, texts)
    assert np.abs(bf16 - reference).max() < 0.1
    tau = kendalltau(bf16, reference).statistic
    assert tau > 0.95, f"bf16 ranking agreement too low: tau={tau:.3f}"
