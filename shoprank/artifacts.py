"""Where artifacts live and how they are (re)built: encoders, caches, indexes.

Everything the project builds goes under ``settings.home`` (git-ignored,
``artifacts/`` by default): ``indexes/<name>/``, ``cache/embeddings/``,
``cache/onnx/``, ``demo/``. Builders are idempotent: an index whose manifest
matches the catalog hash and encoder is loaded, never rebuilt.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from retrieval.catalog import catalog_hash, read_catalog
from retrieval.embedding_cache import EmbeddingCache
from retrieval.encoder import BUNDLED, Encoder, load_encoder, resolve_model_dir
from retrieval.index import Manifest, ProductIndex
from shoprank.demo import write_demo
from shoprank.registry import ModelRegistry
from shoprank.settings import Settings

logger = logging.getLogger(__name__)


def encoder_source(settings: Settings) -> tuple[Path, str]:
    """Folder and label of the configured bi-encoder.

    ``settings.encoder``: ``active`` (the registry's active ``biencoder``, else the
    bundled MiniLM), ``minilm`` (bundled), ``biencoder:vN`` (a registered
    version) or a model folder.
    """
    spec = settings.encoder
    registry = ModelRegistry(settings.models_dir)
    if spec == "active":
        entry = registry.active("biencoder")
        spec = f"biencoder:{entry.version}" if entry else BUNDLED
    if spec.startswith("biencoder:"):
        entry = registry.get("biencoder", spec.split(":", 1)[1])
        assert entry.path is not None
        return entry.path, spec
    if spec == BUNDLED:
        return resolve_model_dir(BUNDLED), BUNDLED
    return resolve_model_dir(spec), Path(spec).name


def open_encoder(settings: Settings, backend: str | None = None) -> Encoder:
    model_dir, label = encoder_source(settings)
    return load_encoder(model_dir, backend or settings.retrieval.query_encoder, settings.cache_dir, label)


def embedding_cache(settings: Settings, encoder: Encoder) -> EmbeddingCache:
    return EmbeddingCache(settings.cache_dir / "embeddings" / f"{encoder.fingerprint}.sqlite", encoder.dim)


def demo_catalog(settings: Settings) -> Path:
    """The demo store's catalog file, generated on first use."""
    folder = settings.home / "demo"
    if not (folder / "products.csv").is_file():
        logger.info("generating the synthetic demo store in %s", folder)
        write_demo(folder)
    return folder / "products.csv"


def index_path(settings: Settings, encoder: Encoder, name: str | None = None) -> Path:
    """``indexes/<name>/<encoder fingerprint>``: one index per encoder version, so
    re-indexing with a new bi-encoder leaves the old index usable."""
    return settings.indexes_dir / (name or settings.index_name) / encoder.fingerprint


def build_index(settings: Settings, products: pd.DataFrame, path: Path, encoder: Encoder) -> ProductIndex:
    cache = embedding_cache(settings, encoder)
    try:
        return ProductIndex.build(path, products, encoder, settings.retrieval, cache, progress=settings.progress)
    finally:
        cache.close()


def ensure_index(settings: Settings, products: pd.DataFrame, path: Path, encoder: Encoder) -> ProductIndex:
    """Load the index at ``path`` if it holds exactly ``products`` with ``encoder``; else build it."""
    if (path / "manifest.json").is_file():
        manifest = Manifest.read(path)
        if manifest.encoder_fingerprint == encoder.fingerprint and manifest.catalog_hash == catalog_hash(products):
            return ProductIndex.load(path, settings.retrieval)
        logger.info("index %s is stale (catalog or encoder changed); rebuilding", path)
    return build_index(settings, products, path, encoder)


def ensure_served_index(settings: Settings, encoder: Encoder) -> ProductIndex:
    """The index ``shoprank serve`` uses: the configured catalog, else the demo store.

    An existing index is served as is (upserts and deletes included); it is only
    built when missing, from ``settings.catalog`` or the generated demo catalog.
    """
    path = index_path(settings, encoder)
    if (path / "manifest.json").is_file():
        return ProductIndex.load(path, settings.retrieval)
    catalog = settings.catalog or demo_catalog(settings)
    products, _ = read_catalog(catalog)
    return build_index(settings, products, path, encoder)


def eval_index_path(settings: Settings, products: pd.DataFrame, encoder: Encoder) -> Path:
    """Index folder for an evaluation dataset, keyed by catalog hash and encoder."""
    return settings.indexes_dir / f"eval-{catalog_hash(products)[:16]}" / encoder.fingerprint
