"""Cross-encoder scoring: (query, product text) -> relevance score.

A model folder (registered in :mod:`core.registry`) holds the Hugging Face
weights (``config.json``, ``model.safetensors``, tokenizer) and, after
:func:`export`, ``onnx/model.onnx`` (fp32) and ``onnx/model.int8.onnx``
(dynamic int8 quantisation). :class:`CrossEncoderScorer` runs either on ONNX
Runtime with the fast tokenizer; :class:`TorchCrossEncoder` is the reference.

Latency is mostly tokens: pairs are truncated to ``max_length`` tokens and
scored in batches of similar length (sorted by token count), so short titles
are not padded to the longest one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.errors import InvalidInput, NotFound
from core.onnx_sessions import BF16_WIDTH_STEP, cpu_session, padded_width

logger = logging.getLogger(__name__)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PRECISIONS = {"fp32": "model.onnx", "int8": "model.int8.onnx", "bf16": "model.onnx"}  # bf16: the fp32 file, computed in bf16


class StageTimeout(TimeoutError):
    """A stage ran out of its time budget (its result is not used)."""


class StageShed(RuntimeError):
    """A model stage refused at once: its work would wait too long behind the model's backlog."""


def export(model_dir: Path, quantize: bool = True) -> dict[str, Path]:
    """Export the model in ``model_dir`` to ONNX (and int8); returns the files."""
    import torch

    from ranking.cross_encoder_net import PairScorer

    out = model_dir / "onnx"
    out.mkdir(exist_ok=True)
    model = PairScorer.load(model_dir).eval()
    dummy = torch.ones((2, 16), dtype=torch.long)
    fp32 = out / PRECISIONS["fp32"]
    with torch.no_grad():
        torch.onnx.export(
            model, (dummy, dummy, torch.zeros_like(dummy)), str(fp32),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["score"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids")}
            | {"score": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    files = {"fp32": fp32}
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8 = out / PRECISIONS["int8"]
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
        files["int8"] = int8
    logger.info("exported %s to %s", model_dir, out)
    return files


class _PairTokenizer:
    def __init__(self, model_dir: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        file = model_dir / "tokenizer.json"
        if not file.is_file():
            raise NotFound(f"{model_dir} has no tokenizer.json; save the tokenizer with the model")
        self.tokenizer = Tokenizer.from_file(str(file))
        self.tokenizer.enable_truncation(max_length, strategy="longest_first")
        self.tokenizer.no_padding()

    def encode(self, queries: Sequence[str], texts: Sequence[str]) -> list:
        return self.tokenizer.encode_batch(list(zip(queries, texts)))


def _batches(encodings: list, batch_size: int, width_step: int = 1) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Batches of similar length, padded to their own longest pair (rounded up to a multiple of
    ``width_step``)."""
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")
    out = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = padded_width(max(len(encodings[i].ids) for i in rows), width_step)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for r, i in enumerate(rows):
            e = encodings[i]
            n = len(e.ids)
            ids[r, :n], types[r, :n], mask[r, :n] = e.ids, e.type_ids, 1
        out.append((rows, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}))
    return out


class CrossEncoderScorer:
    """A cross-encoder on ONNX Runtime (``precision`` fp32, int8, or bf16 on the OpenVINO
    execution provider: :mod:`core.onnx_sessions`).

    Args:
        model_dir: A model folder with ``onnx/`` exported (see :func:`export`).
        max_length: Pair length cap in tokens (query + title + 3 special tokens).
        batch_size: Pairs per ONNX run; measured best on 2 cores in benchmarks.
        threads: ONNX Runtime intra-op threads (0 = one per core).
    """

    def __init__(self, model_dir: Path, precision: str = "int8", max_length: int = 48,
                 batch_size: int = 32, threads: int = 0) -> None:
        if precision not in PRECISIONS:
            raise InvalidInput(f"cross-encoder precision {precision!r} is not one of {list(PRECISIONS)}")
        path = model_dir / "onnx" / PRECISIONS[precision]
        if not path.is_file():
            export(model_dir, quantize=precision == "int8")
        self.session = cpu_session(path, threads, bf16=precision == "bf16")
        # OpenVINO keeps what it prepared for each input shape it has run (~2 MB each): pairs padded
        # to a multiple of 8 tokens bound the shapes to batch sizes x max_length / 8 widths, instead
        # of growing with every new (batch, length) a search brings.
        self.width_step = BF16_WIDTH_STEP if precision == "bf16" else 1
        self.tokenizer = _PairTokenizer(model_dir, max_length)
        self.model_dir = model_dir
        self.precision = precision
        self.max_length = max_length
        self.batch_size = batch_size

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str], deadline: float | None = None) -> np.ndarray:
        """Score of each (queries[i], texts[i]) pair.

        Args:
            deadline: ``time.monotonic()`` value by which to finish; past it the
                running ONNX call is cancelled (``RunOptions.terminate``) and
                :class:`StageTimeout` raised.
        """
        import onnxruntime as ort

        scores = np.zeros(len(texts), dtype=np.float32)
        if not len(texts):
            return scores
        options = ort.RunOptions()
        timer = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StageTimeout("no time left before the deadline")
            timer = threading.Timer(remaining, lambda: setattr(options, "terminate", True))
            timer.daemon = True
            timer.start()
        try:
            for rows, feeds in _batches(self.tokenizer.encode(queries, texts), self.batch_size, self.width_step):
                if options.terminate:
                    raise StageTimeout("deadline passed between batches")
                try:
                    scores[rows] = self.session.run(None, feeds, options)[0].reshape(-1)
                except Exception as err:
                    if options.terminate:
                        raise StageTimeout("cancelled at the deadline") from err
                    raise
        finally:
            if timer is not None:
                timer.cancel()
        return scores

    def score(self, query: str, texts: Sequence[str], deadline: float | None = None) -> np.ndarray:
        """Score of each text for one query."""
        return self.score_pairs([query] * len(texts), texts, deadline)


class TorchCrossEncoder:
    """The same model on torch (fp32): training-time evaluation and parity checks."""

    def __init__(self, model_dir: Path, max_length: int = 48, batch_size: int = 64) -> None:
        import torch

        from ranking.cross_encoder_net import PairScorer

        self.torch = torch
        self.model = PairScorer.load(model_dir).eval()
        self.tokenizer = _PairTokenizer(model_dir, max_length)
        self.batch_size = batch_size

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        scores = np.zeros(len(texts), dtype=np.float32)
        with self.torch.inference_mode():
            for rows, feeds in _batches(self.tokenizer.encode(queries, texts), self.batch_size):
                tensors = {k: self.torch.from_numpy(v) for k, v in feeds.items()}
                scores[rows] = self.model(**tensors).float().numpy()
        return scores

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        return self.score_pairs([query] * len(texts), texts)
