"""Opening the bi-encoder and the product index the first stage searches.

:func:`open_encoder` opens the configured bi-encoder (the registry's active one,
the bundled MiniLM, a registered version or a folder); :func:`open_index` loads
the served index, or an evaluation catalog's, building it when missing.
Builders are idempotent: an index whose manifest matches the catalog hash, the
encoder and the query analyzer is loaded, never rebuilt (an evaluation catalog's
folder is keyed by all its columns, so one of other attributes is another
folder); one process builds a folder at a time (server processes and jobs share
the home). Paths come from :class:`core.paths.Home`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from core import errors
from core.errors import NotReady, ShopRankError
from core.registry import ModelRegistry
from core.settings import RetrievalSettings, Settings, get_settings
from retrieval.catalog import catalog_hash, check_catalog_file, products_hash, read_catalog
from retrieval.embedding_cache import EmbeddingCache, JoinedCache, VectorCache
from retrieval.encoder import (
    BUNDLED,
    Encoder,
    EnsembleEncoder,
    OnnxEncoder,
    load_encoder,
    parts_of,
    resolve_catalog_precision,
    resolve_model_dir,
)
from retrieval.index import Manifest, ProductIndex, write_lock
from retrieval.vocabulary import VERSION as ANALYZER_VERSION
from simulation.demo import write_demo

logger = logging.getLogger(__name__)


def encoder_source(settings: Settings, spec: str | None = None) -> tuple[Path, str]:
    """Folder and label of a bi-encoder: ``spec`` (default ``settings.encoder``).

    ``active`` (the registry's active ``biencoder``, else the bundled MiniLM), ``minilm``
    (bundled), ``biencoder:vN`` (a registered version) or a model folder.
    """
    spec = settings.encoder if spec is None else spec
    registry = ModelRegistry(settings.paths.models)
    if spec == "active":
        entry = registry.active("biencoder")
        spec = f"biencoder:{entry.version}" if entry else BUNDLED
    if spec.startswith("biencoder:"):
        entry = registry.get("biencoder", spec.split(":", 1)[1])
        assert entry.path is not None  # registry entries always carry their folder
        return entry.path, spec
    if spec == BUNDLED:
        return resolve_model_dir(BUNDLED), BUNDLED
    return resolve_model_dir(spec), Path(spec).name


def _joined(settings: Settings, load: Callable[[Path, str], Encoder]) -> Encoder:
    """The configured bi-encoder, ``load(folder, label)`` opening each model: ``settings.encoder``, joined
    with ``retrieval.second_encoder`` when one is set (:class:`~retrieval.encoder.EnsembleEncoder`). Both
    models are found before either is loaded: a second one that is not there is refused at once."""
    first_source = encoder_source(settings)
    second_spec = settings.retrieval.second_encoder
    if second_spec is None:
        return load(*first_source)
    try:
        second_source = encoder_source(settings, second_spec)
    except (errors.InvalidInput, errors.NotFound) as error:
        raise type(error)(f"retrieval.second_encoder {second_spec!r}: {error.message}") from error
    first = load(*first_source)
    try:
        second = load(*second_source)
    except (errors.InvalidInput, errors.NotFound) as error:
        raise type(error)(f"retrieval.second_encoder {second_spec!r}: {error.message}") from error
    if second.fingerprint == first.fingerprint:
        raise errors.InvalidInput(f"retrieval.second_encoder {second_spec!r} is the same model as encoder "
                                  f"{settings.encoder!r} ({first.fingerprint}); name another model, or unset it")
    return EnsembleEncoder(first, second, settings.retrieval.second_encoder_weight)


def open_encoder(settings: Settings, backend: str | None = None, threads: int = 0) -> Encoder:
    return _joined(settings, lambda model_dir, label: load_encoder(
        model_dir, backend or settings.retrieval.query_encoder, settings.paths.cache, label, threads))


def server_threads(settings: Settings) -> int:
    """ONNX Runtime threads of each model in one server process: the cores are divided
    among the processes, so that they do not oversubscribe the CPU."""
    return settings.ranking.threads_per_process(settings.api.processes())


_served_encoders: dict[tuple[str, str, str], Encoder] = {}
_served_encoders_lock = threading.Lock()


def served_encoder(settings: Settings) -> Encoder:
    """The query encoder of a server: one per model in the process, shared by the stores that use it."""
    def open_model(model_dir: Path, label: str) -> Encoder:
        key = (str(model_dir), settings.retrieval.query_encoder, label)
        with _served_encoders_lock:
            if key not in _served_encoders:
                _served_encoders[key] = load_encoder(model_dir, settings.retrieval.query_encoder,
                                                     settings.paths.cache, label, server_threads(settings))
            return _served_encoders[key]

    return _joined(settings, open_model)


def embedding_cache(settings: Settings, encoder: Encoder) -> VectorCache:
    """The embedding cache of ``encoder``: one file per model (an ensemble's models each keep theirs)."""
    parts = [EmbeddingCache(settings.paths.embeddings(part.fingerprint), part.dim) for part in parts_of(encoder)]
    return parts[0] if len(parts) == 1 else JoinedCache(parts)


def demo_catalog(settings: Settings) -> Path:
    """The demo store's catalog file, generated on first use."""
    folder = settings.paths.demo
    if not (folder / "products.csv").is_file():
        logger.info("generating the synthetic demo store in %s", folder)
        write_demo(folder)
    return folder / "products.csv"


def check_catalog_to_build(settings: Settings) -> None:
    """Refuse a catalog file that is not there (:func:`~retrieval.catalog.check_catalog_file`) before any server
    process starts, when serving would index it: no index of the served name is built yet. With one built, the
    catalog is not read to serve (an existing index is served as it is), so a catalog moved away since is only
    a warning at start, as it always was."""
    if settings.catalog is None:
        return
    folder = settings.paths.indexes / settings.index_name
    if not any((build / "manifest.json").is_file() for build in folder.glob("*")):
        check_catalog_file(settings.catalog)


def index_path(settings: Settings, encoder: Encoder, name: str | None = None) -> Path:
    """The served index of ``name`` (default ``settings.index_name``) for this encoder."""
    return settings.paths.index(name or settings.index_name, encoder.fingerprint)


def catalog_encoder(settings: Settings, encoder: Encoder) -> Encoder:
    """What encodes a catalog for ``encoder``'s index: the same model in bf16 where
    ``retrieval.catalog_precision`` says so (an ONNX encoder only), else ``encoder`` itself."""
    bf16 = resolve_catalog_precision(settings.retrieval.catalog_precision) == "bf16"
    if isinstance(encoder, OnnxEncoder) and not encoder.bf16 and bf16:
        return OnnxEncoder(encoder.model_dir, encoder.cache_dir, name=encoder.name, threads=encoder.threads,
                           bf16=True)
    return encoder


class _OnFirstEncode:
    """``encoder``'s name, fingerprint and dimension, with :func:`catalog_encoder`'s model made on the
    first ``encode``: a build whose texts are all in the embedding cache never opens a second session
    (the bf16 one compiles a model and holds its memory)."""

    def __init__(self, settings: Settings, encoder: Encoder) -> None:
        self.name, self.fingerprint, self.dim = encoder.name, encoder.fingerprint, encoder.dim
        self._settings, self._encoder = settings, encoder
        self._made: Encoder | None = None

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if self._made is None:
            self._made = catalog_encoder(self._settings, self._encoder)
        return self._made.encode(texts, batch_size, progress)


def retrieval_settings(settings: Settings) -> RetrievalSettings:
    """``settings.retrieval`` for this store: a relative ``synonyms`` path is read from the store's own
    folder (the home for the default store, ``<home>/stores/NAME/`` for another), so each store has its file;
    with none set, the store's ``rules/synonyms.txt`` when it exists (what ``PUT /v1/admin/synonyms`` writes)."""
    synonyms = settings.retrieval.synonyms
    if synonyms and not Path(synonyms).is_absolute():
        return settings.retrieval.model_copy(update={"synonyms": str(settings.paths.base / synonyms)})
    if not synonyms and settings.paths.synonyms.is_file():
        return settings.retrieval.model_copy(update={"synonyms": str(settings.paths.synonyms)})
    return settings.retrieval


def synonyms_target(settings: Settings) -> Path:
    """The synonyms file the admin API writes: the one ``retrieval.synonyms`` names, else the store's
    ``rules/synonyms.txt``."""
    named = retrieval_settings(settings).synonyms
    return Path(named) if named else settings.paths.synonyms


def build_index(settings: Settings, products: pd.DataFrame, path: Path, encoder: Encoder) -> ProductIndex:
    cache = embedding_cache(settings, encoder)
    try:
        if settings.compute.scheduler is not None:  # Dask workers fill the cache; the build then encodes nothing
            from retrieval.dask_encoding import encode_catalog

            encode_catalog(settings, products, encoder, cache)
        elif isinstance(encoder, EnsembleEncoder):  # each model's catalog encoder made once it has texts to encode
            encoder = EnsembleEncoder(*(_OnFirstEncode(settings, part) for part in encoder.parts), encoder.weight)
        else:
            encoder = _OnFirstEncode(settings, encoder)
        return ProductIndex.build(path, products, encoder, retrieval_settings(settings), cache,
                                  progress=settings.progress)
    finally:
        cache.close()


@contextmanager
def building(path: Path) -> Iterator[None]:
    """One process builds or writes an index folder at a time (server processes and jobs share the home). Once
    it holds the folder, a build's swap of folders that a process dying cut short is finished or undone
    (:meth:`ProductIndex.recover`): the index it left is written or served, never built anew."""
    with write_lock(path):
        ProductIndex.recover(path)
        yield


def _current(path: Path, products: pd.DataFrame, encoder: Encoder) -> bool:
    if not (path / "manifest.json").is_file():
        return False
    manifest = Manifest.read(path)
    return (manifest.encoder_fingerprint == encoder.fingerprint and manifest.catalog_hash == catalog_hash(products)
            and manifest.analyzer == ANALYZER_VERSION)


def ensure_index(settings: Settings, products: pd.DataFrame, path: Path, encoder: Encoder) -> ProductIndex:
    """Load the index at ``path`` if it holds ``products`` with ``encoder`` and the current query analyzer; else
    build it (one process at a time; a process that waited loads the result). The manifest's catalog hash covers
    the text only: ``path`` tells apart products of other attributes (:meth:`~core.paths.Home.eval_index`). An
    index that is there but cannot be loaded (its vectors file lost committed rows) is built again too: it is
    derived data, and the embedding cache holds its vectors."""
    if not _current(path, products, encoder):
        with building(path):
            if not _current(path, products, encoder):
                if (path / "manifest.json").is_file():
                    logger.info("index %s is stale (catalog, encoder or query analyzer changed); rebuilding", path)
                return build_index(settings, products, path, encoder)
    try:
        return ProductIndex.load(path, retrieval_settings(settings))
    except NotReady as error:
        with building(path):
            try:  # another process may have built it again meanwhile
                return ProductIndex.load(path, retrieval_settings(settings))
            except NotReady:
                logger.warning("%s; building it again", error.message)
                return build_index(settings, products, path, encoder)


def open_index(settings: Settings, encoder: Encoder, products: pd.DataFrame | None = None) -> ProductIndex:
    """With ``products`` (an evaluation or training dataset): that catalog's index, built when
    missing or stale. Without: the served index, as it is (upserts and deletes included); built
    only when missing, from ``settings.catalog`` or the generated demo catalog (not with an artifact store
    set: a replica serves the index it pulled)."""
    if products is not None:
        path = settings.paths.eval_index(catalog_hash(products), products_hash(products), encoder.fingerprint)
        return ensure_index(settings, products, path, encoder)
    path = index_path(settings, encoder)
    missing = not (path / "manifest.json").is_file()
    if missing:  # a build or pull cut short while it moved folders (beside the folder a link at path points at):
        with building(path):  # its old or its new index is served
            missing = not (path / "manifest.json").is_file()
    if missing and settings.store and not settings.catalog:
        raise NotReady(f"store {settings.store!r} has no index for encoder {encoder.name}: build it with "
                       f"`shoprank --store {settings.store} index --catalog FILE`")
    own = _own_builds(settings, path) if missing and not settings.catalog else []
    if own:
        raise NotReady(f"index {path.parent.name!r} has no build for encoder {encoder.name} ({encoder.fingerprint}), "
                       f"only for {own}: index the catalog with it (`shoprank index --catalog FILE`), or set "
                       "SHOPRANK_ENCODER (and SHOPRANK_RETRIEVAL__SECOND_ENCODER) to the models of a build (a home's "
                       "own index is never replaced by the demo catalog)")
    if missing and settings.artifacts_url and not settings.catalog:  # a replica serves what the store holds
        raise NotReady(f"the artifact store {settings.artifacts_url} holds no index {path.parent.name!r} for encoder "
                       f"{encoder.name} ({encoder.fingerprint}): build it where the indexes are built (`shoprank "
                       "index --catalog FILE`) and publish it (`shoprank artifacts push`); a replica builds none "
                       "(nor the demo catalog)")
    if missing:
        with building(path):
            if not (path / "manifest.json").is_file():
                served, _ = read_catalog(settings.catalog or demo_catalog(settings))
                return build_index(settings, served, path, encoder)
    index = ProductIndex.load(path, retrieval_settings(settings))
    if settings.catalog is not None and index.manifest.updated == index.manifest.created:  # never written since
        try:  # built before from another catalog (the demo's?): said, never in the way of serving what is there
            given, _ = read_catalog(settings.catalog, skip_bad_rows=True)
        except ShopRankError as error:
            logger.warning("serving the index at %s; the catalog given could not be read (%s)", path, error.message)
            return index
        if catalog_hash(given) != index.manifest.catalog_hash:
            logger.warning("serving the index at %s (%d products), not the catalog %s given (%d products): an "
                           "existing index is served as it is; index the catalog into it with `shoprank index "
                           "--catalog %s`", path, index.count, settings.catalog, len(given), settings.catalog)
    return index


def _own_builds(settings: Settings, path: Path) -> list[str]:
    """The finished builds beside ``path`` (other encoders') that hold a store's own products: all of them, but
    one of the generated demo catalog never written since it was built (no upsert, delete or live change),
    which a demo home may build again for a new encoder. The demo catalog is read only when it exists."""
    manifests = [p for p in path.parent.glob("*/manifest.json") if not p.parent.name.endswith((".building", ".old"))]
    demo = settings.paths.demo / "products.csv"
    if not manifests or not demo.is_file():
        return sorted(p.parent.name for p in manifests)
    demo_hash = catalog_hash(read_catalog(demo)[0])

    def the_demo(manifest: dict) -> bool:
        return manifest.get("catalog_hash") == demo_hash and manifest.get("updated") == manifest.get("created")

    return sorted(p.parent.name for p in manifests if not the_demo(json.loads(p.read_text())))


def build_served_index(settings: Settings | None = None, tolerate_not_ready: bool = False) -> None:
    """Build the served index if it is missing (server processes and replicas then only load it). With
    ``tolerate_not_ready``, one that cannot be built (no build for this encoder beside the store's own) is
    left to the server processes, which answer 503 naming what to run; else it fails."""
    settings = settings or get_settings()
    try:
        open_index(settings, open_encoder(settings))
    except NotReady as error:
        if not tolerate_not_ready:
            raise
        logger.warning("%s", error.message)


def build_index_in_child(env: Mapping[str, str] | None = None, tolerate_not_ready: bool = False) -> None:
    """:func:`build_served_index` for the settings of ``env`` (default: this process's), in a
    child process, so the caller does not keep the index and encoder it loads. The error the child
    raises (a bad catalog, say) is raised here, same class and message; a child that fails otherwise
    (its traceback on stderr) raises :class:`~core.errors.ShopRankError` naming its exit code."""
    with tempfile.TemporaryDirectory(prefix="shoprank-index-") as folder:
        report = Path(folder) / "error.json"
        code = subprocess.run([sys.executable, "-c", "import sys; from serving.indexing import served_index_child; "
                               "sys.exit(served_index_child(sys.argv[1:]))", str(report),
                               "tolerate-not-ready" if tolerate_not_ready else "strict"], env=env,
                              check=False).returncode
        error = json.loads(report.read_text()) if report.is_file() else None
    if code == 0:
        return
    if error is not None:
        raise _error_named(error["error"], error["message"])
    raise ShopRankError(f"building the served index failed in a child process (exit code {code}); its output "
                        "above says why")


def served_index_child(argv: Sequence[str]) -> int:
    """The child of :func:`build_index_in_child` (``argv``: the file that takes its error, then
    ``tolerate-not-ready`` or ``strict``): 0 once the served index exists; 2 on a ShopRank error, whose
    class and message it writes to that file for the parent to raise."""
    report, mode = argv
    try:
        build_served_index(tolerate_not_ready=mode == "tolerate-not-ready")
    except ShopRankError as error:
        Path(report).write_text(json.dumps({"error": type(error).__name__, "message": error.message}))
        return 2
    return 0


def _error_named(name: str, message: str) -> ShopRankError:
    """A :mod:`core.errors` error of class ``name`` with ``message`` (the root class for a name it lacks)."""
    kind = getattr(errors, name, None)
    if isinstance(kind, type) and issubclass(kind, ShopRankError):
        try:
            return kind(message)
        except TypeError:  # a class that needs more than a message
            pass
    return ShopRankError(message)
