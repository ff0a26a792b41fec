"""A persisted product index: products table + BM25 (tantivy) + dense (FAISS).

Layout of an index folder::

    manifest.json     encoder, dimensions, count, catalog hash, index kind, times
    products.parquet  one row per product row ever added; ``live`` marks current ones
    bm25/             tantivy index (live rows only)
    faiss.index, vectors.f32, live.npy, dense.json   the dense side

Rows are append-only: an upsert whose text changed adds a new row and marks the
old one dead; an attribute-only change edits the row in place; a delete marks
rows dead. When the dead share passes ``retrieval.compact_ratio`` the index is
compacted (rebuilt from the stored vectors, nothing re-encoded).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core import __version__
from core.errors import Conflict, NotFound
from core.settings import RetrievalSettings
from retrieval.analyzer import Analyzer, english_words
from retrieval.bm25 import BM25Index
from retrieval.catalog import catalog_hash, product_text, typed_columns
from retrieval.dense import DenseIndex
from retrieval.embedding_cache import EmbeddingCache, encode_cached
from retrieval.encoder import Encoder
from retrieval.synonyms import Synonyms, file_digest
from retrieval.types import Candidates, Hits
from retrieval.vocabulary import VERSION as ANALYZER_VERSION
from retrieval.vocabulary import Vocabulary, normalize

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PRODUCTS = "products.parquet"
VOCABULARY = "vocabulary.json"
SAME_FILE = object()  # refresh_synonyms: the file the index reads now


@dataclass
class Manifest:
    """What an index was built from and with; checked before it is served."""

    encoder: str
    encoder_fingerprint: str
    dim: int
    count: int
    rows: int
    catalog_hash: str
    dense_kind: str
    created: str
    updated: str
    bm25: str = "tantivy"
    shoprank: str = __version__
    build_seconds: float = 0.0
    analyzer: int = 0  # retrieval.vocabulary.VERSION of the normalized text in the BM25 index (0: not normalized)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        file = path / MANIFEST
        if not file.is_file():
            raise NotFound(f"no index at {path} (missing {MANIFEST}); build one with `shoprank index --catalog FILE`")
        return cls(**json.loads(file.read_text()))


@dataclass(frozen=True, slots=True)
class UpsertReport:
    added: int
    updated_text: int
    updated_attributes: int
    unchanged: int


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def product_texts(products: pd.DataFrame) -> list[str]:
    """The text the bi-encoder embeds for each product, in row order."""
    return [product_text(t, d) for t, d in zip(products["title"], products["description"])]


def _bm25_docs(docs: Sequence[int], products: pd.DataFrame) -> Iterable[tuple[int, str, str]]:
    """(doc, title, description) with the analyzer's normalization, as the BM25 index holds them."""
    return zip(docs, map(normalize, products["title"]), map(normalize, products["description"]))


def _vocabulary(products: pd.DataFrame) -> Vocabulary:
    live = products[products["live"]] if "live" in products.columns else products
    column = lambda name: live[name].tolist() if name in live.columns else None  # noqa: E731
    return Vocabulary.build(live["title"].tolist(), live["description"].tolist(), column("brand"),
                            column("category"), docs=live.index.tolist())


class ProductIndex:
    """The searchable catalog of one store."""

    def __init__(self, path: Path, manifest: Manifest, products: pd.DataFrame,
                 bm25: BM25Index, dense: DenseIndex, vocabulary: Vocabulary | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.products = products
        self.bm25 = bm25
        self.dense = dense
        self._titles: list[str] = products["title"].tolist()
        self._ids: list[str] = products["product_id"].tolist()
        self._row_of = {pid: row for row, pid in enumerate(self._ids) if products["live"].iat[row]}
        self.vocabulary = vocabulary if vocabulary is not None else _vocabulary(products)
        self._analyzer: Analyzer | None = None
        self._synonyms_stamp: str | None = None  # digest of the synonyms file the analyzer read
        # bumped by every write (upsert, delete): what is derived from the catalog in memory (facts,
        # suggestions, catalog text) is made again when it changes; the manifest's `updated` has
        # one-second steps, so two writes in one second would look like one
        self.generation = 0

    @property
    def key_name(self) -> str:
        """The index as cache keys name it: its name and build folders, not its path. A batch job given a
        relative home, a server its absolute one and replicas on one Redis their own folders all read the
        same keys; the catalog hash beside it tells builds of one name apart."""
        return f"{self.path.parent.name}/{self.path.name}"

    # -- build / load / save ---------------------------------------------------
    @classmethod
    def build(cls, path: Path, products: pd.DataFrame, encoder: Encoder, settings: RetrievalSettings,
              cache: EmbeddingCache, progress: bool = True, vectors: np.ndarray | None = None) -> ProductIndex:
        """Build a new index at ``path`` (atomically replacing any index there).

        Args:
            products: Validated catalog (see :func:`retrieval.catalog.read_catalog`).
            vectors: Precomputed vectors in ``products`` order (compaction); else encoded.
        """
        started = time.perf_counter()
        staging = path.with_name(path.name + ".building")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        products = products.reset_index(drop=True).copy()
        products["live"] = True
        if vectors is None:
            logger.info("encoding %d products with %s", len(products), encoder.name)
            vectors = encode_cached(encoder, product_texts(products), cache, settings.encode_batch_size, progress)
        dense = DenseIndex.build(staging, vectors, settings, progress=progress)
        bm25 = BM25Index.build(staging / "bm25", _bm25_docs(range(len(products)), products))
        manifest = Manifest(
            encoder=encoder.name, encoder_fingerprint=encoder.fingerprint, dim=int(vectors.shape[1]),
            count=len(products), rows=len(products), catalog_hash=catalog_hash(products),
            dense_kind=dense.kind, created=_now(), updated=_now(), analyzer=ANALYZER_VERSION,
        )
        index = cls(staging, manifest, products, bm25, dense)
        index.manifest.build_seconds = round(time.perf_counter() - started, 2)
        index.save()
        del index, bm25, dense
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
        logger.info("built index %s: %d products in %.1f s", path, len(products), time.perf_counter() - started)
        return cls.load(path, settings)

    @classmethod
    def load(cls, path: Path, settings: RetrievalSettings) -> ProductIndex:
        manifest = Manifest.read(path)
        products = typed_columns(pd.read_parquet(path / PRODUCTS))  # an index stored before a column was typed
        if manifest.analyzer != ANALYZER_VERSION:
            logger.warning("index %s holds text of query analyzer %s, not %s: queries may match it less well; "
                           "rebuild it with `shoprank index --catalog FILE`", path, manifest.analyzer,
                           ANALYZER_VERSION)
        vocabulary = Vocabulary.load(path / VOCABULARY) if (path / VOCABULARY).is_file() else None
        return cls(path, manifest, products, BM25Index(path / "bm25"), DenseIndex.load(path, settings), vocabulary)

    def save(self) -> None:
        self.dense.save()
        tmp = self.path / (PRODUCTS + ".tmp")
        self.products.to_parquet(tmp, index=False)
        tmp.replace(self.path / PRODUCTS)
        self.vocabulary.save(self.path / VOCABULARY)
        (self.path / MANIFEST).write_text(json.dumps(asdict(self.manifest), indent=2))

    # -- reads ------------------------------------------------------------------
    @property
    def analyzer(self) -> Analyzer:
        """The query analyzer of this catalog, made on first use (its spelling dictionary takes
        a second or two for a large catalog; the serving layer asks for it when it loads)."""
        if self._analyzer is None:
            keep = english_words() if self.dense.settings.keep_english_words else frozenset()
            self._analyzer = Analyzer(self.vocabulary, keep=keep, synonyms=self._read_synonyms())
        return self._analyzer

    def _read_synonyms(self) -> Synonyms | None:
        path = self.dense.settings.synonyms
        synonyms, stamp = Synonyms.read(path) if path else (None, None)
        self._synonyms_stamp = stamp  # once read: a file that failed is read again next time
        return synonyms

    def refresh_synonyms(self, path: str | None | object = SAME_FILE) -> bool:
        """Read the synonyms file again if it changed since the analyzer read it (a server's model
        reload calls this, so an edited file needs no restart); True when it was read again. A
        file that no longer reads raises, and the analyzer keeps the rules it had. ``path``: the
        synonyms file from now on (None: none), when the settings name another than at load."""
        if path is not SAME_FILE and path != self.dense.settings.synonyms:
            self.dense.settings = self.dense.settings.model_copy(update={"synonyms": path})
            self._synonyms_stamp = "another file"  # read below, whatever its digest
        if self._analyzer is None or file_digest(self.dense.settings.synonyms) == self._synonyms_stamp:
            return False
        self._analyzer = self._analyzer.with_synonyms(self._read_synonyms())
        logger.info("index %s: synonyms read again from %s", self.path, self.dense.settings.synonyms)
        return True

    @property
    def count(self) -> int:
        return len(self._row_of)

    def doc_of(self, product_id: str) -> int | None:
        return self._row_of.get(product_id)

    def product_id(self, doc: int) -> str:
        return self._ids[doc]

    def title(self, doc: int) -> str:
        return self._titles[doc]

    def candidates(self, hits: Hits, stage: str, others: Mapping[str, Hits] | None = None) -> Candidates:
        """Candidates ordered as ``hits`` (stage ``stage``), with columns from ``others``."""
        return Candidates.from_hits(hits, stage, [self._ids[d] for d in hits.docs.tolist()], others)

    def live_products(self) -> pd.DataFrame:
        return self.products[self.products["live"]].drop(columns="live")

    def live_product_ids(self) -> list[str]:
        return self.products.loc[self.products["live"], "product_id"].tolist()

    # -- writes -----------------------------------------------------------------
    def upsert(self, incoming: pd.DataFrame, encoder: Encoder, cache: EmbeddingCache,
               progress: bool = False) -> UpsertReport:
        """Add new products and update existing ones without a full rebuild."""
        self._check_encoder(encoder)
        # the columns the file gave (read_catalog records them): a product keeps what a file without a column
        # (a price feed of product_id, title, price) does not say, its description included
        given = set(incoming.attrs.get("given") or incoming.columns)
        incoming = incoming.reset_index(drop=True)
        new_rows, dead, attr_only, unchanged = [], [], 0, 0
        kept_from: dict[int, int] = {}  # position of a product whose text changed -> its old row
        for position, pid in enumerate(incoming["product_id"]):
            row = self._row_of.get(pid)
            item = incoming.iloc[position]
            if row is not None:
                old = self.products.iloc[row]
                if old["title"] == item["title"] and ("description" not in given
                                                      or old["description"] == item["description"]):
                    changed = [c for c in incoming.columns if c in given and not _same(old.get(c), item[c])]
                    for column in changed:
                        if column not in self.products.columns:
                            self.products[column] = None
                        self.products.at[row, column] = item[column]
                    attr_only += bool(changed)
                    unchanged += not changed
                    continue
                dead.append(row)
                kept_from[position] = row
            new_rows.append(position)
        added = incoming.iloc[new_rows].copy()
        for column in [c for c in self.products.columns if c != "live" and c not in given]:
            if column not in added.columns:  # missing, in the column's own type (a float price stays float)
                added[column] = self.products[column].iloc[:0].reindex(added.index)
            if kept_from:
                added.loc[list(kept_from), column] = self.products.loc[list(kept_from.values()), column].to_numpy()
        added["live"] = True
        vectors = encode_cached(encoder, product_texts(added), cache, progress=progress)
        if dead:
            self.products.loc[dead, "live"] = False
            self.dense.remove(dead)
        docs = self.dense.add(vectors)
        self.bm25.upsert(_bm25_docs(docs, added), replace=dead)
        self.products = pd.concat([self.products, added], ignore_index=True)
        self._after_write()
        return UpsertReport(added=len(new_rows) - len(dead), updated_text=len(dead),
                            updated_attributes=attr_only, unchanged=unchanged)

    def delete(self, product_ids: Sequence[str]) -> tuple[int, list[str]]:
        """Delete products by id; returns (deleted count, ids that were not in the index)."""
        rows = [self._row_of[p] for p in product_ids if p in self._row_of]
        unknown = [p for p in product_ids if p not in self._row_of]
        if rows:
            self.products.loc[rows, "live"] = False
            self.dense.remove(rows)
            self.bm25.delete(rows)
            self._after_write()
        return len(rows), unknown

    def _after_write(self) -> None:
        self.generation += 1
        self._titles = self.products["title"].tolist()
        self._ids = self.products["product_id"].tolist()
        live = self.products["live"].to_numpy()
        self._row_of = {pid: row for row, pid in enumerate(self._ids) if live[row]}
        self.manifest.count = len(self._row_of)
        self.manifest.rows = len(self.products)
        self.manifest.catalog_hash = catalog_hash(self.live_products())
        self.manifest.updated = _now()
        self.vocabulary = _vocabulary(self.products)  # the analyzer follows the catalog
        self._analyzer = None
        self.save()

    def needs_compaction(self) -> bool:
        return self.dense.dead_share > self.dense.settings.compact_ratio

    def compact(self, encoder: Encoder, cache: EmbeddingCache) -> ProductIndex:
        """Rebuild without dead rows from the stored vectors (no re-encoding)."""
        live = self.products["live"].to_numpy()
        vectors = np.asarray(self.dense.vectors[live])
        return ProductIndex.build(self.path, self.live_products(), encoder, self.dense.settings,
                                  cache, progress=False, vectors=vectors)

    def _check_encoder(self, encoder: Encoder) -> None:
        if encoder.fingerprint != self.manifest.encoder_fingerprint:
            raise Conflict(
                f"index {self.path} was built with encoder {self.manifest.encoder} "
                f"({self.manifest.encoder_fingerprint}), not {encoder.name} ({encoder.fingerprint}); "
                "rebuild it with `shoprank index --catalog FILE` or load the matching encoder"
            )


def _same(a: object, b: object) -> bool:
    if _missing(a) and _missing(b):
        return True
    return a == b


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
