"""One root error for the service; each subclass carries its HTTP status.

``api/errors.py`` maps every :class:`ShopRankError` to a JSON response with that
status, and the CLI prints the message and exits non-zero. Messages say what was
wrong, the actual value, what is allowed and how to fix it.
"""

from __future__ import annotations


class ShopRankError(Exception):
    """Root of all errors ShopRank raises on purpose."""

    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ShopRankError):
    """The caller passed a value outside what is allowed (HTTP 422)."""

    http_status = 422


class CatalogError(InvalidInput):
    """A catalog file has a bad row; the message names the file, row and column."""


class NotFound(ShopRankError):
    """A named thing (index, product, model version) does not exist (HTTP 404)."""

    http_status = 404


class Conflict(ShopRankError):
    """Two things that must match do not, e.g. an index and the encoder serving it (HTTP 409)."""

    http_status = 409


class NotReady(ShopRankError):
    """A model or index is not loaded yet, or something it needs is out of reach (HTTP 503, with
    ``Retry-After`` seconds: 2 unless told)."""

    http_status = 503

    def __init__(self, message: str, retry_after: float = 2.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotPublished(ShopRankError):
    """A change this server made and serves that it could not upload to the artifact store, so the other
    replicas do not get it (HTTP 502: the store, a service behind this one, failed; no ``Retry-After``, and not
    a status a proxy retries: the change is made, and a repeated rollback would go one version further back).
    ``shoprank artifacts push --state-only`` publishes it."""

    http_status = 502


class Overloaded(NotReady):
    """A server process has been at its capacity (``serving.max_in_flight``) for as long as the request may
    wait (HTTP 503, with ``Retry-After`` seconds)."""


class Unauthorized(ShopRankError):
    """No credentials, or credentials that are unknown or revoked (HTTP 401)."""

    http_status = 401


class Forbidden(ShopRankError):
    """Valid credentials without the right to this store or scope (HTTP 403)."""

    http_status = 403


class TooManyRequests(ShopRankError):
    """A client is over its request rate (HTTP 429, with ``Retry-After`` seconds)."""

    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
