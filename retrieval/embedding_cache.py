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
    """The cache of an :class:`~retrieval.encoder.EnsembleEncoder`: each model's own cache, its columns of
    the joined vectors in it; :func:`encode_cached` encodes with each model the texts its own cache lacks, so
    vectors a model encoded for its own index are not encoded again."""

    def __init__(self, parts: Sequence[EmbeddingCache]) -> None:
        self.parts = tuple(parts)
        self.dim = sum(part.dim for part in self.parts)

    def get_many(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`EmbeddingCache.get_many`: a text is found when every model's cache holds it."""
        looked = [part.get_many(texts) for part in self.parts]
        return (np.hstack([vectors for vectors, _ in looked]),
                np.logical_and.reduce([found for _, found in looked]))

    def put_many(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        start = 0
        for part in self.parts:
            part.put_many(texts, vectors[:, start : start + part.dim])
            start += part.dim

    def __len__(self) -> int:
        return min(len(part) for part in self.parts)

    def close(self) -> None:
        for part in self.parts:
            part.close()


VectorCache = EmbeddingCache | JoinedCache  # what an index build and its writes read vectors through


def encode_cached(encoder: "Encoder", texts: Sequence[str], cache: VectorCache,
                  batch_size: int = 32, progress: bool = False, chunk: int = 2048) -> np.ndarray:
    """Vectors of ``texts``, encoding only those missing from ``cache``.

    Missing texts are encoded ``chunk`` at a time and stored after each chunk,
    so an interrupted run resumes where it stopped.
    """
    from tqdm.auto import tqdm

    if isinstance(cache, JoinedCache):  # each model from its own cache: vectors one model has are not encoded again
        return np.hstack([encode_cached(part, texts, own, batch_size, progress, chunk)
                          for part, own in zip(parts_of(encoder), cache.parts, strict=True)])
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
