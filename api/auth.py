"""API keys on the HTTP API: who may call what, and how often.

With ``api.keys_required`` every search, event and admin call needs a key of the
served store with the route's scope (``search``, ``events``, ``admin``), sent as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``: no key or an unknown or
revoked one is a 401; another store's key or a missing scope is a 403. With
``api.rate_limit_per_s`` each key has a token bucket; a call over it is refused
with 429 and ``Retry-After`` (events included: refused, never dropped silently).
Probes (``/healthz``, ``/readyz``) and ``/metrics`` need no key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Header, Request

from api.stores import current
from core.errors import Forbidden, TooManyRequests, Unauthorized
from core.keys import ApiKey
from core.settings import Settings


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
                wait = (1.0 - tokens) / self.rate
                raise TooManyRequests(f"key {key_id} is over its limit of {self.rate:g} requests/s "
                                      f"(burst {self.burst}); retry in {wait:.2f} s", retry_after=wait)
            self._buckets[key_id] = (tokens - 1.0, now)


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
