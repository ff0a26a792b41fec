"""``/v1/search``: a query in, ranked products out; ``/v1/browse`` (no query) and ``/v1/suggest``."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from typing import Annotated, Any, Literal
from urllib.parse import unquote_to_bytes

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.admission import yield_to_models
from api.auth import require
from api.deps import ServedDep
from api.errors import one_reading
from api.schemas import (
    INVALID,
    MAX_K,
    MAX_QUERY_CHARS,
    MAX_SUGGESTIONS,
    RATE_LIMITED,
    UNKNOWN_STORE,
    BrowseItem,
    BrowseRequest,
    BrowseResponse,
    ErrorBody,
    Explanation,
    Facets,
    FilterValue,
    IndexInfo,
    QueryRewrite,
    RewriteItem,
    SearchItem,
    SearchRequest,
    SearchResponse,
    SuggestionItem,
    SuggestResponse,
)
from api.stores import current
from core.keys import ApiKey
from core.query import Analysis, Filters
from core.query import Query as SearchQuery
from online_learning.events import BROWSE, MAX_SEARCHED, RankingEvent, ShownItem
from ranking.cascade import SHED_CAUSES
from retrieval.types import Candidates
from serving.engine import SearchEngine
from serving.loading import Served
from serving.suggestions import hidden_products
from serving.suggestions import suggest as suggest_for

ERRORS = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: UNKNOWN_STORE, 422: INVALID, 429: RATE_LIMITED,
          503: {"model": ErrorBody, "description": "The store is still loading, or (a search) this process was at "
                "serving.max_in_flight for the search's whole budget; Retry-After says when to try again"}}
logger = logging.getLogger(__name__)
router = APIRouter(tags=["search"])  # mounted at /v1 and /v1/stores/{store}
KeyDep = Annotated[ApiKey | None, Depends(require("search"))]


def _search_unit(body: SearchRequest) -> str:
    """What an anonymous search (no user or session id) goes by in an experiment: the search itself (its text,
    filters and order), so each of its pages comes from the same arm and the same interleaving draft; a
    request's own id would draw every page anew, and page 2 would repeat and skip products of page 1."""
    key = json.dumps([body.query, body.filters.model_dump(), body.sort], sort_keys=True, default=str)
    return "search:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _respond(served: Served, body: SearchRequest, request: Request, key: ApiKey | None) -> SearchResponse:
    started = time.perf_counter()
    settings = current(request).settings
    if settings.serving.micro_batch:  # the models run in the micro-batch threads, which keep their priority
        yield_to_models(settings.serving.search_nice)
    # from the request's arrival: a search that waited for a worker thread has less of its budget left
    deadline = getattr(request.state, "arrived", time.monotonic()) + settings.serving.budget_ms / 1000
    unit = body.user_id or body.session_id or _search_unit(body)  # blank ids are None (api.schemas)
    # overload: shed the cross-encoders, then queue until the deadline
    with request.app.state.admission.enter(wait_s=deadline - time.monotonic()) as shed:
        admission = request.app.state.admission
        query = SearchQuery(body.query, body.user_id, Filters(**body.filters.model_dump()), deadline, body.rewrite,
                            shed=shed, skip_model=admission.skip_model if admission.skip_share else None,
                            facets=tuple(dict.fromkeys(body.facets)), sort=body.sort)
        routed = served.router.search(served.engine, query, body.k, body.offset, unit, use_cache=not body.explain)
    request.app.state.metrics.searches.labels("true" if shed else "false").inc()
    engine = served.engine
    result = routed.result
    metrics = request.app.state.metrics
    for stage, seconds in result.timings.items():
        metrics.stages.labels(stage).observe(seconds)
    for reason in result.degraded:
        stage, _, why = reason.partition(": ")
        kind, _, cause = why.partition(", ")
        metrics.degraded.labels(stage, kind.split(" ")[0], cause if cause in SHED_CAUSES else "").inc()
    index = engine.index
    contributions = routed.explain(engine, query) if body.explain else None
    items = []
    for i, c in enumerate(result.candidates):  # one Candidate view per row
        explanation = None
        if body.explain:
            explanation = Explanation(features=contributions[i] if contributions else None,
                                      rules=result.notes.get(c.product_id, []))
        score = c.score if c.score == c.score else None  # NaN: the ordering stage did not score it
        items.append(SearchItem(product_id=c.product_id, title=index.title(c.doc), score=score,
                                rank=body.offset + c.rank, scores={k: v for k, v in c.scores.items() if v == v},
                                ranks=c.ranks, explanation=explanation))
    manifest = index.manifest
    response = SearchResponse(
        request_id=request.state.event_id, query=body.query, k=body.k, pipeline=result.pipeline,
        took_ms=round((time.perf_counter() - started) * 1e3, 2),
        stages_ms={name: round(seconds * 1e3, 2) for name, seconds in result.timings.items()},
        versions=routed.versions, degraded=result.degraded, cached=result.cached,
        experiment=routed.experiment, arm=routed.arm, query_rewrite=_rewrite(result.analysis),
        redirect=_redirect(engine, query, result.analysis),
        index=IndexInfo(name=index.path.parent.name, products=index.count, catalog_hash=manifest.catalog_hash,
                        encoder=manifest.encoder, dense_index=manifest.dense_kind),
        items=items, facets=Facets(**result.facets) if result.facets is not None else None,
    )
    for rule in {note.split("(")[0] for notes in result.notes.values() for note in notes} | (
            {"redirect"} if response.redirect else set()):
        metrics.rules.labels(rule).inc()
    if settings.events.log_impressions:
        _log_impression(request, body, response, routed.teams, key)
    return response


def _redirect(engine: SearchEngine, query: SearchQuery, analysis: Analysis | None) -> str | None:
    """The page the store's rules send the query to (matched as typed, else as searched)."""
    if engine.rules is None:
        return None
    return engine.rules.redirect(query if analysis is None else replace(query, text=analysis.text, analysis=analysis))


def _rewrite(analysis: Analysis | None) -> QueryRewrite | None:
    if analysis is None:
        return None
    return QueryRewrite(text=analysis.text, rewrites=[RewriteItem(original=r.original, replacement=r.replacement,
                                                                  reason=r.reason) for r in analysis.rewrites],
                        brand=list(analysis.brand), product_type=list(analysis.product_type),
                        numbers=list(analysis.numbers))


def _log_impression(request: Request, body: SearchRequest, response: SearchResponse, teams: dict[str, str],
                    key: ApiKey | None) -> None:
    """Every search's impression goes to the event log (not fsynced per search)."""
    log_shown(request, RankingEvent(
        event_id=response.request_id, request_id=response.request_id, user_id=body.user_id,
        session_id=body.session_id, query=body.query, pipeline=response.pipeline,
        searched=response.query_rewrite.text[:MAX_SEARCHED] if response.query_rewrite else None,
        key_id=key.id if key else None,
        filters=body.filters.model_dump(exclude_none=True) or None, models=response.versions,
        sort=None if body.sort == "relevance" else body.sort,
        experiment=response.experiment, arm=response.arm, degraded=response.degraded, latency_ms=response.took_ms,
        items=[ShownItem(product_id=i.product_id, position=i.rank, score=i.score, scores=i.scores,
                         team=teams.get(i.product_id)) for i in response.items],
    ))


def log_shown(request: Request, event: RankingEvent) -> None:
    """A search's, listing's or shelf's impression to the event log (not fsynced per request). A log that
    cannot be written (a full disk) costs the impression, counted and logged, not the shopper's answer."""
    try:
        current(request).event_log.append([event], durable=False)
    except OSError as error:
        request.app.state.metrics.events.labels("ranking_dropped").inc()
        logger.error("impression %s not logged (%s): the event spool cannot be written", event.event_id, error)
        return
    request.app.state.metrics.events.labels("ranking").inc()


def shelf_event(request: Request, pipeline: str, user_id: str | None, session_id: str | None, filters: dict,
                sort: str | None, items: list[ShownItem], key: ApiKey | None, took_ms: float) -> RankingEvent:
    """The ranking event of a listing (``browse``) or a recommendation shelf (``recommend:<kind>``): no query."""
    return RankingEvent(event_id=request.state.event_id, request_id=request.state.event_id, user_id=user_id,
                        session_id=session_id, query="", pipeline=pipeline, filters=filters or None, sort=sort,
                        key_id=key.id if key else None, latency_ms=took_ms, items=items)


@router.post("/search", response_model=SearchResponse, responses=ERRORS, summary="Search products")
def search(body: SearchRequest, served: ServedDep, request: Request, key: KeyDep) -> SearchResponse:
    """Hybrid retrieval (BM25 + bi-encoder, fused by RRF), the re-ranking cascade and the rules."""
    return _respond(served, body, request, key)


@router.post("/browse", response_model=BrowseResponse, responses=ERRORS, summary="List products without a query")
def browse(body: BrowseRequest, served: ServedDep, request: Request, key: KeyDep) -> BrowseResponse:
    """Every product that matches the filters (a category or brand page), most popular first or by price;
    the same filters and facets as a search."""
    started = time.perf_counter()
    engine = served.engine
    result = engine.browse(Filters(**body.filters.model_dump()), body.k, body.offset, body.sort,
                           tuple(dict.fromkeys(body.facets)), use_cache=True)
    items = [BrowseItem(rank=body.offset + i + 1, **fields)
             for i, fields in enumerate(listed(engine, result.candidates, result.notes))]
    response = BrowseResponse(request_id=request.state.event_id, sort=body.sort, total=result.total_candidates,
                              took_ms=round((time.perf_counter() - started) * 1e3, 2), cached=result.cached,
                              stages_ms={name: round(s * 1e3, 2) for name, s in result.timings.items()},
                              items=items, facets=Facets(**result.facets) if result.facets is not None else None)
    if current(request).settings.events.log_impressions:
        log_shown(request, shelf_event(request, BROWSE, body.user_id, body.session_id,
                                       body.filters.model_dump(exclude_none=True), body.sort,
                                       [ShownItem(product_id=i.product_id, position=i.rank) for i in items], key,
                                       response.took_ms))
    return response


def listed(engine: SearchEngine, candidates: Candidates, notes: dict[str, list[str]]) -> list[dict[str, object]]:
    """Each product's id, title, category, brand, price, stock (as last known) and the rules applied."""
    known = engine.facts.known(candidates)  # type: ignore[union-attr]
    return [{"product_id": c.product_id, "title": engine.index.title(c.doc), "category": known.category[i],
             "brand": known.brand[i], "price": None if np.isnan(known.price[i]) else float(known.price[i]),
             "in_stock": None if np.isnan(known.in_stock[i]) else bool(known.in_stock[i] > 0),
             "rules": notes.get(c.product_id, [])} for i, c in enumerate(candidates)]


@router.get("/suggest", response_model=SuggestResponse, responses=ERRORS,
            summary="Query suggestions as the shopper types")
def suggest(
    served: ServedDep,
    request: Request,
    key: KeyDep,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS,
                            description=f"What the shopper has typed so far, 1..{MAX_QUERY_CHARS} characters; "
                            "the last word may be partial, a trailing space ends it")],
    k: Annotated[int, Query(ge=1, le=MAX_SUGGESTIONS, description=f"Suggestions, 1..{MAX_SUGGESTIONS}")] = 8,
) -> SuggestResponse:
    """Phrases that start with the typed text: texts shoppers searched, then phrases of the catalog's titles
    (the words before the last one spelling-corrected as a search would correct them)."""
    _query_string(request, ("q", "k"))
    started = time.perf_counter()
    engine = served.engine
    settings = current(request).settings  # no phrase only products a search hides hold (out of stock, with hide)
    found = suggest_for(engine.index, settings.paths.suggestions, q, k, hidden_products(engine),
                        settings.retrieval.spelling)
    return SuggestResponse(query=q, took_ms=round((time.perf_counter() - started) * 1e3, 3),
                           suggestions=[SuggestionItem(text=s.text, source=s.source, weight=s.weight) for s in found])


SEARCH_PARAMETERS = ("q", "k", "offset", "user_id", "session_id", "explain", "rewrite", "category", "brand",
                     "min_price", "max_price", "in_stock", "facets", "sort")
SEARCH_LISTS = ("category", "brand", "facets")  # the parameters given once for each value


@router.get("/search", response_model=SearchResponse, responses=ERRORS, summary="Search products (quick tries)")
def search_get(
    served: ServedDep,
    request: Request,
    key: KeyDep,
    # q is checked as the POST body's query is, after trimming (a limit here, before it, named another length)
    q: Annotated[str, Query(description=f"Search text, 1..{MAX_QUERY_CHARS} characters after trimming")],
    k: Annotated[int, Query(ge=1, le=MAX_K, description=f"Number of results, 1..{MAX_K}")] = 10,
    offset: Annotated[int, Query(ge=0, le=900, description="Results to skip (paging), 0..900")] = 0,
    user_id: Annotated[str | None, Query(description="Shopper id, up to 128 characters (blank: none)",
                                              json_schema_extra={"maxLength": 128})] = None,
    session_id: Annotated[str | None, Query(description="Session id, up to 128 characters (blank: none)",
                                                 json_schema_extra={"maxLength": 128})] = None,
    explain: Annotated[bool, Query(description="Per-result feature contributions and rule notes")] = False,
    rewrite: Annotated[bool, Query(description="Correct misspelled words (false: as typed)")] = True,
    category: Annotated[list[FilterValue] | None, Query(min_length=1, max_length=100, description="Only these "
                                                        "categories (repeat for several, up to 100)")] = None,
    brand: Annotated[list[FilterValue] | None, Query(min_length=1, max_length=100, description="Only these brands "
                                                     "(repeat for several, up to 100)")] = None,
    min_price: Annotated[float | None, Query(ge=0, allow_inf_nan=False, description="Lowest price, >= 0")] = None,
    max_price: Annotated[float | None, Query(ge=0, allow_inf_nan=False, description="Highest price, >= 0")] = None,
    in_stock: Annotated[bool | None, Query(description="true: only products in stock")] = None,
    facets: Annotated[list[Literal["category", "brand", "price"]] | None,
                      Query(max_length=3, description="category, brand, price (repeat for several)")] = None,
    sort: Annotated[Literal["relevance", "price_asc", "price_desc"],
                    Query(description="relevance, price_asc or price_desc")] = "relevance",
) -> SearchResponse:
    _query_string(request, SEARCH_PARAMETERS, SEARCH_LISTS)
    filters = {name: value for name, value in (("category", category), ("brand", brand), ("min_price", min_price),
                                                ("max_price", max_price), ("in_stock", in_stock)) if value is not None}
    try:  # the query string's parameters, checked as the POST body is (a 422 naming each)
        body = SearchRequest.model_validate({"query": q, "k": k, "offset": offset, "user_id": user_id,
                                             "session_id": session_id, "explain": explain, "rewrite": rewrite,
                                             "filters": filters, "facets": facets or [], "sort": sort})
    except ValidationError as error:  # named as the query string names them: q, category, min_price ...
        raise RequestValidationError(_as_parameters(error.errors(include_url=False))) from None
    return _respond(served, body, request, key)


def _query_string(request: Request, allowed: tuple[str, ...], lists: tuple[str, ...] = ()) -> None:
    """A 422 for a query string the route would read otherwise than it was sent, naming each parameter: one the
    route does not take (``max-price`` for ``max_price``: left out, it would answer as if it were not there, an
    unfiltered list), one whose bytes are not UTF-8 (read as U+FFFD: a search for another text), one of one value
    given more than once (only the last would count). ``lists``: the parameters given once for each value
    (``category=a&category=b``). A cache-buster (``_``) and a campaign's tags (``utm_*``) that links carry are
    let through, whatever they hold."""
    errors: list[dict[str, Any]] = []
    unknown: dict[str, str] = {}
    given: dict[str, list[str]] = {}
    for name, value in _raw_parameters(request.scope.get("query_string", b"")):
        if isinstance(name, UnicodeDecodeError):
            errors.append(_not_utf8(name, "the name"))
            continue
        if name == "_" or name.startswith("utm_"):  # a cache-buster, a campaign's tags: not ours
            continue
        shown = value if isinstance(value, str) else value.object.decode("utf-8", "backslashreplace")
        if name not in allowed:
            unknown[name] = shown
        elif isinstance(value, UnicodeDecodeError):
            errors.append(_not_utf8(value, "", name))
        else:
            given.setdefault(name, []).append(value)
    errors += [{"type": "extra_forbidden", "loc": ("query", name or "''"), "input": unknown[name],  # ?=5: ''
                "msg": f"not a parameter of {request.url.path}; it takes {', '.join(allowed)}"}
               for name in sorted(unknown)]
    errors += [{"type": "too_many", "loc": ("query", name), "input": tuple(values),
                "msg": f"given {len(values)} times; it takes one value: send {name} once"}
               for name, values in given.items() if len(values) > 1 and name not in lists]
    if errors:
        raise RequestValidationError(errors)


def _raw_parameters(query: bytes) -> list[tuple[str | UnicodeDecodeError, str | UnicodeDecodeError]]:
    """The query string's (name, value) pairs as sent, each percent-decoded and read as UTF-8, or the error
    of one that is not; ``+`` is a space, as the framework reads it."""
    pairs: list[tuple[str | UnicodeDecodeError, str | UnicodeDecodeError]] = []
    for part in query.split(b"&"):
        if part:
            name, _, value = part.partition(b"=")
            pairs.append((_utf8(name), _utf8(value)))
    return pairs


def _utf8(raw: bytes) -> str | UnicodeDecodeError:
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode()
    except UnicodeDecodeError as error:
        return error


def _not_utf8(error: UnicodeDecodeError, whose: str, name: str | None = None) -> dict[str, Any]:
    """The error of a query-string parameter (or, ``whose`` "the name", its name) whose bytes, percent-decoded,
    are not UTF-8: the first bad byte, as a JSON body's is named (:func:`api.errors.unreadable_body`)."""
    sent = error.object.decode("utf-8", "backslashreplace")
    return {"type": "unicode_decode", "loc": ("query", name if name is not None else sent), "input": sent,
            "msg": f"{whose + ': ' if whose else ''}byte {error.start} (0x{error.object[error.start]:02x}) is not "
                   f"valid UTF-8 ({error.reason}); send the text as UTF-8, percent-encoded (é as %C3%A9)"}


def _as_parameters(errors: list[Any]) -> list[Any]:
    """Validation errors of the request body built from a GET's parameters, located at those parameters
    (``query`` -> ``q``, ``filters.category.list[...].0`` -> ``category.0``); of the two readings of a list
    parameter (one value, or several) only the list's, which is what a query string gives (:func:`one_reading`)."""
    out, seen = [], set()
    for error in one_reading(errors):
        loc = [str(part) for part in error.get("loc", ())]
        named = (["q"] if loc[:1] == ["query"] else loc[1:] or ["min_price, max_price"] if loc[:1] == ["filters"]
                 else loc)  # the prices' check is the filters' own
        key = (tuple(named), error.get("msg"))
        if key not in seen:
            seen.add(key)
            out.append({**error, "loc": ("query", *named)})
    return out
