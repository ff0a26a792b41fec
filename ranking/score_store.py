"""The shared tier of the cross-encoder score cache: what every backend does.

The backends (sqlite on this machine, Redis) are in :mod:`ranking.score_backends`.

Several server processes (and replicas) score the same (query, product) pairs,
and a restart forgets its in-memory cache; a :class:`ScoreStore` keeps the
scores where all of them read them and a restart finds them. Behind the
per-process LRU (:class:`ranking.cache.CachedScorer`), per search:

- **reads** are one batch (sqlite ``IN (...)``, Redis ``MGET``), bounded by
  ``serving.score_store_timeout_ms``;
- **writes** go to a bounded queue that a background thread drains in batches,
  so a search never waits for one; a full queue drops the scores (counted);
- **failures** never fail a search: a read or write error is counted and logged
  at most once per ``serving.score_store_retry_s``; after 3 in a row the store is
  left alone for that long (the pairs are scored instead).

A key names the model (role, registry version, precision, token cap, registration
stamp), the analyzed query, the product id and a hash of the product text that
was scored: a model swap or a changed title reads other keys, never a stale score.

The same store keeps the bi-encoder's **query vectors** (:meth:`ScoreStore.get_vectors`,
float32 bytes, keyed by the encoder's fingerprint and the analyzed query), so a head query
the nightly warm-up or another process encoded is not encoded again.

And the first stage's **candidate lists** (:meth:`ScoreStore.get_blobs`, keys ``fs:<digest>``,
``serving.results.SharedLists``), kept like scores, so a query's retrieval runs once for all
processes until the catalog changes.

And **result pages** (:meth:`ScoreStore.get_page`: bytes after the time they were
written; keys ``rp:<digest>`` made by :func:`page_key`), kept ``page_ttl_s``: Redis
expires them, sqlite deletes expired ones at most once per ``page_ttl_s``
(``serving.results``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import struct
import threading
import time
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

_BATCH = 500  # scores per background write
_TRIP_AFTER = 3  # consecutive errors before the store is left alone (one slow read on a busy host is not an outage)


def text_hash(text: str) -> str:
    """A short hash of the product text a model scored."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def score_key(model: str, query: str, product_id: str, text: str) -> str:
    """The store key of one pair: ``<model>:<digest of query, product id, text hash>`` (bounded length)."""
    digest = hashlib.blake2b(f"{query}\x1f{product_id}\x1f{text}".encode(), digest_size=16).hexdigest()
    return f"{model}:{digest}"


def vector_key(encoder_fingerprint: str, query: str) -> str:
    """The store key of one query vector: ``qv:<encoder fingerprint>:<digest of the analyzed query>``."""
    return f"qv:{encoder_fingerprint}:{hashlib.blake2b(query.encode(), digest_size=16).hexdigest()}"


PAGE_PREFIX = "rp:"
PAGE_END = "rp;"  # the first key after every page key (';' follows ':')
_STAMP = struct.Struct("<d")  # a page's value starts with the wall-clock time it was written


def page_key(request: str) -> str:
    """The store key of one result page: ``rp:<digest of the request and everything it depended on>``."""
    return PAGE_PREFIX + hashlib.blake2b(request.encode(), digest_size=16).hexdigest()


Value = float | bytes  # a score, or a float32 vector's bytes


class ScoreStore:
    """A shared key -> score (or vector) store with guarded batched reads and background batched writes.

    Subclasses implement :meth:`_read` and :meth:`_write`; this class counts, guards
    and queues. Counters (read at scrape time for ``/metrics``): ``errors``, ``skipped``
    (reads not tried while the store is left alone), ``dropped`` (scores not written:
    full queue or failed write) and ``written``.

    Args:
        retry_s: Seconds the store is left alone after 3 errors in a row.
        queue_size: Scores waiting to be written at most.
        page_ttl_s: Seconds a result page is kept.
    """

    name = "store"
    EVENTS = ("errors", "skipped", "written", "dropped")  # its counts, exported on /metrics

    def __init__(self, retry_s: float = 30.0, queue_size: int = 10_000, page_ttl_s: float = 60.0) -> None:
        self.retry_s = retry_s
        self.page_ttl_s = page_ttl_s
        self.errors = self.skipped = self.dropped = self.written = 0
        self._down_until = 0.0
        self._in_a_row = 0
        self._logged_at = -float("inf")
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, Value] | None] = queue.Queue(maxsize=queue_size)
        self._writer = threading.Thread(target=self._drain, name=f"score-store-{self.name}", daemon=True)
        self._writer.start()

    # -- what a backend implements --------------------------------------------------------------

    def _read(self, keys: Sequence[str]) -> list[Value | None]:
        """The stored values as written (a backend that keeps text returns bytes)."""
        raise NotImplementedError

    def _write(self, items: Sequence[tuple[str, Value]]) -> None:
        raise NotImplementedError

    # -- guarded API ----------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False while the store is left alone after errors."""
        return time.monotonic() >= self._down_until

    def _failed(self, action: str, err: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self.errors += 1
            self._in_a_row += 1
            if self._in_a_row >= _TRIP_AFTER:
                self._down_until = now + self.retry_s
                self._in_a_row = 0
            log = now - self._logged_at >= self.retry_s
            if log:
                self._logged_at = now
        if log:
            logger.warning("score store (%s) %s failed: %s; searches score their pairs for the next %.0f s "
                           "(%d errors so far)", self.name, action, err, self.retry_s, self.errors)

    def _guarded_read(self, keys: Sequence[str]) -> list[Value | None]:
        if not keys:
            return []
        if not self.available:
            with self._lock:
                self.skipped += 1
            return [None] * len(keys)
        try:
            found = self._read(keys)
            self._in_a_row = 0
            return found
        except Exception as err:  # noqa: BLE001 - a store outage must never fail a search
            self._failed("read", err)
            return [None] * len(keys)

    def get_many(self, keys: Sequence[str]) -> list[float | None]:
        """The stored score of each key (None: not stored, or the store is unavailable)."""
        return [None if v is None else float(v) for v in self._guarded_read(keys)]

    def get_vectors(self, keys: Sequence[str], dim: int) -> list[np.ndarray | None]:
        """The stored float32 vector of each key (None: not stored, not a ``dim``-vector, or the
        store is unavailable)."""
        out: list[np.ndarray | None] = []
        for value in self._guarded_read(keys):
            ok = isinstance(value, bytes) and len(value) == 4 * dim
            out.append(np.frombuffer(value, dtype=np.float32) if ok else None)  # type: ignore[arg-type]
        return out

    def put_vectors(self, items: Sequence[tuple[str, np.ndarray]], block: bool = False) -> int:
        """Queue vectors (stored as float32 bytes) like :meth:`put_many`; returns how many were dropped."""
        return self.put_many([(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items], block)

    def get_blobs(self, keys: Sequence[str]) -> list[bytes | None]:
        """The bytes stored under each key (None: not stored, not bytes, or the store is unavailable)."""
        return [value if isinstance(value, bytes) else None for value in self._guarded_read(keys)]

    def get_page(self, key: str, max_age_s: float) -> tuple[bytes, float] | None:
        """The result page stored under ``key`` and its age in seconds (None: not stored, older than
        ``max_age_s``, or the store is unavailable)."""
        value = self._guarded_read([key])[0]
        if not isinstance(value, bytes) or len(value) < _STAMP.size:
            return None
        age = time.time() - _STAMP.unpack_from(value)[0]
        return (value[_STAMP.size :], max(0.0, age)) if age <= max_age_s else None

    def put_page(self, key: str, payload: bytes) -> int:
        """Queue a result page (stamped with the time now) like :meth:`put_many`."""
        return self.put_many([(key, _STAMP.pack(time.time()) + payload)])

    def put_many(self, items: Sequence[tuple[str, Value]], block: bool = False) -> int:
        """Queue scores for the background writer; returns how many were dropped (queue full, the store
        unavailable, or a score that is not a finite number: a model's NaN is not worth sharing, and one such
        value would fail the sqlite store's whole batch). ``block``: wait for room instead (batch jobs)."""
        finite = [item for item in items if isinstance(item[1], (bytes, bytearray)) or math.isfinite(item[1])]
        if len(finite) < len(items):
            with self._lock:
                self.dropped += len(items) - len(finite)
        items, skipped = finite, len(items) - len(finite)
        if not self.available and not block:
            with self._lock:
                self.dropped += len(items)
            return len(items) + skipped
        dropped = 0
        for item in items:
            try:
                self._queue.put(item, block=block)
            except queue.Full:
                dropped += 1
        if dropped:
            with self._lock:
                self.dropped += dropped
        return dropped + skipped

    def _drain(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            batch = [item] if item is not None else []
            stop = item is None
            while not stop and len(batch) < _BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                stop = more is None
                if more is not None:
                    batch.append(more)
            try:
                if batch:
                    self._write(batch)
                    with self._lock:
                        self.written += len(batch)
            except Exception as err:  # noqa: BLE001 - the writer thread must outlive an outage
                with self._lock:
                    self.dropped += len(batch)
                self._failed("write", err)
            finally:
                for _ in range(len(batch) + stop):
                    self._queue.task_done()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued score is written (or dropped); False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def prune(self, older_than_s: float) -> int:
        """Delete scores written more than ``older_than_s`` ago (stores without expiry); returns how many."""
        return 0

    def close(self) -> None:
        """Write what is queued (a few seconds at most), stop the writer, close connections."""
        self.flush(timeout=5.0)
        try:
            self._queue.put(None, timeout=1.0)
        except queue.Full:
            pass
        self._writer.join(timeout=2.0)
        self._close()

    def _close(self) -> None:
        pass
