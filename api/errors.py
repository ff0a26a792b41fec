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
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

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
    message = error.get("msg", "invalid value").removeprefix("Value error, ")
    if error.get("type") == "json_invalid":  # loc: ("body", character offset)
        reason = (error.get("ctx") or {}).get("error", "")
        offset = error["loc"][-1] if len(error.get("loc", ())) > 1 else "?"
        return f"body: not valid JSON at character {offset}{': ' + reason if reason else ''}"
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    if isinstance(value, str) and len(value) > 40:
        shown = repr(value[:40] + "...") + f" ({len(value)} chars)"
    if isinstance(value, (bytes, str)) and error.get("type") in ("model_attributes_type", "dict_type") and \
            _field(error.get("loc", ())) == "body":
        message += "; send the JSON with the header Content-Type: application/json"
    return f"{_field(error.get('loc', ()))}: {message} (got {shown})"


# a \\uXXXX escape of a UTF-16 surrogate that is not half of a pair, after an even run of backslashes
_LONE_SURROGATE = re.compile(rb"(?:^|[^\\])(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                             rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})")


def lone_surrogate(body: bytes) -> str | None:
    """What is wrong with a JSON ``body`` that escapes half a UTF-16 surrogate pair (``"\\ud800"``): Python's
    JSON reader takes it as a string no UTF-8 text can hold, which would fail later (the event log, the
    answer); None when there is none."""
    if b"\\u" not in body:
        return None
    found = _LONE_SURROGATE.search(body)
    if found is None:
        return None
    escape = found.group(1).decode()
    return (f"body: {escape} at byte {found.start(1)} is half of a UTF-16 surrogate pair, not a character; send "
            "UTF-8 text (a character beyond U+FFFF escaped as a pair, e.g. \\ud83d\\ude00)")


def internal(request: Request) -> JSONResponse:
    """The 500 of a fault no handler maps (logged by the caller with its traceback)."""
    return JSONResponse(status_code=500, content={
        "error": "internal_error", "message": "the server failed on this request; it is logged under the "
        "request_id: retry, or report it with the id", "request_id": getattr(request.state, "request_id", None)})


def invalid(request: Request, message: str) -> JSONResponse:
    """A 422 answered before the request reaches a route."""
    return JSONResponse(status_code=422, content={"error": "invalid_request", "message": message,
                                                  "request_id": getattr(request.state, "request_id", None)})


def json_safe(value: object) -> object:
    """``value`` as JSON can carry it: a non-finite float as its text, a string holding a lone UTF-16
    surrogate (which UTF-8 cannot encode) with it escaped, containers walked."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _methods(request: Request) -> list[str]:
    """The methods the API's routes take at the request's path (from its OpenAPI paths, compiled once)."""
    table = getattr(request.app.state, "route_methods", None)
    if table is None:
        table = [(compile_path(path)[0], {m.upper() for m in operations})
                 for path, operations in request.app.openapi().get("paths", {}).items()]
        request.app.state.route_methods = table
    found = set().union(*(methods for pattern, methods in table if pattern.match(request.url.path)))
    return sorted(found) or ["GET"]


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

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """A path no route serves (404), a method it does not take (405), in the shape of every other error."""
        name = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        if exc.status_code == 404:
            message = f"no route {request.url.path!r}; the API's routes are listed at /docs (OpenAPI: /openapi.json)"
        elif exc.status_code == 405:
            allowed = _methods(request)  # every route of the path (one route's Allow names only its own)
            message = f"{request.method} is not taken by {request.url.path!r}; it takes {', '.join(allowed)}"
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
        else:
            message = str(exc.detail)
        return JSONResponse(status_code=exc.status_code, headers=exc.headers,
                            content={"error": name, "message": message,
                                     "request_id": getattr(request.state, "request_id", None)})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        message = "; ".join(_describe(e) for e in errors) or "invalid request"
        return JSONResponse(
            status_code=422,
            content=json_safe({"error": "invalid_request", "message": message,
                               "request_id": getattr(request.state, "request_id", None),
                               "detail": jsonable_encoder(errors, custom_encoder={Exception: str})}),
        )
