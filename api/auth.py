"""API keys on the HTTP API: who may call what, and how often.

With ``api.keys_required`` every search, event and admin call needs a key of the
served store with the route's scope (``search``, ``events``, ``admin``), sent as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``: no key or an unknown or
revoked one is a 401; another store's key or a missing scope is a 403. With
``api.rate_limit_per_s`` each key has a token bucket; a call over it is refused
with 429 and ``Retry-After`` (events included: refused, never dropped silently).
The bucket is each server process's own, or with ``api.rate_limit_store: redis``
one per key in Redis that every process and replica takes from (:class:`SharedRateLimiter`).
Probes (``/healthz``, ``/readyz``) and ``/metrics`` need no key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Header, Request

from api.stores import current
from core.errors import Forbidden, TooManyRequests, Unauthorized
from core.keys import ApiKey
from core.settings import Settings

logger = logging.getLogger(__name__)


class RateLimiter:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str, now: float | None = None) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                self.refuse(key_id, tokens)
            self._buckets[key_id] = (tokens - 1.0, now)

    def refuse(self, key_id: str, tokens: float) -> None:
        wait = (1.0 - tokens) / self.rate
        raise TooManyRequests(f"key {key_id} is over its limit of {self.rate:g} requests/s "
                              f"(burst {self.burst}); retry in {wait:.2f} s", retry_after=wait)

    def close(self) -> None:
        """Nothing to let go of (a shared limiter closes its connection)."""


# one atomic step of a key's bucket, on Redis's clock (the replicas' own clocks may differ): refill since the
# last call, take a token when there is one; the bucket expires once it would be full again anyway (at most
# after 30 days: an integer EXPIRE takes, for the slowest rate allowed)
TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens, last = tonumber(saved[1]) or burst, tonumber(saved[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local taken = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(now))
redis.call('EXPIRE', KEYS[1], math.min(math.ceil(burst / rate) + 1, 2592000))
return {taken, tostring(tokens)}
"""


class SharedRateLimiter(RateLimiter):
    """One token bucket per key in Redis, taken from by every server process and replica (a Lua script: each
    step is atomic). When Redis does not answer within ``timeout_s``, the process's own bucket
    (:class:`RateLimiter`) limits instead, and Redis is left alone for ``retry_s``: overload is still
    refused, and no more than one call in ``retry_s`` waits on an outage. ``fallbacks`` counts the calls
    limited by the process's bucket; the error is logged at most once a minute."""

    prefix = "shoprank:rate:"

    def __init__(self, rate: float, burst: int, url: str, store: str, timeout_s: float = 0.1,
                 retry_s: float = 5.0) -> None:
        import redis

        super().__init__(rate, burst)
        self.url, self.store, self.retry_s = url, store, retry_s
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._take = self.client.register_script(TAKE)
        self.fallbacks = 0
        self._logged = self._down_until = float("-inf")

    def take(self, key_id: str, now: float | None = None) -> None:
        import redis

        if self.rate <= 0:
            return
        if time.monotonic() < self._down_until:
            self.fallbacks += 1
            super().take(key_id, now)
            return
        try:
            taken, tokens = self._take(keys=[f"{self.prefix}{self.store}:{key_id}"], args=[self.rate, self.burst])
        except redis.RedisError as error:
            self.fallbacks += 1
            self._down_until = time.monotonic() + self.retry_s
            if time.monotonic() - self._logged > 60:
                self._logged = time.monotonic()
                logger.warning("rate limit store %s unreachable (%s): each process limits keys on its own for "
                               "%.0f s, then tries it again", self.url, error, self.retry_s)
            super().take(key_id, now)
            return
        if not int(taken):
            self.refuse(key_id, float(tokens))

    def close(self) -> None:
        self.client.close()


def open_limiter(settings: Settings) -> RateLimiter:
    """The limiter ``api.rate_limit_store`` names, at ``api.rate_limit_per_s`` and ``api.rate_burst``."""
    api = settings.api
    if api.rate_limit_store == "redis" and api.rate_limit_per_s > 0:
        return SharedRateLimiter(api.rate_limit_per_s, api.rate_burst, api.rate_limit_url, settings.store_name)
    return RateLimiter(api.rate_limit_per_s, api.rate_burst)


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key of ``X-API-Key``, else of ``Authorization: Bearer <key>`` (the scheme in any case, as HTTP
    reads it); another scheme is a 401 naming it."""
    if x_api_key:
        return x_api_key.strip()
    if not authorization or not authorization.strip():
        return None
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized(f"the Authorization scheme {scheme[:20]!r} is not supported: send "
                           "'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    return key.strip() or None


def check_key(request: Request, settings: Settings, scope: str, key: str | None) -> ApiKey:
    """The key's record when it may call ``scope`` on the served store now; else the 401/403/429."""
    if not key:
        raise Unauthorized("this API needs a key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
                           "(an operator creates one with `shoprank keys create --scope ...`)")
    record = request.app.state.keys.verify(key)
    if record is None:
        raise Unauthorized("the API key is unknown or revoked; ask for a new one (`shoprank keys create`)")
    store = settings.store_name
    if record.store != store:
        raise Forbidden(f"key {record.id} is for store {record.store!r}, not {store!r}")
    if scope not in record.scopes:
        raise Forbidden(f"key {record.id} has scopes {list(record.scopes)}; this call needs {scope!r}")
    request.app.state.limiter.take(record.id)
    return record


def require(scope: str) -> Callable[..., ApiKey | None]:
    """A route dependency: the caller's key must allow ``scope`` (when keys are required)."""

    def dependency(request: Request, authorization: Annotated[str | None, Header()] = None,
                   x_api_key: Annotated[str | None, Header()] = None) -> ApiKey | None:
        settings: Settings = current(request).settings  # the store the route serves
        if not settings.api.keys_required:
            return None
        return check_key(request, settings, scope, presented_key(authorization, x_api_key))

    return dependency
