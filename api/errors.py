"""One place that turns errors into JSON responses.

:class:`~core.errors.ShopRankError` subclasses carry their HTTP status;
request validation errors become 422 with a message naming each bad field,
the value sent and what is allowed.
"""

from __future__ import annotations

import logging
import math
import re

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from core.errors import ShopRankError

logger = logging.getLogger(__name__)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]  # the location, not a field name
    return ".".join(parts) or "body"


def _describe(error: dict) -> str:
    value = error.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    if isinstance(value, str) and len(value) > 40:
        shown = repr(value[:40] + "...") + f" ({len(value)} chars)"
    message = error.get("msg", "invalid value").removeprefix("Value error, ")
    return f"{_field(error.get('loc', ()))}: {message} (got {shown})"


def install(app: FastAPI) -> None:
    @app.exception_handler(ShopRankError)
    async def _service_error(request: Request, exc: ShopRankError) -> JSONResponse:
        if exc.http_status >= 500:
            logger.error("request %s failed: %s", getattr(request.state, "request_id", "-"), exc.message)
        retry_after = getattr(exc, "retry_after", None)
        return JSONResponse(
            status_code=exc.http_status,
            content={"error": _snake(type(exc).__name__), "message": exc.message,
                     "request_id": getattr(request.state, "request_id", None)},
            headers={"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        message = "; ".join(_describe(e) for e in errors) or "invalid request"
        return JSONResponse(
            status_code=422,
            content={"error": "invalid_request", "message": message,
                     "request_id": getattr(request.state, "request_id", None),
                     "detail": jsonable_encoder(errors, custom_encoder={Exception: str})},
        )
