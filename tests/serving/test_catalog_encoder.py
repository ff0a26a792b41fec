"""The bi-encoder that encodes a catalog for an index build: the served model itself, or the same
model in bf16 (retrieval.catalog_precision), whose vectors must match fp32's."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.settings import Settings
from retrieval.encoder import (
    BUNDLED,
    Encoder,
    OnnxEncoder,
    resolve_catalog_precision,
    resolve_model_dir,
)
from serving.indexing import catalog_encoder
from tests.helpers import needs_bf16_path

TITLES = ["cordless drill 20v max lithium ion", "interior paint eggshell white 1 gal.", "garden hose",
          "1/2 in. x 10 ft. copper pipe type l", "led flush mount ceiling light fixture in brushed nickel"]


def with_precision(settings: Settings, precision: str) -> Settings:
    return settings.model_copy(update={"retrieval": settings.retrieval.model_copy(
        update={"catalog_precision": precision})})


def test_auto_is_bf16_where_the_cross_encoders_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("core.hardware.cpu", lambda: SimpleNamespace(onnx_bf16=True))  # AMX + OpenVINO
    assert resolve_catalog_precision("auto") == "bf16"
    monkeypatch.setattr("core.hardware.cpu", lambda: SimpleNamespace(onnx_bf16=False))
    assert resolve_catalog_precision("auto") == "fp32"
    assert resolve_catalog_precision("bf16") == "bf16" and resolve_catalog_precision("fp32") == "fp32"


@needs_bf16_path
def test_the_bf16_catalog_encoder_gives_fp32_vectors_and_queries_stay_on_fp32(settings: Settings) -> None:
    served = OnnxEncoder(resolve_model_dir(BUNDLED), settings.paths.cache, threads=1)
    assert catalog_encoder(with_precision(settings, "fp32"), served) is served
    catalog = catalog_encoder(with_precision(settings, "bf16"), served)
    assert isinstance(catalog, OnnxEncoder) and catalog.bf16 and not served.bf16
    assert (catalog.name, catalog.fingerprint, catalog.dim) == (served.name, served.fingerprint, served.dim)
    reference, vectors = served.encode(TITLES), catalog.encode(TITLES)
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    cosine = (vectors * reference).sum(axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.999, f"bf16 catalog vectors drift from fp32's: cosine {cosine.min():.5f}"
    widths = {len(e.ids) for e in catalog.tokenizer.encode_batch(TITLES)}
    assert len(widths) == 1 and widths.pop() % 8 == 0  # padded to 8-token steps: few shapes for OpenVINO
    assert catalog_encoder(with_precision(settings, "bf16"), catalog) is catalog


@needs_bf16_path
def test_a_build_from_a_warm_embedding_cache_opens_no_catalog_session(
        settings: Settings, demo_products: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving import indexing

    served = OnnxEncoder(resolve_model_dir(BUNDLED), settings.paths.cache, threads=1)
    made: list[Encoder] = []

    def counted(settings: Settings, encoder: Encoder) -> Encoder:
        made.append(catalog_encoder(settings, encoder))
        return made[-1]

    monkeypatch.setattr(indexing, "catalog_encoder", counted)
    fresh = uuid.uuid4().hex  # texts no other test has put in the session's embedding cache
    products = demo_products.head(12).assign(title=lambda frame: frame["title"] + f" {fresh}")
    first = indexing.build_index(with_precision(settings, "bf16"), products, tmp_path / "first", served)
    assert len(made) == 1 and made[0].bf16  # cold: the bf16 session encoded the catalog
    again = indexing.build_index(with_precision(settings, "bf16"), products, tmp_path / "again", served)
    assert len(made) == 1  # warm: every vector came from the cache, no second session was opened
    assert (again.manifest.encoder_fingerprint, again.manifest.count) == (first.manifest.encoder_fingerprint, 12)
