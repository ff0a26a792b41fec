"""Dense retriever over L2-normalised vectors; inner product = cosine.

Three index kinds, chosen by ``retrieval.dense_index``:

- ``flat``: exact search over every stored vector. The scan reads every
  vector, so it is bound by memory bandwidth: with ``flat_scan: fp16`` (the
  default) it reads a half-precision copy (FAISS ``IndexScalarQuantizer``,
  QT_fp16) and re-scores its top ``flat_refine`` x k from the float32 vectors,
  so the scores returned are the exact ones; ``f32`` is one BLAS
  matrix-vector product over the float32 vectors + ``argpartition``. On the
  54,667-product catalog, top 1,000, one thread (``benchmarks/dense_scan.py``):
  fp16 3.8-4.8 ms p50 against 8.7-9.5 ms for f32 and 4.1 ms for FAISS
  ``IndexFlatIP`` on a 2-core AMD EPYC, 2.9-3.0 against 3.6 ms on a 2-core
  Xeon; the same top 1,000 on both.
- ``hnsw``: FAISS ``IndexHNSWFlat`` graph search (Malkov and Yashunin 2018);
  near-exact recall, for catalogs past ``flat_max_products``.
- ``ivfpq``: FAISS ``IndexIVFPQ`` (Jegou et al. 2011); ~48 bytes per product
  in memory, for catalogs of millions where memory matters. PQ distances are
  coarse, so ``ivfpq_refine`` x k candidates are re-scored exactly from the
  memory-mapped vectors (FAISS ``IndexRefine`` does the same with the vectors in RAM).

Rows are append-only and equal the product rows of the owning
:class:`~retrieval.index.ProductIndex`. A delete marks the row dead; FAISS
skips dead rows inside the search (``IDSelectorBitmap``), the flat path masks
them. A graph or IVF search among few allowed rows far from the query can
run out of candidates before it finds ``k`` of them; such a query is scored
exactly over the allowed rows instead (a block at a time, for filters keeping
up to ``EXACT_MAX`` rows), so a filtered search is not short.
Full-precision vectors are kept in an append-only file to score given products
exactly (rerank mode) and to rebuild without re-encoding; rows in it past
those ``live.npy`` counts (appended by a write that did not finish) are never
read, and the next write cuts them off.
"""

from __future__ import annotations

import json
import logging
import math
import mmap
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np

from core.errors import InvalidInput, NotReady
from core.paths import rebuild_advice
from core.settings import RetrievalSettings
from retrieval.types import Hits

logger = logging.getLogger(__name__)

KINDS = ("flat", "hnsw", "ivfpq")
VECTORS = "vectors.f32"


def choose_kind(n: int, settings: RetrievalSettings) -> str:
    """The index kind for ``n`` products: the configured one, or by size for ``auto``."""
    if settings.dense_index != "auto":
        return settings.dense_index
    return "flat" if n <= settings.flat_max_products else "hnsw"


def _new_faiss_index(kind: str, dim: int, vectors: np.ndarray, settings: RetrievalSettings) -> faiss.Index:
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        return index
    if dim % settings.pq_m:
        raise InvalidInput(f"pq_m={settings.pq_m} does not divide the dimension {dim}; pick a divisor")
    n = len(vectors)
    nlist = settings.ivf_nlist or max(1, min(65536, int(4 * math.sqrt(max(n, 1)))))
    if n < max(nlist, 256) * 4:
        raise InvalidInput(
            f"ivfpq needs at least {max(nlist, 256) * 4} vectors to train, got {n}; "
            "use dense_index=flat or hnsw for this catalog"
        )
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, settings.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    wanted = max(64 * nlist, 40 * 256)  # IVF centroids and the 256 PQ codes per sub-space
    sample = vectors
    if n > wanted:
        sample = vectors[np.sort(np.random.default_rng(0).choice(n, wanted, replace=False))]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


# A filtered HNSW or IVF-PQ search that comes back short scores the allowed rows exactly when they are at most
# EXACT_MAX, EXACT_BLOCK at a time (memory: a block's vectors, whatever the filter keeps); past it the graph's
# answer stands (a scan would cost more than the search it completes), as it does for an unfiltered search
EXACT_MAX = 200_000
EXACT_BLOCK = 32_768


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest scores, best first (ties: lower position first, at the ``k``-th score
    too: the top ``k`` is the head of the top ``k + 1``, so a deeper search only adds rows below)."""
    if k < len(scores):
        kth = -np.partition(-scores, k - 1)[k - 1]
        better = np.flatnonzero(scores > kth)
        part = np.concatenate([better, np.flatnonzero(scores == kth)[: k - len(better)]])
    else:
        part = np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))]


class DenseIndex:
    """Vectors + (for hnsw/ivfpq) a FAISS index + live mask for one product index."""

    def __init__(self, path: Path, kind: str, dim: int, live: np.ndarray, settings: RetrievalSettings,
                 index: faiss.Index | None = None) -> None:
        if kind not in KINDS:
            raise InvalidInput(f"dense index kind {kind!r} is not one of {KINDS}")
        self.path = path
        self.kind = kind
        self.dim = dim
        self.index = index
        self.live = live
        self.settings = settings
        self._vectors: np.ndarray | None = None
        self._vectors_file: BinaryIO | None = None  # the vectors file this index reads (_open_vectors)
        self._half: faiss.IndexScalarQuantizer | None = None  # flat_scan fp16: the half-precision copy
        self._half_lock = threading.Lock()
        self._selector: tuple[faiss.IDSelector, np.ndarray] | None = None
        self._refresh_selector()

    # -- construction and persistence ------------------------------------------
    @classmethod
    def build(cls, path: Path, vectors: np.ndarray, settings: RetrievalSettings,
              kind: str | None = None, batch: int = 50_000, progress: bool = False) -> DenseIndex:
        """A new index at ``path`` over ``vectors`` (rows 0..n-1, all live)."""
        from tqdm.auto import tqdm

        path.mkdir(parents=True, exist_ok=True)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        kind = kind or choose_kind(len(vectors), settings)
        index = None
        if kind != "flat":
            index = _new_faiss_index(kind, vectors.shape[1], vectors, settings)
            with tqdm(total=len(vectors), disable=not progress, desc=f"{kind} add", unit="vec") as bar:
                for start in range(0, len(vectors), batch):
                    index.add(vectors[start : start + batch])
                    bar.update(min(batch, len(vectors) - start))
        (path / VECTORS).unlink(missing_ok=True)
        dense = cls(path, kind, vectors.shape[1], np.ones(len(vectors), dtype=bool), settings, index)
        dense._append_vectors(vectors, after=0)
        return dense

    def save(self, folder: Path | None = None) -> None:
        """Write the FAISS index, the live mask and ``dense.json`` to ``folder`` (default: the index's own;
        :meth:`retrieval.index.ProductIndex.save` gives a folder whose files it moves in once committed)."""
        folder = folder or self.path
        if self.index is not None:
            faiss.write_index(self.index, str(folder / "faiss.index"))
        with (folder / "live.npy").open("wb") as handle:
            np.save(handle, self.live)
        meta = {"kind": self.kind, "dim": self.dim, "rows": int(len(self.live))}
        (folder / "dense.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: Path, settings: RetrievalSettings) -> DenseIndex:
        """The dense index saved at ``path``; :class:`~core.errors.NotReady` when its vectors file holds fewer
        rows than the live mask counts (they were appended and committed, then lost)."""
        meta = json.loads((path / "dense.json").read_text())
        index = faiss.read_index(str(path / "faiss.index")) if meta["kind"] != "flat" else None
        dense = cls(path, meta["kind"], int(meta["dim"]), np.load(path / "live.npy"), settings, index)
        dense._open_vectors()
        held = dense._vectors_file.fileno()  # type: ignore[union-attr]
        stored = os.fstat(held).st_size // (4 * dense.dim) if dense.dim else 0
        if stored < len(dense.live):  # appended rows lost with the disk's cache (a power cut), say
            raise NotReady(f"index {path}: {VECTORS} holds the vectors of {stored} of its {len(dense.live)} "
                           f"committed rows; {rebuild_advice(path)}")
        if dense.kind == "flat" and settings.flat_scan == "fp16":
            dense._half_copy()  # before the first search
        return dense

    # -- writes -----------------------------------------------------------------
    def _append_vectors(self, vectors: np.ndarray, after: int) -> None:
        """Append ``vectors`` as rows ``after``, ``after + 1``, ...: rows the file holds past ``after`` were
        appended by a write that did not finish (its rows were never committed) and are cut off first."""
        file, size = self.path / VECTORS, after * self.dim * 4
        if file.is_file() and file.stat().st_size > size:
            logger.warning("%s: dropping %d vectors past row %d, appended by a write that did not finish", file,
                           (file.stat().st_size - size) // (self.dim * 4), after)
            with file.open("r+b") as handle:
                handle.truncate(size)
        with file.open("ab") as handle:
            handle.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the manifest that counts these rows commits them
        self._vectors = None
        self._open_vectors()

    def _open_vectors(self) -> None:
        """Hold the vectors file open: the rows this index reads are those of the file it loaded (or wrote), also
        once another process has swapped its folder (an artifact pull, a rebuild) and the path names another
        index's file. Read by path, a server's first read of them after such a swap (a recommendation shelf,
        rerank-mode scoring) took the new file's rows for the old catalog's."""
        self._vectors_file = (self.path / VECTORS).open("rb")

    def add(self, vectors: np.ndarray) -> range:
        """Append vectors as new live rows; returns their row numbers."""
        start = len(self.live)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors):
            if self.index is not None:
                self.index.add(vectors)
            self._append_vectors(vectors, after=start)
            self.live = np.concatenate([self.live, np.ones(len(vectors), dtype=bool)])
            self._refresh_selector()
        return range(start, len(self.live))

    def remove(self, docs: Sequence[int]) -> None:
        """Mark rows dead; they are skipped by every later search."""
        if len(docs):
            self.live[np.asarray(docs, dtype=np.int64)] = False
            self._refresh_selector()

    @property
    def dead_share(self) -> float:
        return 1.0 - float(self.live.mean()) if len(self.live) else 0.0

    def _refresh_selector(self) -> None:
        if self.live.all():
            self._selector = None
            return
        bits = np.packbits(self.live, bitorder="little")
        self._selector = (faiss.IDSelectorBitmap(len(self.live), faiss.swig_ptr(bits)), bits)

    # -- reads ------------------------------------------------------------------
    @property
    def vectors(self) -> np.ndarray:
        """Exact vectors of every row: in memory for flat search (it reads them all per
        query), memory-mapped otherwise (only rerank-mode scoring reads them). Only the rows the live mask
        counts are read: a write that did not finish may have appended more."""
        if self._vectors is None or len(self._vectors) != len(self.live):
            shape, count = (len(self.live), self.dim), len(self.live) * self.dim
            if self._vectors_file is None:
                self._open_vectors()
            if not count:
                self._vectors = np.zeros(shape, dtype=np.float32)
            else:  # through the file held open (not its path), without moving its offset: threads read at once
                held = self._vectors_file.fileno()  # type: ignore[union-attr]
                mapped = mmap.mmap(held, count * 4, access=mmap.ACCESS_READ)
                rows = np.frombuffer(mapped, dtype=np.float32, count=count).reshape(shape)
                self._vectors = rows.copy() if self.kind == "flat" else rows
        return self._vectors

    def _select(self, allow: np.ndarray | None) -> tuple[faiss.IDSelector | None, object, np.ndarray]:
        """The rows a search may return (live, and marked in ``allow`` when given) as a faiss selector
        (None: every row), what keeps the selector's bitmap alive while it is used, and as a mask."""
        if allow is None:
            return (self._selector[0], self._selector, self.live) if self._selector else (None, None, self.live)
        rows = self.live.copy()
        n = min(len(rows), len(allow))
        rows[:n] &= allow[:n]
        rows[n:] = False  # rows added after the filter was worked out are not in it
        bits = np.packbits(rows, bitorder="little")
        return faiss.IDSelectorBitmap(len(rows), faiss.swig_ptr(bits)), bits, rows

    def _params(self, k: int, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(self.settings.hnsw_ef_search, k), sel=selector)
        return faiss.SearchParametersIVF(nprobe=self.settings.ivf_nprobe, sel=selector)

    def _half_copy(self) -> faiss.IndexScalarQuantizer:
        """The vectors in half precision, made anew (and swapped in whole) when rows were appended."""
        half = self._half
        if half is not None and half.ntotal == len(self.live):
            return half
        with self._half_lock:
            if self._half is None or self._half.ntotal != len(self.live):
                fresh = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16,
                                                   faiss.METRIC_INNER_PRODUCT)
                fresh.add(np.ascontiguousarray(self.vectors))
                self._half = fresh
            return self._half

    def _flat_half(self, queries: np.ndarray, k: int, selector: faiss.IDSelector | None, count: int) -> list[Hits]:
        """Scan the half-precision copy, re-score its top ``flat_refine`` x k exactly."""
        half = self._half_copy()
        fetch = min(int(math.ceil(k * self.settings.flat_refine)), count)
        _, docs = half.search(queries, fetch, params=faiss.SearchParameters(sel=selector))
        return self._rescore(queries, docs, k)

    def _rescore(self, queries: np.ndarray, docs: np.ndarray, k: int) -> list[Hits]:
        """The top ``k`` of each query's candidate rows (-1: none) by exact cosine from the float32 vectors."""
        out = []
        for query, row in zip(queries, docs):
            found = np.sort(row[row >= 0])  # sorted rows read the memory-mapped file in order
            exact = self.vectors[found] @ query
            top = _top_k(exact, k)
            out.append(Hits.of(found[top], exact[top]))
        return out

    def _flat(self, queries: np.ndarray, k: int, selector: faiss.IDSelector | None, rows: np.ndarray,
              count: int) -> list[Hits]:
        if self.settings.flat_scan == "fp16":
            return self._flat_half(queries, k, selector, count)
        scores = queries @ self.vectors.T
        if selector is not None:
            scores[:, ~rows] = -np.inf
        k = min(k, count)
        out = []
        for row in scores:
            top = _top_k(row, k)
            out.append(Hits.of(top, row[top]))
        return out

    def batch_search(self, queries: np.ndarray, k: int, allow: np.ndarray | None = None) -> list[Hits]:
        """Top-``k`` live rows by inner product for each query vector (among the rows ``allow`` marks,
        when given)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        selector, alive, rows = self._select(allow)
        count = int(np.count_nonzero(rows))
        if k <= 0 or not count:
            return [Hits.empty() for _ in queries]
        if self.index is None:
            return self._flat(queries, k, selector, rows, count)
        k = min(k, count)
        refine = self.settings.ivfpq_refine if self.kind == "ivfpq" else 1
        fetch = min(k * refine, count)
        scores, docs = self.index.search(queries, fetch, params=self._params(fetch, selector))
        del alive  # the selector's bitmap was needed until here
        if refine == 1:
            out = [Hits.of(d[d >= 0], s[d >= 0]) for s, d in zip(scores, docs)]
        else:
            out = self._rescore(queries, docs, k)
        short = [i for i, hits in enumerate(out) if len(hits) < k]
        if short and allow is not None and count <= EXACT_MAX:
            # the graph (or the probed lists) held too few of the allowed rows: score them exactly, a block at a time
            logger.debug("dense %s search found under %d of %d allowed rows; scoring them exactly", self.kind, k,
                         count)
            for i, hits in zip(short, self._exact(queries[short], k, np.flatnonzero(rows))):
                out[i] = hits
        return out

    def _exact(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> list[Hits]:
        """The exact top ``k`` of ``allowed`` rows for each query, reading :data:`EXACT_BLOCK` rows at a time (a
        running top ``k``: memory stays a block's vectors and scores, whatever the filter keeps)."""
        best_docs = [np.zeros(0, np.int64) for _ in queries]
        best_scores = [np.zeros(0, np.float32) for _ in queries]
        for start in range(0, len(allowed), EXACT_BLOCK):
            block = allowed[start : start + EXACT_BLOCK]
            scores = queries @ np.asarray(self.vectors[block]).T
            for i, row in enumerate(scores):
                docs, pooled = np.concatenate([best_docs[i], block]), np.concatenate([best_scores[i], row])
                top = _top_k(pooled, min(k, len(pooled)))
                best_docs[i], best_scores[i] = docs[top], pooled[top]
        return [Hits.of(d, s) for d, s in zip(best_docs, best_scores)]

    def search(self, query: np.ndarray, k: int, allow: np.ndarray | None = None) -> Hits:
        return self.batch_search(query, k, allow)[0]

    def score(self, query: np.ndarray, docs: Sequence[int] | np.ndarray) -> np.ndarray:
        """Exact cosine of ``query`` with each of ``docs``."""
        docs = np.asarray(docs, dtype=np.int64)
        if not len(docs):
            return np.zeros(0, dtype=np.float32)
        return self.vectors[docs] @ np.asarray(query, dtype=np.float32).ravel()
