"""The Redis score store against a real redis-server started by the test (127.0.0.1, a free port)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.cache import LRUCache
from core.settings import Settings
from online_learning.local_broker import free_port
from ranking.cache import CachedScorer, TierCounts
from ranking.score_backends import RedisScoreStore, open_score_store
from ranking.score_store import page_key
from tests.ranking.test_score_cache import IDS, TITLES, CountingScorer

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server not installed (make test installs it)")]


def start_redis(port: int, folder: Path) -> subprocess.Popen:
    server = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.terminate()
    pytest.fail(f"redis-server did not listen on 127.0.0.1:{port} within 10 s")


@pytest.fixture()
def redis_port(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen]]:
    port = free_port()
    server = start_redis(port, tmp_path)
    yield port, server
    if server.poll() is None:
        server.terminate()
        server.wait(timeout=10)


def test_redis_store_is_shared_and_expires(redis_port: tuple[int, subprocess.Popen]) -> None:
    port, _ = redis_port
    url = f"redis://127.0.0.1:{port}/0"
    settings = Settings(serving={"score_store": "redis", "score_store_url": url, "score_store_ttl_days": 1})
    a = open_score_store(settings)
    assert isinstance(a, RedisScoreStore)
    b = RedisScoreStore(url)
    a.put_many([("k1", 0.25), ("k2", -3.5)])
    assert a.flush(5) and a.written == 2
    assert b.get_many(["k2", "k1", "nope"]) == [-3.5, 0.25, None]
    ttl = b.client.ttl(RedisScoreStore.prefix + "k1")
    assert 86000 < ttl <= 86400  # score_store_ttl_days=1
    vector = np.arange(6, dtype=np.float32) / 7  # query vectors: float32 bytes, exact
    a.put_vectors([("qv:enc:1", vector)])
    assert a.flush(5)
    found = b.get_vectors(["qv:enc:1", "k1", "qv:enc:2"], 6)
    assert np.array_equal(found[0], vector) and found[1:] == [None, None]
    a.put_page(page_key("request"), b'{"page": 1}')  # result pages expire after results_ttl_s (60 s)
    assert a.flush(5)
    payload, age = b.get_page(page_key("request"), 60)
    assert payload == b'{"page": 1}' and 0 <= age < 5
    assert 0 < b.client.ttl(RedisScoreStore.prefix + page_key("request")) <= 60
    assert b.get_page(page_key("request"), 0.0) is None  # older than a caller's limit
    a.close()
    b.close()


def test_a_ttl_under_a_second_is_one_second_not_never() -> None:
    """Only a TTL of 0 keeps scores for good; a fraction of a second is rounded up (before: int() made it 0)."""
    ttl = {}
    for days in (0, 0.00001, 1.5):
        store = RedisScoreStore("redis://127.0.0.1:1/0", ttl_s=days * 86400)  # never reached: nothing is written
        ttl[days] = store.ttl
        store.close()
    assert ttl == {0: None, 0.00001: 1, 1.5: 129600}


def test_searches_keep_scoring_when_redis_stops(redis_port: tuple[int, subprocess.Popen], tmp_path: Path) -> None:
    port, server = redis_port
    store = RedisScoreStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.05, retry_s=0.3)
    model = "reranker:v1:int8:40:aa"
    first = CachedScorer(CountingScorer(), LRUCache(0), store, model, TierCounts())
    assert first.score_products("drill", IDS, TITLES).tolist() == [5, 12, 11]
    assert store.flush(5)
    again = CountingScorer(offset=100)
    reader = CachedScorer(again, LRUCache(0), store, model, TierCounts())
    assert reader.score_products("drill", IDS, TITLES).tolist() == [5, 12, 11] and again.seen == []

    server.terminate()
    server.wait(timeout=10)
    started = time.monotonic()
    for _ in range(20):  # Redis is gone: every search still gets its scores (from the model)
        scores = reader.score_products("drill", IDS, TITLES)
        assert np.array_equal(scores, [105, 112, 111])
    assert time.monotonic() - started < 2.0  # one failed read, then the store is left alone
    assert store.errors >= 1 and store.skipped >= 15 and reader.store_counts.hits == 3

    restarted = start_redis(port, tmp_path)  # an empty Redis on the same port
    try:
        time.sleep(0.35)  # past retry_s: the store is tried again
        reader.score_products("drill", IDS, TITLES)
        assert store.flush(5)
        fresh = CountingScorer(offset=200)
        assert CachedScorer(fresh, LRUCache(0), store, model, TierCounts()).score_products(
            "drill", IDS, TITLES).tolist() == [105, 112, 111]
        assert fresh.seen == []  # written after the restart, read back
    finally:
        store.close()
        restarted.terminate()
        restarted.wait(timeout=10)
