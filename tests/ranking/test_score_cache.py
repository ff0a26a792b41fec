"""The two-tier cross-encoder score cache (LRU, then the shared store) and the local sqlite store."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from core.cache import LRUCache
from ranking.cache import CachedScorer, TierCounts, model_tag
from ranking.score_backends import SqliteScoreStore
from ranking.score_store import ScoreStore, score_key, text_hash

ROOT = Path(__file__).resolve().parents[2]


class CountingScorer:
    """Score = len(text) + offset; records every text it scored."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.seen: list[str] = []

    def score(self, query: str, texts: Sequence[str], deadline: float | None = None) -> np.ndarray:
        self.seen += list(texts)
        return np.array([len(t) + self.offset for t in texts], dtype=np.float32)


class FakeStore(ScoreStore):
    """The store logic (guard, counters, background writes) over a dict; ``down`` makes it fail."""

    name = "fake"

    def __init__(self, retry_s: float = 60.0, queue_size: int = 100) -> None:
        self.data: dict[str, float | bytes] = {}
        self.down = False
        self.reads: list[int] = []
        super().__init__(retry_s, queue_size)

    def _read(self, keys: Sequence[str]) -> list[float | bytes | None]:
        if self.down:
            raise ConnectionError("store is down")
        self.reads.append(len(keys))
        return [self.data.get(k) for k in keys]

    def _write(self, items: Sequence[tuple[str, float | bytes]]) -> None:
        if self.down:
            raise ConnectionError("store is down")
        self.data.update(items)


IDS = ["P1", "P2", "P3"]
TITLES = ["drill", "hammer drill", "garden hose"]


def cached(store: ScoreStore | None, scorer: CountingScorer, model: str | None = "reranker:v1:int8:40:aa",
           size: int = 100) -> CachedScorer:
    return CachedScorer(scorer, LRUCache(size), store, model, TierCounts())


def test_lru_then_store_then_model() -> None:
    store = FakeStore()
    scorer = CountingScorer()
    first = cached(store, scorer)
    assert first.score_products("drill", IDS, TITLES).tolist() == [5, 12, 11]
    assert scorer.seen == TITLES and first.store_counts.misses == 3 and first.store_counts.hits == 0
    assert store.flush(5) and len(store.data) == 3 and store.written == 3
    # the same process again: the LRU answers, the store is not read
    reads = len(store.reads)
    assert first.score_products("drill", IDS, TITLES).tolist() == [5, 12, 11]
    assert first.cache.hits == 3 and len(store.reads) == reads and len(scorer.seen) == 3
    # another process (empty LRU) reads the store in one batch and scores nothing
    other_scorer = CountingScorer(offset=100)  # would give other values if it scored
    other = cached(store, other_scorer)
    assert other.score_products("drill", IDS, TITLES).tolist() == [5, 12, 11]
    assert other_scorer.seen == [] and other.store_counts.hits == 3 and store.reads[-1] == 3
    # one new product: only its pair is scored
    mixed = other.score_products("drill", [*IDS, "P4"], [*TITLES, "saw"])
    assert mixed.tolist() == [5, 12, 11, 103] and other_scorer.seen == ["saw"]


def test_a_missed_cached_only_lookup_is_not_repeated_by_the_scoring_that_follows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = FakeStore()
    cached(store, CountingScorer()).score_products("drill", IDS[:1], TITLES[:1])  # P1 in the store
    assert store.flush(5)
    store.reads.clear()
    scorer = CountingScorer()
    fresh = cached(store, scorer)
    assert fresh.cached_only("drill", IDS, TITLES) is None and store.reads == [3]
    # the search goes on to score: nothing read again, each pair counted once, only the two missing scored
    assert fresh.score_products("drill", IDS, TITLES).tolist() == [5, 12, 11]
    assert store.reads == [3] and scorer.seen == TITLES[1:]
    assert (fresh.store_counts.hits, fresh.store_counts.misses) == (1, 2)
    assert (fresh.cache.hits, fresh.cache.misses) == (0, 3)
    # the lookup stands only for the same pairs, once, and briefly
    other = cached(store, CountingScorer())
    assert other.cached_only("drill", IDS, TITLES) is None
    other.score_products("drill", IDS[:2], TITLES[:2])  # other pairs: looked up afresh
    assert store.reads == [3, 3, 1]
    assert other.cached_only("hose", IDS, TITLES) is None
    monkeypatch.setattr("ranking.cache.MEMO_S", 0.0)
    other.score_products("hose", IDS, TITLES)  # too old: looked up again
    assert store.reads == [3, 3, 1, 3, 3]


def test_model_version_and_product_text_change_read_other_keys() -> None:
    store = FakeStore()
    cached(store, CountingScorer()).score_products("drill", IDS, TITLES)
    store.flush(5)
    swapped = CountingScorer(offset=100)
    v2 = cached(store, swapped, model="reranker:v2:int8:40:bb")
    assert v2.score_products("drill", IDS, TITLES).tolist() == [105, 112, 111] and swapped.seen == TITLES
    renamed = CountingScorer(offset=100)
    v1 = cached(store, renamed)
    # P2's title changed: its old score is not served, the others are
    assert v1.score_products("drill", IDS, ["drill", "hammer drill 20v", "garden hose"]).tolist() == [5, 116, 11]
    assert renamed.seen == ["hammer drill 20v"]
    # the in-memory tier is keyed by the text too
    assert v1.score_products("drill", ["P2"], ["hammer drill"]).tolist() == [12]
    assert score_key("m", "q", "P1", text_hash("a")) != score_key("m", "q", "P1", text_hash("b"))


def test_store_failure_still_scores_counts_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore(retry_s=0.3)
    store.down = True
    scorer = CountingScorer()
    first = cached(store, scorer, size=0)
    with caplog.at_level("WARNING", logger="ranking.score_store"):
        for _ in range(5):
            assert first.score_products("drill", IDS, TITLES).tolist() == [5, 12, 11]
    assert store.flush(5)
    # reads and the writer's writes fail; after 3 errors in a row the store is left alone
    assert store.errors >= 3 and store.skipped >= 1 and store.errors + store.skipped <= 5 + 5
    assert store.dropped == 15 and store.data == {}  # nothing written while it is down (counted)
    assert len([r for r in caplog.records if "score store" in r.message]) == 1  # logged once per interval
    time.sleep(0.35)
    store.down = False
    first.score_products("drill", IDS, TITLES)  # tried again after retry_s
    assert store.flush(5) and len(store.data) == 3


def test_one_failed_read_does_not_leave_the_store_alone() -> None:
    store = FakeStore()
    store.down = True
    assert store.get_many(["a"]) == [None]
    store.down = False
    store.data["a"] = 1.0
    assert store.get_many(["a"]) == [1.0] and store.errors == 1 and store.skipped == 0


def test_write_failure_is_counted_and_the_writer_survives() -> None:
    store = FakeStore(retry_s=60.0)
    store.down = True
    store.put_many([("a", 1.0), ("b", 2.0)])
    assert store.flush(5) and store.dropped == 2 and store.errors == 1
    store.down = False
    store.put_many([("c", 3.0)])
    assert store.flush(5) and store.data == {"c": 3.0}


class BlockedStore(FakeStore):
    """A store whose writes wait for ``release`` (a slow disk or network)."""

    def __init__(self, queue_size: int) -> None:
        self.writing, self.release = threading.Event(), threading.Event()
        super().__init__(queue_size=queue_size)

    def _write(self, items: Sequence[tuple[str, float]]) -> None:
        self.writing.set()
        self.release.wait(10)
        super()._write(items)


def test_full_write_queue_drops_instead_of_blocking() -> None:
    store = BlockedStore(queue_size=2)
    store.put_many([("first", 0.0)])
    assert store.writing.wait(5)  # the writer holds "first" and waits
    started = time.monotonic()
    assert store.put_many([(f"k{i}", float(i)) for i in range(5)]) == 3  # 2 fit in the queue
    assert time.monotonic() - started < 0.5 and store.dropped == 3
    store.release.set()
    assert store.flush(5) and sorted(store.data) == ["first", "k0", "k1"]


def test_unregistered_model_uses_memory_only(tmp_path: Path) -> None:
    assert model_tag("reranker", "v1", None, "int8", 40) is None
    assert model_tag("reranker", "v1", tmp_path, "int8", 40) is None
    (tmp_path / "manifest.json").write_text(json.dumps({"created": "2026-01-01T00:00:00+00:00"}))
    tag = model_tag("reranker", "v1", tmp_path, "int8", 40)
    assert tag is not None and tag.startswith("reranker:v1:int8:40:")
    assert model_tag("reranker", "v1", tmp_path, "fp32", 40) != tag
    store = FakeStore()
    plain = cached(store, CountingScorer(), model=None)
    plain.score_products("drill", IDS, TITLES)
    assert store.flush(5) and store.data == {} and store.reads == []


def test_a_model_tag_names_the_registered_files_else_the_registration_time(tmp_path: Path) -> None:
    """What the docs say keys the score store: the files' checksums where the manifest has them (the same
    weights registered twice share scores, other weights never do), else the registration time."""
    def tag(folder: str, manifest: dict) -> str | None:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "manifest.json").write_text(json.dumps(manifest))
        return model_tag("reranker", "v1", tmp_path / folder, "fp32", 48)

    files = {"model.onnx": "sha256:aa"}
    assert tag("a", {"created": "2026-01-01", "files": files}) == tag("b", {"created": "2026-06-01", "files": files})
    assert tag("c", {"created": "2026-01-01", "files": files}) != tag("d", {"created": "2026-01-01",
                                                                             "files": {"model.onnx": "sha256:bb"}})
    assert tag("e", {"created": "2026-01-01"}) != tag("f", {"created": "2026-06-01"})


def test_sqlite_store_is_shared_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "scores.sqlite"
    a, b = SqliteScoreStore(path), SqliteScoreStore(path)
    a.put_many([("k1", 1.5), ("k2", -2.0)])
    assert a.flush(5)
    assert b.get_many(["k1", "k2", "k3"]) == [1.5, -2.0, None]
    a.close()
    b.close()
    restarted = SqliteScoreStore(path)
    assert restarted.get_many(["k2", "k1"]) == [-2.0, 1.5]
    assert restarted.prune(3600) == 0 and restarted.prune(0) == 2 and restarted.get_many(["k1"]) == [None]
    restarted.close()
    import sqlite3

    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_store_reads_many_keys_in_chunks(tmp_path: Path) -> None:
    store = SqliteScoreStore(tmp_path / "scores.sqlite")
    store.put_many([(f"k{i}", float(i)) for i in range(2000)], block=True)
    assert store.flush(10) and store.written == 2000
    assert store.get_many([f"k{i}" for i in range(1999, -1, -1)]) == [float(i) for i in range(1999, -1, -1)]
    store.close()


def test_a_score_that_is_no_number_is_not_shared_and_fails_nothing(tmp_path: Path) -> None:
    """A model's NaN (or inf) is not written; the scores queued with it are: before, sqlite refused the NaN
    (NOT NULL) and the whole batch with it, counted as a store failure."""
    store = SqliteScoreStore(tmp_path / "scores.sqlite")
    dropped = store.put_many([(f"k{i}", float(i)) for i in range(10)] + [("nan", float("nan")),
                                                                         ("inf", np.float32("inf"))])
    store.flush(5)
    assert dropped == 2 and store.errors == 0 and store.available
    assert store.get_many(["k0", "k9", "nan", "inf"]) == [0.0, 9.0, None, None]
    store.close()


@pytest.mark.integration
def test_sqlite_store_shared_by_two_processes(tmp_path: Path) -> None:
    path = tmp_path / "scores.sqlite"
    writer = ("import sys; from pathlib import Path; from ranking.score_backends import SqliteScoreStore; "
              "s = SqliteScoreStore(Path(sys.argv[1])); s.put_many([(f'{sys.argv[2]}{i}', float(i)) "
              "for i in range(300)], block=True); s.close()")
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(path), name], cwd=ROOT) for name in ("a", "b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    reader = SqliteScoreStore(path)
    assert reader.get_many(["a0", "a299", "b150", "c1"]) == [0.0, 299.0, 150.0, None]
    assert reader.errors == 0
    reader.close()


def test_each_tier_is_exported_on_metrics() -> None:
    from prometheus_client import generate_latest

    from api.metrics import Metrics

    store = FakeStore()
    scorer = cached(store, CountingScorer())
    scorer.score_products("drill", IDS, TITLES)
    scorer.score_products("drill", IDS, TITLES)
    store.flush(5)
    metrics = Metrics()
    metrics.watch(lambda: {"caches": {"reranker_scores": scorer.cache, "reranker_scores_store": scorer.store_counts,
                                      "score_store": store}})
    text = generate_latest(metrics.registry).decode()
    assert 'shoprank_cache_lookups_total{cache="reranker_scores",result="hit"} 3.0' in text
    assert 'shoprank_cache_lookups_total{cache="reranker_scores_store",result="miss"} 3.0' in text
    assert 'shoprank_score_store_events_total{event="written"} 3.0' in text
    assert 'shoprank_cache_entries{cache="reranker_scores"} 3.0' in text


def test_query_vectors_share_the_store_with_scores(tmp_path: Path) -> None:
    """Vectors are float32 bytes under their own keys: read back exactly, by another process's
    store object and after a restart; a score key or a vector of another size reads as None."""
    from ranking.cache import SharedQueryVectors
    from ranking.score_store import vector_key

    path = tmp_path / "scores.sqlite"
    a, b = SqliteScoreStore(path), SqliteScoreStore(path)
    vectors = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    counts = TierCounts()
    writer, reader = SharedQueryVectors(a, "enc1", 8), SharedQueryVectors(b, "enc1", 8, counts)
    writer.put(["cordless drill", "garden hose"], vectors)
    a.put_many([("k1", 1.5)])
    assert a.flush(5) and a.written == 3
    found = reader.get(["garden hose", "cordless drill", "hammer"])
    assert np.array_equal(found[0], vectors[1]) and np.array_equal(found[1], vectors[0]) and found[2] is None
    assert (counts.hits, counts.misses) == (2, 1)
    assert SharedQueryVectors(b, "enc2", 8).get(["garden hose"]) == [None]  # another encoder: other keys
    assert b.get_vectors([vector_key("enc1", "garden hose")], 16) == [None]  # not a 16-vector
    assert b.get_vectors(["k1"], 8) == [None] and b.get_many(["k1"]) == [1.5]
    a.close()
    b.close()
    restarted = SqliteScoreStore(path)
    assert np.array_equal(SharedQueryVectors(restarted, "enc1", 8).get(["cordless drill"])[0], vectors[0])
    restarted.close()


def test_dense_retriever_reads_the_shared_tier_before_encoding() -> None:
    """A vector in the shared tier is not encoded again (a second process, or after a restart);
    one encoded here goes to both tiers; a store outage only means encoding."""
    from ranking.cache import SharedQueryVectors
    from retrieval.hybrid import DenseRetriever

    class Encoder:
        dim = 4
        fingerprint = "enc"

        def __init__(self) -> None:
            self.encoded: list[str] = []

        def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
            self.encoded += list(texts)
            return np.array([[len(t), 1.0, 0.0, 0.0] for t in texts], dtype=np.float32)

    store = FakeStore()
    first, second = Encoder(), Encoder()
    one = DenseRetriever(None, first, LRUCache(10), SharedQueryVectors(store, "enc", 4))  # type: ignore[arg-type]
    counts = TierCounts()
    two = DenseRetriever(None, second, LRUCache(10), SharedQueryVectors(store, "enc", 4, counts))  # type: ignore[arg-type]
    v1 = one.embed(["drill", "hose"])
    assert first.encoded == ["drill", "hose"] and store.flush(5)
    v2 = two.embed(["hose", "rake", "drill"])
    assert second.encoded == ["rake"]  # drill and hose came from the shared tier
    assert np.array_equal(v2[0], v1[1]) and np.array_equal(v2[2], v1[0])
    assert (counts.hits, counts.misses) == (2, 1)
    two.embed(["drill"])
    assert (counts.hits, counts.misses) == (2, 1)  # the in-memory LRU answered first
    store.down = True
    three = DenseRetriever(None, Encoder(), LRUCache(10), SharedQueryVectors(store, "enc", 4))  # type: ignore[arg-type]
    assert np.array_equal(three.embed(["drill"])[0], v1[0]) and three.encoder.encoded == ["drill"]  # type: ignore[attr-defined]


def test_result_pages_age_and_expired_ones_are_deleted(tmp_path: Path) -> None:
    import sqlite3
    import time

    from ranking.score_store import page_key

    path = tmp_path / "scores.sqlite"
    writer, reader = SqliteScoreStore(path, page_ttl_s=0.3), SqliteScoreStore(path, page_ttl_s=0.3)
    writer.put_page(page_key("a"), b"first")
    writer.put_many([("reranker:v1:x", 0.5)])
    assert writer.flush(5)
    payload, age = reader.get_page(page_key("a"), 0.3)
    assert payload == b"first" and 0 <= age < 0.3
    assert reader.get_page(page_key("b"), 0.3) is None
    time.sleep(0.4)
    assert reader.get_page(page_key("a"), 0.3) is None  # too old to serve
    writer.put_page(page_key("b"), b"second")  # this write deletes the expired page, not the scores
    assert writer.flush(5)
    with sqlite3.connect(path) as db:
        keys = {k for (k,) in db.execute("SELECT key FROM scores")}
    assert keys == {page_key("b"), "reranker:v1:x"}
    assert reader.get_many(["reranker:v1:x"]) == [0.5]
    writer.close()
    reader.close()
