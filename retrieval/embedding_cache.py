"""Embeddings cached by (encoder fingerprint, text hash) in a sqlite file.

Re-indexing a catalog only encodes texts the encoder has not seen, so an
unchanged product costs a lookup, and a new encoder version starts its own
cache file beside the old one; two models searched as one (an ensemble) read
their own two files (:class:`JoinedCache`).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retrieval.encoder import parts_of

if TYPE_CHECKING:
    from retrieval.encoder import Encoder

_CHUNK = 900  # below sqlite's default limit of bound parameters


def text_key(text: str) -> bytes:
    """16-byte key of a text (BLAKE2b); collisions are negligible at catalog scale."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class EmbeddingCache:
    """A persistent map text -> float32 vector for one model."""

    def __init__(self, path: Path, dim: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.dim = dim
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, vec BLOB NOT NULL)")

    def get_many(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Look texts up.

        Returns:
            ``(vectors, found)``: a ``(len(texts), dim)`` array with the cached
            rows filled in, and a boolean mask of which rows were found.
        """
        keys = [text_key(t) for t in texts]
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        found = np.zeros(len(texts), dtype=bool)
        positions: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            positions.setdefault(key, []).append(i)
        unique = list(positions)
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, blob in self._db.execute(f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk):
                vector = np.frombuffer(blob, dtype=np.float32)
                for i in positions[key]:
                    vectors[i] = vector
                    found[i] = True
        return vectors, found

    def put_many(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        rows = [(text_key(t), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for t, v in zip(texts, vectors)]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM emb").fetchone()[0])

    def close(self) -> None:
        self._db.close()


class JoinedCache:
    """The cache of an :class:`~retrieval.encoder.EnsembleEncoder`: each model's own cache, in the
    ensemble's order (:func:`per_model` pairs them); :func:`encode_cached` encodes with each model the
    texts its own cache lacks, so vectors a model encoded for its own index are not encoded again."""

    def __init__(self, parts: Sequence[EmbeddingCache]) -> None:
        self.parts = tuple(parts)

    def close(self) -> None:
        for part in self.parts:
            part.close()


VectorCache = EmbeddingCache | JoinedCache  # what an index build and its writes read vectors through


def per_model(encoder: "Encoder", cache: VectorCache) -> list[tuple["Encoder", EmbeddingCache]]:
    """Each single model behind ``encoder`` with its own cache (one pair for one model); a cache of
    another number of models than ``encoder`` has is an error (ValueError), not a narrower index."""
    own = cache.parts if isinstance(cache, JoinedCache) else (cache,)
    return list(zip(parts_of(encoder), own, strict=True))


def encode_cached(encoder: "Encoder", texts: Sequence[str], cache: VectorCache,
                  batch_size: int = 32, progress: bool = False, chunk: int = 2048) -> np.ndarray:
    """Vectors of ``texts``, encoding only those missing from ``cache``.

    Missing texts are encoded ``chunk`` at a time and stored after each chunk,
    so an interrupted run resumes where it stopped.
    """
    from tqdm.auto import tqdm

    if isinstance(cache, JoinedCache):  # each model from its own cache: vectors one model has are not encoded again
        return np.hstack([encode_cached(model, texts, own, batch_size, progress, chunk)
                          for model, own in per_model(encoder, cache)])
    vectors, found = cache.get_many(texts)
    missing = np.flatnonzero(~found)
    with tqdm(total=len(missing), disable=not progress or not len(missing), desc="encode", unit="text") as bar:
        for start in range(0, len(missing), chunk):
            rows = missing[start : start + chunk]
            batch = [texts[i] for i in rows]
            fresh = encoder.encode(batch, batch_size=batch_size)
            vectors[rows] = fresh
            cache.put_many(batch, fresh)
            bar.update(len(rows))
    return vectors
