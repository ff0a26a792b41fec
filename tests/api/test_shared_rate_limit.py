"""A key's rate limit shared by every server process and replica: one token bucket per key in a real
redis-server started by the test (127.0.0.1, a free port)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import redis

from api.auth import RateLimiter, SharedRateLimiter, open_limiter
from core.errors import TooManyRequests
from core.settings import Settings
from online_learning.local_broker import free_port
from tests.ranking.test_redis_score_store import start_redis

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server not installed (make test installs it)")]


def test_processes_take_from_one_bucket_and_fall_back_to_their_own_without_redis(tmp_path: Path) -> None:
    port = free_port()
    server = start_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    settings = Settings(home=tmp_path, api={"rate_limit_per_s": 0.5, "rate_burst": 3, "rate_limit_store": "redis",
                                            "rate_limit_url": url})
    first = open_limiter(settings)
    second = SharedRateLimiter(0.5, 3, url, settings.store_name)  # another process, or a replica
    try:
        assert isinstance(first, SharedRateLimiter)
        for limiter in (first, second, first):  # the burst of 3, taken by two processes together
            limiter.take("k1")
        with pytest.raises(TooManyRequests) as refused:
            second.take("k1")  # before: each process had a burst (and a rate) of its own
        assert 0 < refused.value.retry_after <= 2.0 and "over its limit of 0.5 requests/s" in str(refused.value)
        second.take("k2")  # buckets are per key
        client = redis.Redis.from_url(url)
        bucket = f"shoprank:rate:{settings.store_name}:k1"
        assert 0 < client.ttl(bucket) <= 7  # gone once it would be full again (3 tokens at 0.5/s, + 1 s)
        client.close()
        server.terminate()
        server.wait(timeout=10)
        started = time.monotonic()
        for _ in range(3):  # Redis is down: this process's own bucket limits, at once
            first.take("k1")
        with pytest.raises(TooManyRequests):
            first.take("k1")
        assert first.fallbacks == 4 and time.monotonic() - started < 2.0
        assert first._down_until > time.monotonic()  # left alone a while: calls do not each wait on the outage
        slow = SharedRateLimiter(1e-6, 100_000, f"redis://127.0.0.1:{port}/0", "s")  # once every 11 days
        server = start_redis(port, tmp_path)
        slow.take("k3")  # before: EXPIRE 1e+11 failed after HSET, every call charged twice and the key kept forever
        assert slow.fallbacks == 0 and 0 < redis.Redis.from_url(url).ttl("shoprank:rate:s:k3") <= 2592000
        slow.close()
    finally:
        first.close()
        second.close()
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)


def test_each_process_keeps_its_own_bucket_by_default() -> None:
    assert type(open_limiter(Settings(api={"rate_limit_per_s": 5}))) is RateLimiter
    assert type(open_limiter(Settings(api={"rate_limit_store": "redis"}))) is RateLimiter  # no limit: no Redis
    with pytest.raises(ValueError, match="rate_limit_url"):
        Settings(api={"rate_limit_url": "http://cache:6379"})
