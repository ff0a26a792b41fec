"""Cross-encoder scores cached in two tiers: this process's LRU, then the shared score store.

A pair's score is looked up in the engine's in-memory LRU (one per cross-encoder
role; a model swap builds a new engine, so it starts empty), then, for the pairs
it lacks, in one batched read of the shared :class:`ranking.score_store.ScoreStore`
(sqlite or Redis), and only the pairs neither holds are scored; those go to both
tiers (the store's write is queued, never waited for). The store is keyed by
:func:`model_tag`, so it is used only for registered models, whose version and
registered files' checksums (the registration time where the manifest has none)
say which weights produced a score.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.cache import LRUCache
from ranking.score_store import ScoreStore, score_key, text_hash, vector_key

MEMO_S = 1.0  # how long a missed cached_only() lookup stands in for the score_counted() that follows it


class TierCounts:
    """Hits and misses of one cache tier (exported on ``/metrics`` like an LRU's)."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def add(self, hits: int, misses: int) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses

    @property
    def hit_rate(self) -> float | None:
        """Hits over lookups; None before the first lookup (no rate yet, rather than a rate of 0)."""
        total = self.hits + self.misses
        return self.hits / total if total else None


def model_tag(role: str, version: str, model_dir: Path | None, precision: str, max_length: int) -> str | None:
    """What names a served cross-encoder's scores in the shared store: role, registry version,
    precision, token cap and a hash of the weights' registered checksums (else of the
    registration stamp): a registry rebuilt from scratch, or another store, reuses ``v1`` for
    other weights. None when ``model_dir`` holds no registry manifest: an unregistered model's
    scores are not shared."""
    manifest = model_dir / "manifest.json" if model_dir is not None else None
    if manifest is None or not manifest.is_file():
        return None
    try:
        entry = json.loads(manifest.read_text())
        # the weights' checksums where the registry recorded them (the same weights in two stores share
        # scores, other weights never do), else the registration stamp
        stamp = json.dumps(entry["files"], sort_keys=True) if entry.get("files") else str(entry["created"])
    except (OSError, ValueError, KeyError):
        return None
    return f"{role}:{version}:{precision}:{max_length}:{text_hash(stamp)[:8]}"


class CachedScorer:
    """A cross-encoder whose scores are cached by (query, product, product text) in two tiers.

    Args:
        scorer: Anything with ``score(query, texts, deadline)``.
        cache: The in-memory tier (one model version).
        store: The shared tier (None: memory only).
        model: The model's :func:`model_tag` (None: memory only).
        store_counts: Hits and misses of the shared tier.
        block_writes: Wait for room in the store's write queue instead of dropping (batch jobs).
    """

    def __init__(self, scorer: Any, cache: LRUCache, store: ScoreStore | None = None, model: str | None = None,
                 store_counts: TierCounts | None = None, block_writes: bool = False) -> None:
        self.scorer = scorer
        self.cache = cache
        self.store = store if model is not None else None
        self.model = model
        self.store_counts = store_counts or TierCounts()
        self.block_writes = block_writes
        self._missed = threading.local()  # this thread's last cached_only() that missed (see score_counted)

    def score_products(self, query: str, product_ids: Sequence[str], titles: Sequence[str],
                       deadline: float | None = None) -> np.ndarray:
        """Score of each product's title for ``query`` (the analyzed text the model sees)."""
        return self.score_counted(query, product_ids, titles, deadline)[0]

    def score_counted(self, query: str, product_ids: Sequence[str], titles: Sequence[str],
                      deadline: float | None = None) -> tuple[np.ndarray, int]:
        """The scores and how many pairs were scored here (in neither tier)."""
        hashes = [text_hash(t) for t in titles]
        last, self._missed.lookup = getattr(self._missed, "lookup", None), None
        if (last is not None and time.monotonic() - last[1] < MEMO_S
                and last[0] == (query, tuple(product_ids), tuple(hashes))):
            scores, missing, keys = last[2].copy(), last[3], last[4]  # just looked up: not read twice
        else:
            scores, missing, keys = self._known(query, product_ids, hashes)
        if missing:
            fresh = self.scorer.score(query, [titles[i] for i in missing], deadline)
            for i, value in zip(missing, fresh):
                scores[i] = value
                self.cache.put((query, product_ids[i], hashes[i]), float(value))
            if self.store is not None:
                self.store.put_many([(keys[i], float(scores[i])) for i in missing], block=self.block_writes)
        return scores, len(missing)

    def cached_only(self, query: str, product_ids: Sequence[str], titles: Sequence[str]) -> np.ndarray | None:
        """The scores when both tiers hold every pair, else None; never runs the model (overload).

        After a miss, this thread's next :meth:`score_counted` of the same pairs reuses what this
        lookup found instead of reading both tiers again (a search that was not shed goes on to score
        them), so each pair is looked up, and counted, once."""
        hashes = [text_hash(t) for t in titles]
        self._missed.lookup = None
        scores, missing, keys = self._known(query, product_ids, hashes)
        if not missing:
            return scores
        self._missed.lookup = ((query, tuple(product_ids), tuple(hashes)), time.monotonic(), scores, missing, keys)
        return None

    def _known(self, query: str, product_ids: Sequence[str],
               hashes: Sequence[str]) -> tuple[np.ndarray, list[int], dict[int, str]]:
        """Scores found in the memory tier, then (one batched read) the shared tier; the positions
        found in neither, and their shared-tier keys."""
        scores = np.empty(len(product_ids), dtype=np.float32)
        missing = []
        for i, (pid, th) in enumerate(zip(product_ids, hashes)):
            value = self.cache.get((query, pid, th))
            if value is None:
                missing.append(i)
            else:
                scores[i] = value
        keys: dict[int, str] = {}
        if missing and self.store is not None and self.model is not None:
            keys = {i: score_key(self.model, query, product_ids[i], hashes[i]) for i in missing}
            stored = self.store.get_many([keys[i] for i in missing])
            still = []
            for i, value in zip(missing, stored):
                if value is None:
                    still.append(i)
                else:
                    scores[i] = value
                    self.cache.put((query, product_ids[i], hashes[i]), float(value))
            self.store_counts.add(len(missing) - len(still), len(still))
            missing = still
        return scores, missing, keys


class SharedQueryVectors:
    """The shared tier of the query-vector cache (:class:`retrieval.hybrid.VectorTier`): the
    bi-encoder's vectors of analyzed queries in the score store, keyed by the encoder's
    fingerprint, so the server processes, the replicas on one Redis and a restarted server
    reuse what any of them (or the nightly ``shoprank warm-scores``) encoded.

    Args:
        store: The shared score store.
        fingerprint: The query encoder's fingerprint (another encoder reads other keys).
        dim: The vectors' dimension (a stored value of another size is ignored).
        counts: Hits and misses of this tier (``/metrics``).
        block_writes: Wait for room in the store's write queue instead of dropping (batch jobs).
    """

    def __init__(self, store: ScoreStore, fingerprint: str, dim: int, counts: TierCounts | None = None,
                 block_writes: bool = False) -> None:
        self.store = store
        self.fingerprint = fingerprint
        self.dim = dim
        self.counts = counts or TierCounts()
        self.block_writes = block_writes

    def get(self, queries: Sequence[str]) -> list[np.ndarray | None]:
        found = self.store.get_vectors([vector_key(self.fingerprint, q) for q in queries], self.dim)
        hits = sum(v is not None for v in found)
        self.counts.add(hits, len(found) - hits)
        return found

    def put(self, queries: Sequence[str], vectors: np.ndarray) -> None:
        self.store.put_vectors([(vector_key(self.fingerprint, q), v) for q, v in zip(queries, vectors)],
                               block=self.block_writes)
