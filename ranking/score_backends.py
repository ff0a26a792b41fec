"""The score store's backends: a sqlite file on this machine, or Redis shared by replicas.

:class:`~ranking.score_store.ScoreStore` does the batching, the background writes and
the failure handling; a backend only reads and writes batches of keys.
:func:`open_score_store` opens the one ``serving.score_store`` names.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from core.settings import Settings
from ranking.score_store import PAGE_END, PAGE_PREFIX, ScoreStore, Value

_IN_LIMIT = 900  # sqlite host parameters per statement stay under the 999 of old builds


class SqliteScoreStore(ScoreStore):
    """Scores in a sqlite file (WAL mode: the server processes of a machine read it at once)."""

    name = "local"

    def __init__(self, path: Path, timeout_s: float = 0.05, retry_s: float = 30.0, queue_size: int = 10_000,
                 page_ttl_s: float = 60.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._pages_pruned = time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        # several processes open the file at once (server workers, replicas): switching to WAL does not wait
        # on a busy database, so the set-up is serialized by a lock file beside it
        with path.with_name(path.name + ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with sqlite3.connect(path, timeout=10.0) as db:
                db.execute("PRAGMA journal_mode=WAL")
                # a vector is stored as a BLOB in the same column: sqlite keeps a BLOB as it is whatever the
                # column's affinity, and a score stays REAL
                db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL, "
                           "written REAL NOT NULL) WITHOUT ROWID")
            db.close()
        super().__init__(retry_s, queue_size, page_ttl_s)

    def _connection(self, timeout: float) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
            with self._connections_lock:
                self._connections.append(db)
        return db

    def _read(self, keys: Sequence[str]) -> list[Value | None]:
        db = self._connection(self.timeout_s)
        found: dict[str, Value] = {}
        for start in range(0, len(keys), _IN_LIMIT):
            chunk = list(keys[start : start + _IN_LIMIT])
            marks = ",".join("?" * len(chunk))
            found.update(db.execute(f"SELECT key, score FROM scores WHERE key IN ({marks})", chunk).fetchall())
        return [found.get(k) for k in keys]

    def _write(self, items: Sequence[tuple[str, Value]]) -> None:
        db = self._connection(5.0)  # the writer thread's own connection: it may wait for other writers
        now = time.time()
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?)", [(k, v, now) for k, v in items])
            # expired pages: one range of the primary key
            if self.page_ttl_s > 0 and time.monotonic() - self._pages_pruned >= self.page_ttl_s:
                db.execute("DELETE FROM scores WHERE key >= ? AND key < ? AND written < ?",
                           (PAGE_PREFIX, PAGE_END, now - self.page_ttl_s))
                self._pages_pruned = time.monotonic()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def prune(self, older_than_s: float) -> int:
        with sqlite3.connect(self.path, timeout=10.0) as db:
            deleted = db.execute("DELETE FROM scores WHERE written < ?", (time.time() - older_than_s,)).rowcount
        db.close()
        return deleted

    def _close(self) -> None:
        with self._connections_lock:
            for db in self._connections:
                db.close()
            self._connections.clear()


class RedisScoreStore(ScoreStore):
    """Scores in Redis (``MGET`` per search; written with ``SET ... EX ttl`` in pipelines)."""

    name = "redis"
    prefix = "shoprank:ce:"

    def __init__(self, url: str, timeout_s: float = 0.05, ttl_s: float = 0.0, retry_s: float = 30.0,
                 queue_size: int = 10_000, page_ttl_s: float = 60.0) -> None:
        import redis

        self.url = url
        # whole seconds (Redis EX), rounded up: a TTL under a second is 1 s, not "never" (only 0 is)
        self.ttl = max(1, int(-(-ttl_s // 1))) if ttl_s > 0 else None
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        # the writer waits longer than a search would; an outage still fails it within seconds
        self.writer = redis.Redis.from_url(url, socket_timeout=max(timeout_s, 2.0),
                                           socket_connect_timeout=max(timeout_s, 2.0))
        super().__init__(retry_s, queue_size, page_ttl_s)
        self._page_ex = max(1, int(-(-page_ttl_s // 1)))  # a page's expiry in whole seconds, rounded up

    def _read(self, keys: Sequence[str]) -> list[Value | None]:
        return list(self.client.mget([self.prefix + k for k in keys]))  # bytes: get_many parses the scores

    def _write(self, items: Sequence[tuple[str, Value]]) -> None:
        pipe = self.writer.pipeline(transaction=False)
        for key, value in items:
            ttl = self._page_ex if key.startswith(PAGE_PREFIX) else self.ttl
            pipe.set(self.prefix + key, value if isinstance(value, bytes) else repr(float(value)), ex=ttl)
        pipe.execute()

    def _close(self) -> None:
        self.client.close()
        self.writer.close()


def open_score_store(settings: Settings) -> ScoreStore | None:
    """The store ``serving.score_store`` names (None for 'memory'). Opening never fails on an
    unreachable Redis: the first read finds out, and searches go on scoring."""
    sv = settings.serving
    timeout, retry, size = sv.score_store_timeout_ms / 1000, sv.score_store_retry_s, sv.score_store_queue
    if sv.score_store == "memory":
        return None
    if sv.score_store == "redis":
        return RedisScoreStore(sv.score_store_url, timeout, sv.score_store_ttl_days * 86400, retry, size,
                               sv.results_ttl_s)
    return SqliteScoreStore(settings.paths.score_store, timeout, retry, size, sv.results_ttl_s)
