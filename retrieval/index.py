"""A persisted product index: products table + BM25 (tantivy) + dense (FAISS).

Layout of an index folder::

    manifest.json     encoder, dimensions, count, catalog hash, index kind, times
    products.parquet  one row per product row ever added; ``live`` marks current ones
    bm25/             tantivy index (live rows only)
    bm25.commit       the commit the BM25 index holds, or ``writing`` while a write changes it
    faiss.index, vectors.f32, live.npy, dense.json   the dense side

Rows are append-only: an upsert whose text changed adds a new row and marks the
old one dead; an attribute-only change edits the row in place; a delete marks
rows dead. When the dead share passes ``retrieval.compact_ratio`` the index is
compacted (rebuilt from the stored vectors, nothing re-encoded).

A process that dies in a write leaves the index as it was before the write or
as it is after it, never a mix. The manifest is the commit point: a save
writes the other files into ``pending-<id>/`` and replaces ``manifest.json``
(naming that id) before it moves them in, so a load moves in the files of the
manifest it reads and ignores any other pending folder. Vectors appended past
the committed rows are not read (the next write cuts them off). A write marks
``bm25.commit`` before it changes the BM25 index, and a save names its commit
there once the manifest is replaced: the next write finds a BM25 index that a
write changed but did not commit and puts it back in line with the committed
catalog (a load never writes; until then BM25 ignores rows past the committed
ones). A load that a write's commit lands in the middle of reads the index
again. A build or compaction puts the old folder aside as ``<name>.old``
before it moves the new one in; :meth:`ProductIndex.recover` finishes or
undoes a swap that was cut short.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core import __version__
from core.errors import Conflict, InvalidInput, NotFound, NotReady
from core.files import fsync_path, recover_folder, replace_folder, staging_of, write_text_atomic
from core.settings import RetrievalSettings
from retrieval.analyzer import Analyzer, english_words
from retrieval.bm25 import BM25Index
from retrieval.catalog import catalog_hash, product_text, typed_columns
from retrieval.dense import VECTORS as VECTORS_FILE
from retrieval.dense import DenseIndex
from retrieval.embedding_cache import VectorCache, encode_cached
from retrieval.encoder import Encoder
from retrieval.synonyms import Synonyms, file_digest
from retrieval.types import Candidates, Hits
from retrieval.vocabulary import VERSION as ANALYZER_VERSION
from retrieval.vocabulary import Vocabulary, normalize

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PRODUCTS = "products.parquet"
VOCABULARY = "vocabulary.json"
PENDING = "pending-"  # a save's files wait in pending-<commit id>/ until the manifest names that id
SAME_FILE = object()  # read_synonyms, refresh_synonyms: the file the index reads now
BM25_COMMIT = "bm25.commit"  # the commit whose rows the BM25 index holds; WRITING while a write changes it
WRITING = "writing"
LOAD_ATTEMPTS = 5  # reads of an index that writes keep committing to before a load gives up


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
    # what the row numbers mean: new at every build and compaction (rows renumbered) and every write that adds
    # rows, so what is cached by row number (the first stage's lists) is never read against other rows
    build: str = ""
    commit: str = ""  # the id of the save that wrote this manifest (its files wait in pending-<id>/)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        file = path / MANIFEST
        if not file.is_file():
            raise NotFound(f"no index at {path} (missing {MANIFEST}); build one with `shoprank index --catalog FILE`")
        values = json.loads(file.read_text())
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:  # written by a later release: what this one does not know it does not need
            logger.debug("index %s: manifest fields %s are not read by this release", path, unknown)
        return cls(**{key: value for key, value in values.items() if key in known})


@dataclass(frozen=True)
class SynonymsRead:
    """A synonyms file read again (:meth:`ProductIndex.read_synonyms`): the analyzer with its rules, not yet
    the index's own (:meth:`ProductIndex.use_synonyms`)."""

    analyzer: Analyzer
    path: str | None  # the synonyms file (None: none)
    stamp: str | None  # the digest of the bytes read


@dataclass(frozen=True, slots=True)
class UpsertReport:
    added: int
    updated_text: int
    updated_attributes: int
    unchanged: int


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


@contextmanager
def write_lock(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the lock of the index folder ``path`` (one process writes or builds it at a time; server processes
    and jobs share the home); yields whether it is held. With ``wait=False`` it is taken only when free at once
    (another process, or another holder in this one, keeps it: False)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def product_texts(products: pd.DataFrame) -> list[str]:
    """The text the bi-encoder embeds for each product, in row order."""
    return [product_text(t, d) for t, d in zip(products["title"], products["description"])]


def _bm25_docs(docs: Sequence[int], products: pd.DataFrame) -> Iterable[tuple[int, str, str]]:
    """(doc, title, description) with the analyzer's normalization, as the BM25 index holds them."""
    return zip(docs, map(normalize, products["title"]), map(normalize, products["description"]))


def catalog_vocabulary(products: pd.DataFrame) -> Vocabulary:
    """The vocabulary the query analyzer corrects against: the live products' titles, descriptions, brands and
    categories (the columns ``products`` has)."""
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
        self.vocabulary = vocabulary if vocabulary is not None else catalog_vocabulary(products)
        self._analyzer: Analyzer | None = None
        self._synonyms_stamp: str | None = None  # digest of the synonyms file the analyzer read
        self._bm25_writing = False  # this object marked the BM25 index as being written and has not saved since
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
              cache: VectorCache, progress: bool = True, vectors: np.ndarray | None = None,
              created: str | None = None) -> ProductIndex:
        """Build a new index at ``path`` (atomically replacing any index there).

        Args:
            products: Validated catalog (see :func:`retrieval.catalog.read_catalog`).
            vectors: Precomputed vectors in ``products`` order (compaction); else encoded.
            created: The manifest's ``created`` to keep (compaction: the same index, written since it was
                created, rewritten without its dead rows); default now.
        """
        started = time.perf_counter()
        staging = staging_of(path)
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
            dense_kind=dense.kind, created=created or _now(), updated=_now(), analyzer=ANALYZER_VERSION,
        )
        index = cls(staging, manifest, products, bm25, dense)
        index.manifest.build = _new_id()
        index.manifest.build_seconds = round(time.perf_counter() - started, 2)
        index.save()
        del index, bm25, dense
        replace_folder(path)  # the old folder put aside until the new one is in: recover() puts one back
        logger.info("built index %s: %d products in %.1f s", path, len(products), time.perf_counter() - started)
        return cls.load(path, settings)

    @staticmethod
    def recover(path: Path) -> bool:
        """Finish or undo a build's swap of folders that a process dying cut short (call it holding
        :func:`write_lock`): with no index at ``path``, the finished build (``<name>.building``) is moved in,
        else the index it was replacing (``<name>.old``); an old folder left beside an index is deleted.
        True when an index was moved back in."""
        moved = recover_folder(path, _complete)
        if moved is not None:
            what = "the finished build" if moved == staging_of(path) else "the index it was replacing"
            logger.warning("index %s: a build was cut short while it moved folders; %s (%s) is served",
                           path, what, moved.name)
        return moved is not None

    @classmethod
    def load(cls, path: Path, settings: RetrievalSettings) -> ProductIndex:
        """Open the index at ``path`` as its manifest commits it. A load never writes the index's files (other
        than moving in those of a commit whose process died before it did): a write commits while others read.
        When a write commits while the files are read, they are read again.

        Raises:
            NotFound: No index at ``path``.
            NotReady: Writes kept committing while the index was read, or its files disagree on its rows.
        """
        for attempt in range(LOAD_ATTEMPTS):
            index = cls._read(path, settings)
            if index is not None:
                index._check_rows()
                return index
            logger.info("index %s: a write committed while it was read; reading it again", path)
            time.sleep(0.05 * (attempt + 1))
        raise NotReady(f"index {path} changed or disagreed with itself in each of {LOAD_ATTEMPTS} reads (writes "
                       "kept committing, or its products, live rows and manifest name different counts of rows); "
                       "load it again once the writes finish, or rebuild it with `shoprank index --catalog FILE`")

    @classmethod
    def _read(cls, path: Path, settings: RetrievalSettings) -> ProductIndex | None:
        """The index as one commit left it; None when the manifest changed while its files were read (or they
        name different counts of rows)."""
        manifest = Manifest.read(path)
        try:
            _finish_commit(path, manifest, after_crash=True)
            products = typed_columns(pd.read_parquet(path / PRODUCTS))  # an index stored before a column was typed
            vocabulary = Vocabulary.load(path / VOCABULARY) if (path / VOCABULARY).is_file() else None
            bm25, dense = BM25Index(path / "bm25"), DenseIndex.load(path, settings)
        except Exception:
            if _unchanged(path, manifest):  # not a commit landing in the middle: the index's own fault
                raise
            return None
        if not _unchanged(path, manifest) or not len(products) == len(dense.live) == manifest.rows:
            return None
        if manifest.analyzer != ANALYZER_VERSION:
            logger.warning("index %s holds text of query analyzer %s, not %s: queries may match it less well; "
                           "rebuild it with `shoprank index --catalog FILE`", path, manifest.analyzer,
                           ANALYZER_VERSION)
        return cls(path, manifest, products, bm25, dense, vocabulary)

    def _check_rows(self) -> None:
        """Read only the committed rows of files a write that did not finish may have added to: vectors past
        them are not read (the next write cuts them off), nor BM25 rows past them. A BM25 index a write changed
        but did not commit may lack committed rows too; the next write puts it back in line."""
        self.bm25.rows = len(self.products)
        stored = (self.path / VECTORS_FILE).stat().st_size // (4 * self.dense.dim) if self.dense.dim else 0
        if stored > len(self.products):
            logger.warning("index %s: %d vectors past its %d committed rows (a write that did not finish) are "
                           "ignored", self.path, stored - len(self.products), len(self.products))
        if not self._bm25_committed():
            logger.warning("index %s: its BM25 index may hold changes of a write that did not finish (or of one "
                           "under way): rows past the committed ones are ignored, and the next write puts it back "
                           "in line with the committed rows", self.path)

    def _bm25_committed(self) -> bool:
        """Whether the BM25 index holds the rows of the committed manifest (an index from before ``bm25.commit``
        was kept is taken to)."""
        marker = _read_marker(self.path)
        return marker is None or marker == self.manifest.commit

    def _begin_bm25_write(self) -> None:
        """Before a write (holding :func:`write_lock`) changes the BM25 index: put it back in line with the
        committed products if a write that did not finish changed it, then mark it as being written."""
        if not self._bm25_committed():
            live = np.flatnonzero(self.products["live"].to_numpy())
            held = self.bm25.docs()
            logger.warning("index %s: a write that did not finish changed its BM25 index; its %d rows are indexed "
                           "again from the committed catalog", self.path, len(live))
            # one tantivy commit: every row it holds out, every live row in with its committed text
            self.bm25.upsert(_bm25_docs(live.tolist(), self.products.iloc[live]), replace=held.tolist())
        _write_marker(self.path, WRITING)
        self._bm25_writing = True

    def save(self) -> None:
        """Write the index's files, the manifest last (the commit point): the others go to a folder
        ``pending-<id>/`` first, the manifest naming ``<id>`` replaces the old one, and then they are moved in
        (a load finishes that when a process died before it did); then ``bm25.commit`` names the commit."""
        for stale in self.path.glob(PENDING + "*"):  # of saves that died before their commit
            shutil.rmtree(stale, ignore_errors=True)
        previous, marker = self.manifest.commit, _read_marker(self.path)
        self.manifest.commit = _new_id()
        pending = self.path / (PENDING + self.manifest.commit)
        pending.mkdir()
        self.dense.save(pending)
        self.products.to_parquet(pending / PRODUCTS, index=False)
        self.vocabulary.save(pending / VOCABULARY)
        for file in pending.iterdir():
            fsync_path(file)
        fsync_path(pending)  # its entries too: the files the manifest commits are there after a power cut
        write_text_atomic(self.path / MANIFEST, json.dumps(asdict(self.manifest), indent=2), durable=True)
        _finish_commit(self.path, self.manifest)
        if self._bm25_writing or marker is None or marker == previous:  # BM25 holds what was committed
            _write_marker(self.path, self.manifest.commit)
            self._bm25_writing = False

    # -- reads ------------------------------------------------------------------
    @property
    def analyzer(self) -> Analyzer:
        """The query analyzer of this catalog, made on first use (its spelling dictionary takes
        a second or two for a large catalog; the serving layer asks for it when it loads)."""
        if self._analyzer is None:
            self._analyzer = self._new_analyzer(self._read_synonyms())
        return self._analyzer

    def _new_analyzer(self, synonyms: Synonyms | None) -> Analyzer:
        keep = english_words() if self.dense.settings.keep_english_words else frozenset()
        return Analyzer(self.vocabulary, keep=keep, synonyms=synonyms)

    def _read_synonyms(self) -> Synonyms | None:
        path = self.dense.settings.synonyms
        synonyms, stamp = Synonyms.read(path) if path else (None, None)
        self._synonyms_stamp = stamp  # once read: a file that failed is read again next time
        return synonyms

    def read_synonyms(self, path: str | None | object = SAME_FILE) -> SynonymsRead | None:
        """The analyzer with the synonyms file read again, if it changed since the analyzer in use read it
        (None: it did not, or no analyzer was made yet and the file is the same: the first use reads it).
        The index keeps its own analyzer until :meth:`use_synonyms` is given this one: a server's reload
        builds the next engine with it and switches only once that engine is served, so a reload that fails
        changes nothing. A file that no longer reads raises. ``path``: the synonyms file from now on (None:
        none), when the settings name another than at load."""
        current = self.dense.settings.synonyms
        path = current if path is SAME_FILE else path
        if path == current and (self._analyzer is None or file_digest(path) == self._synonyms_stamp):
            return None
        synonyms, stamp = Synonyms.read(path) if path else (None, None)  # type: ignore[arg-type]
        base = self._analyzer
        analyzer = base.with_synonyms(synonyms) if base is not None else self._new_analyzer(synonyms)
        return SynonymsRead(analyzer, path, stamp)  # type: ignore[arg-type]

    def use_synonyms(self, read: SynonymsRead) -> None:
        """Make ``read``'s analyzer (:meth:`read_synonyms`) the index's own, and its file the one it reads."""
        if read.path != self.dense.settings.synonyms:
            self.dense.settings = self.dense.settings.model_copy(update={"synonyms": read.path})
        self._analyzer, self._synonyms_stamp = read.analyzer, read.stamp
        logger.info("index %s: synonyms read again from %s", self.path, read.path)

    def refresh_synonyms(self, path: str | None | object = SAME_FILE) -> bool:
        """Read the synonyms file again if it changed since the analyzer read it, and use it at once
        (:meth:`read_synonyms`, then :meth:`use_synonyms`); True when it was read again. A file that no
        longer reads raises, and the analyzer keeps the rules it had."""
        read = self.read_synonyms(path)
        if read is not None:
            self.use_synonyms(read)
        return read is not None

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
    def upsert(self, incoming: pd.DataFrame, encoder: Encoder, cache: VectorCache,
               progress: bool = False) -> UpsertReport:
        """Add new products and update existing ones without a full rebuild; a batch naming a product id twice is
        refused (:class:`~core.errors.InvalidInput`) before anything is written."""
        self._check_encoder(encoder)
        ids = incoming["product_id"]
        repeated = ids[ids.duplicated()].unique().tolist()  # each would be added as a live row of its own
        if repeated:
            raise InvalidInput(f"the upsert batch names {len(repeated)} product id(s) more than once (first: "
                               f"{repeated[:5]!r}); send each product once per batch")
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
                        _set_cell(self.products, row, column, item[column])
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
        self._begin_bm25_write()
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
            self._begin_bm25_write()
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
        if len(self.products) != self.manifest.rows:  # rows added: row numbers name products they did not
            self.manifest.build = _new_id()
        self.bm25.rows = len(self.products)
        self.manifest.count = len(self._row_of)
        self.manifest.rows = len(self.products)
        self.manifest.catalog_hash = catalog_hash(self.live_products())
        self.manifest.updated = _now()
        self.vocabulary = catalog_vocabulary(self.products)  # the analyzer follows the catalog
        self._analyzer = None
        self.save()

    def needs_compaction(self) -> bool:
        return self.dense.dead_share > self.dense.settings.compact_ratio

    def compact(self, encoder: Encoder, cache: VectorCache) -> ProductIndex:
        """Rebuild without dead rows from the stored vectors (no re-encoding). The manifest keeps when the
        index was created, so it still reads as written since (``updated`` past ``created``): a server
        given a catalog then serves the index as it is, without comparing it with that catalog."""
        live = self.products["live"].to_numpy()
        vectors = np.asarray(self.dense.vectors[live])
        return ProductIndex.build(self.path, self.live_products(), encoder, self.dense.settings,
                                  cache, progress=False, vectors=vectors, created=self.manifest.created)

    def _check_encoder(self, encoder: Encoder) -> None:
        if encoder.fingerprint != self.manifest.encoder_fingerprint:
            raise Conflict(
                f"index {self.path} was built with encoder {self.manifest.encoder} "
                f"({self.manifest.encoder_fingerprint}), not {encoder.name} ({encoder.fingerprint}); "
                "rebuild it with `shoprank index --catalog FILE` or load the matching encoder"
            )


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds an index a build finished (its manifest, written last, reads)."""
    try:
        Manifest.read(folder)
    except (NotFound, ValueError, TypeError):
        return False
    return True


def _unchanged(path: Path, manifest: Manifest) -> bool:
    """Whether ``manifest`` is still the one committed at ``path`` (not while a build moves its folder in)."""
    try:
        return Manifest.read(path) == manifest
    except NotFound:
        return False


def _read_marker(path: Path) -> str | None:
    """What ``bm25.commit`` in the index folder ``path`` says (None: no such file)."""
    try:
        return (path / BM25_COMMIT).read_text().strip()
    except FileNotFoundError:
        return None


def _write_marker(path: Path, value: str) -> None:
    """Replace ``bm25.commit`` with ``value``, on disk before this returns."""
    write_text_atomic(path / BM25_COMMIT, value, durable=True)


def _finish_commit(path: Path, manifest: Manifest, after_crash: bool = False) -> None:
    """Move in the files of the save that wrote ``manifest`` (``after_crash``: where a process died before it
    moved them all; idempotent, two processes may do it at once). Other pending folders are saves that did not
    commit: never read (the next save deletes them)."""
    pending = path / (PENDING + manifest.commit)
    if after_crash:
        for other in path.glob(PENDING + "*"):
            if other != pending:
                logger.warning("index %s: a write that did not finish left %s; the index as it was before that "
                               "write is served", path, other.name)
    if not manifest.commit or not pending.is_dir():
        return
    moved = 0
    try:
        files = sorted(pending.iterdir())
    except FileNotFoundError:  # another process moved them all in and removed the folder just now
        return
    for file in files:
        try:
            os.replace(file, path / file.name)
            moved += 1
        except FileNotFoundError:  # moved by another process just now
            pass
    try:
        pending.rmdir()
    except OSError:
        pass
    if moved and after_crash:
        logger.warning("index %s: a write committed but died before it moved in its files; %d moved in now",
                       path, moved)


def _set_cell(frame: pd.DataFrame, row: int, column: str, value: object) -> None:
    """``frame.at[row, column] = value``, the column first widened to a type that holds ``value`` where its own
    does not (a decimal price into a column of whole ones: float; any other mix: object), as a full rebuild
    from the updated catalog would read it; pandas warns on such a write, and will refuse it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            frame.at[row, column] = value
        return
    except (FutureWarning, TypeError, ValueError):
        pass
    numbers = [frame[column].dtype, pd.Series([value]).dtype]
    wider = all(isinstance(t, np.dtype) and t.kind in "iuf" for t in numbers)  # else a mix: object, as read
    frame[column] = frame[column].astype(np.result_type(*numbers) if wider else object)
    frame.at[row, column] = value


def _same(a: object, b: object) -> bool:
    if _missing(a) and _missing(b):
        return True
    return a == b


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
