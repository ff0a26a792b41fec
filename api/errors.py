"""One place that turns errors into JSON responses.

:class:`~core.errors.ShopRankError` subclasses carry their HTTP status;
request validation errors become 422 with a message naming each bad field,
the value sent and what is allowed, as does a JSON body the JSON reader cannot
take (not UTF-8, an integer of thousands of digits, nesting thousands deep).
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import threading
import time

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from core.errors import Overloaded, ShopRankError, Unauthorized

logger = logging.getLogger(__name__)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]  # the location, not a field name
    return ".".join(parts) or "body"


_BRANCH = re.compile(r"^(constrained-str|str|list\[.*\])$")  # pydantic's name for a branch of ``str | list[str]``


def one_reading(errors: list[dict]) -> list[dict]:
    """Validation errors of a field that takes one value or a list (a filter's ``category``): of pydantic's two
    readings, only the one of what was sent (a list's errors for a list, else the one value's), located at the
    field, not at pydantic's name of the branch (``filters.category.list[constrained-str].0`` -> ``.0``)."""
    out = []
    for error in errors:
        loc = list(error.get("loc", ()))
        branch = next((i for i, part in enumerate(loc) if isinstance(part, str) and _BRANCH.match(part)), None)
        if branch is None:
            out.append(error)
            continue
        rest, sent_list = loc[branch + 1:], isinstance(error.get("input"), list)
        if loc[branch].startswith("list["):
            keep = bool(rest) or sent_list  # an element's error, or the list's own (too long)
        else:
            keep = not sent_list  # the one value's reading of a list: not what was sent
        if keep:
            out.append({**error, "loc": (*loc[:branch], *rest)})
    return out


def _brief(error: dict) -> dict:
    """A validation error as the answer's ``detail`` lists it: a whole body sent as text (no JSON content type)
    is not echoed back, only its size."""
    value = error.get("input")
    if isinstance(value, (str, bytes)) and len(value) > 200:
        return {**error, "input": f"{len(value)} {'chars' if isinstance(value, str) else 'bytes'} not shown"}
    return error


def _describe(error: dict) -> str:
    value = error.get("input")
    message = error.get("msg", "invalid value").removeprefix("Value error, ")
    if error.get("type") == "json_invalid":  # loc: ("body", character offset)
        reason = (error.get("ctx") or {}).get("error", "")
        offset = error["loc"][-1] if len(error.get("loc", ())) > 1 else "?"
        return f"body: not valid JSON at character {offset}{': ' + reason if reason else ''}"
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    if isinstance(value, (str, bytes)) and len(value) > 40:
        shown = repr(value[:40] + ("..." if isinstance(value, str) else b"...")) + f" ({len(value)} " \
            f"{'chars' if isinstance(value, str) else 'bytes'})"
    if isinstance(value, (bytes, str)) and error.get("type") in ("model_attributes_type", "dict_type", "list_type") \
            and _field(error.get("loc", ())) == "body":
        message += "; send the JSON with the header Content-Type: application/json"
    return f"{_field(error.get('loc', ()))}: {message} (got {shown})"


# one escape of a JSON string, read left to right: \\uXXXX (its code in group 1) or a backslash and the character
# it escapes (so an escaped backslash is one escape, and the text after it is no escape)
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)


def not_utf8(body: bytes) -> str | None:
    """What is wrong with a JSON ``body`` in UTF-16 or UTF-32, which Python's JSON reader takes (by its first
    bytes) but the checks of a body's bytes cannot read (:func:`lone_surrogate`, :func:`read_body`'s): JSON
    exchanged between systems is UTF-8 (RFC 8259); None for UTF-8 (a byte-order mark allowed)."""
    encoding = json.detect_encoding(body) if body else "utf-8"
    if encoding in ("utf-8", "utf-8-sig"):
        return None
    return f"body: JSON in {encoding.upper()} (by its first bytes); send it in UTF-8 (RFC 8259)"


def lone_surrogate(body: bytes) -> str | None:
    """What is wrong with a JSON ``body`` that escapes half a UTF-16 surrogate pair (``"\\ud800"``): Python's
    JSON reader takes it as a string no UTF-8 text can hold, which would fail later (the event log, the
    answer); None when there is none. A pair is a high half (D800-DBFF) right before a low one (DC00-DFFF)."""
    if b"\\u" not in body:
        return None
    high = None  # a high half's escape, waiting for the low half right after it
    for found in _ESCAPE.finditer(body):
        code = int(found.group(1), 16) if found.group(1) else None
        if high is not None:
            if code is not None and 0xDC00 <= code <= 0xDFFF and found.start() == high.end():
                high = None
                continue
            break
        if code is not None and 0xD800 <= code <= 0xDBFF:
            high = found
        elif code is not None and 0xDC00 <= code <= 0xDFFF:
            high = found  # a low half with no high one before it
            break
    if high is None:
        return None
    return (f"body: {high.group().decode()} at byte {high.start()} is half of a UTF-16 surrogate pair, not a "
            "character; send UTF-8 text (a character beyond U+FFFF escaped as a pair, e.g. \\ud83d\\ude00)")


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]', re.DOTALL)  # a string (skipped), an opening, a closing
# a string (group 1), with the colon that makes it a key (group 2); or a run of digits outside strings
_KEY_OR_DIGITS = re.compile(rb'"((?:[^"\\]|\\.)*)"(\s*:\s*-?)?|\d+', re.DOTALL)


def _nesting(body: bytes) -> tuple[int, int]:
    """How deep a JSON body's arrays and objects nest, and the byte where that depth is first reached."""
    depth = deepest = at = 0
    for token in _TOKEN.finditer(body):
        mark = token.group()[:1]
        if mark in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest, at = depth, token.start()
        elif mark in (b"]", b"}"):
            depth -= 1
    return deepest, at


def unreadable_body(body: bytes, error: BaseException) -> str | None:
    """What is wrong with a JSON ``body`` the JSON reader gave up on with ``error`` (malformed JSON aside, which
    it names itself): a byte that is not UTF-8, an integer longer than Python reads, nesting deeper than it
    recurses; None for another error."""
    if isinstance(error, UnicodeDecodeError):  # positions count from what was decoded (after a byte-order mark)
        at = error.start + len(body) - len(error.object)
        return (f"body: byte {at} (0x{error.object[error.start]:02x}) is not valid UTF-8 ({error.reason}); "
                "send the JSON as UTF-8 text (other characters as \\uXXXX escapes)")
    if isinstance(error, RecursionError):
        depth, at = _nesting(body)
        return (f"body: arrays and objects nested {depth} deep (from byte {at}) are more than the JSON reader "
                f"takes (about {sys.getrecursionlimit()} levels); a request of this API nests a few levels: send "
                "the fields its schema at /docs names")
    if isinstance(error, ValueError) and "integer string conversion" in str(error):
        return _long_integer(body)
    return None


def _long_integer(body: bytes) -> str:
    """What is wrong with a JSON body holding an integer of more digits than Python converts: where it is, the
    field it is the value of, and the limit."""
    limit, key = sys.get_int_max_str_digits(), None
    for token in _KEY_OR_DIGITS.finditer(body):
        if token.group(1) is not None:
            key = token if token.group(2) else None
            continue
        if token.end() - token.start() > limit:
            named = key is not None and key.end() == token.start()  # the key's value, not a later item
            field = f" (the value of {key.group(1).decode('utf-8', 'backslashreplace')!r})" if named else ""
            return (f"body: the integer at byte {token.start()}{field} has {token.end() - token.start()} digits; "
                    f"a number in a request has at most {limit} digits (each field's range is listed at /docs)")
        key = None
    return f"body: an integer has more than {limit} digits; a number in a request has at most {limit} digits"


async def read_body(request: Request, limit: int) -> str | None:
    """Read the request's body, kept for the route as ``Request.body()`` keeps it, unless it is over ``limit``
    bytes; then what is wrong: said from its Content-Length before any of it is read, or once the bytes read
    pass the limit (a body sent in chunks declares no length). None when it is within the limit."""
    declared = request.headers.get("content-length", "")
    advice = "split it into smaller calls (events and product updates: at most 1000 a call)"
    if declared.isdigit() and int(declared) > limit:
        return f"body: {int(declared)} bytes (Content-Length) is more than the {limit} a request may send " \
               f"(api.max_body_bytes); {advice}"
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return f"body: more than the {limit} bytes a request may send (api.max_body_bytes); {advice}"
        chunks.append(chunk)
    request._body = b"".join(chunks)  # where Request.body() keeps it: the route reads it from there
    return None


def too_large(request: Request, message: str) -> JSONResponse:
    """The 413 of a body over ``api.max_body_bytes``, answered before the request reaches a route. The connection
    is closed: the client may still be sending the rest of the body."""
    return JSONResponse(status_code=413, headers={"connection": "close"},
                        content={"error": "too_large", "message": message,
                                 "request_id": getattr(request.state, "request_id", None)})


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


def _routes(request: Request) -> list[tuple[re.Pattern[str], str, set[str]]]:
    """The API's routes: path pattern, path template and methods (from its OpenAPI paths, compiled once)."""
    table = getattr(request.app.state, "route_methods", None)
    if table is None:
        table = [(compile_path(path)[0], path, {m.upper() for m in operations})
                 for path, operations in request.app.openapi().get("paths", {}).items()]
        request.app.state.route_methods = table
    return table


def _methods(request: Request) -> list[str]:
    """The methods the API's routes take at the request's path."""
    found = set().union(*(methods for pattern, _, methods in _routes(request) if pattern.match(request.url.path)))
    return sorted(found) or ["GET"]


def route_of(request: Request) -> str | None:
    """The path template of the API route that takes the request's path and method (``/v1/stores/{store}/search``),
    for a request answered before routing; None when no route takes it."""
    return next((path for pattern, path, methods in _routes(request)
                 if request.method in methods and pattern.match(request.url.path)), None)


class OverloadLog:
    """At most one warning a ``every`` seconds for searches refused under overload, with how many were refused
    since the last: a line per refusal would flood the log when it matters most to read it (``/metrics``
    counts each one, as a 503 of its route)."""

    def __init__(self, every: float = 1.0, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.every, self.clock = every, clock
        self._lock = threading.Lock()
        self._last, self._refused = -math.inf, 0

    def refused(self, exc: Overloaded) -> None:
        with self._lock:
            self._refused += 1
            now = self.clock()
            if now - self._last < self.every:
                return
            count, self._refused, self._last = self._refused, 0, now
        logger.warning("%d search(es) refused under overload since the last line: %s", count, exc.message)


_overloads = OverloadLog()


def install(app: FastAPI) -> None:
    @app.exception_handler(ShopRankError)
    async def _service_error(request: Request, exc: ShopRankError) -> JSONResponse:
        if isinstance(exc, Overloaded):
            _overloads.refused(exc)
        elif exc.http_status >= 500:
            logger.error("request %s failed: %s", getattr(request.state, "request_id", "-"), exc.message)
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else {}
        if isinstance(exc, Unauthorized):  # the scheme a client answers with (RFC 9110: every 401 names one)
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(
            status_code=exc.http_status,
            content={"error": _snake(type(exc).__name__), "message": exc.message,
                     "request_id": getattr(request.state, "request_id", None)},
            headers=headers or None,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """A path no route serves (404), a method it does not take (405), in the shape of every other error; a
        JSON body the JSON reader gave up on (FastAPI's 400), a 422 naming what is wrong as other bad input."""
        if exc.status_code == 400 and exc.__cause__ is not None:
            problem = unreadable_body(await request.body(), exc.__cause__)
            if problem is not None:
                return invalid(request, problem)
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
        errors = one_reading(list(exc.errors()))
        message = "; ".join(_describe(e) for e in errors) or "invalid request"
        return JSONResponse(
            status_code=422,
            content=json_safe({"error": "invalid_request", "message": message,
                               "request_id": getattr(request.state, "request_id", None),
                               "detail": jsonable_encoder([_brief(e) for e in errors], custom_encoder={
                                   Exception: str, bytes: lambda b: b.decode("utf-8", "backslashreplace")})}),
        )
