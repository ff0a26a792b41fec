"""``/v1/search``: a query in, ranked products out."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.deps import EngineDep
from api.schemas import (
    MAX_QUERY_CHARS,
    ErrorBody,
    Explanation,
    IndexInfo,
    SearchItem,
    SearchRequest,
    SearchResponse,
)
from ranking.cascade import Query as SearchQuery
from ranking.rules import Filters
from shoprank.engine import SearchEngine

router = APIRouter(prefix="/v1", tags=["search"])

ERRORS = {422: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def _respond(engine: SearchEngine, body: SearchRequest, request_id: str) -> SearchResponse:
    started = time.perf_counter()
    query = SearchQuery(body.query, body.user_id, Filters(**body.filters.model_dump()))
    result = engine.search(query, body.k, offset=body.offset)
    index = engine.index
    contributions = engine.explain(query, result.candidates) if body.explain else None
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
    return SearchResponse(
        request_id=request_id, query=body.query, k=body.k, pipeline=result.pipeline,
        took_ms=round((time.perf_counter() - started) * 1e3, 2),
        stages_ms={name: round(seconds * 1e3, 2) for name, seconds in result.timings.items()},
        versions=engine.versions,
        index=IndexInfo(name=index.path.name, products=index.count, catalog_hash=manifest.catalog_hash,
                        encoder=manifest.encoder, dense_index=manifest.dense_kind),
        items=items,
    )


@router.post("/search", response_model=SearchResponse, responses=ERRORS, summary="Search products")
def search(body: SearchRequest, engine: EngineDep, request: Request) -> SearchResponse:
    """Hybrid retrieval (BM25 + bi-encoder, fused by RRF) over the served catalog."""
    return _respond(engine, body, request.state.request_id)


@router.get("/search", response_model=SearchResponse, responses=ERRORS, summary="Search products (quick tries)")
def search_get(
    engine: EngineDep,
    request: Request,
    q: Annotated[str, Query(description=f"Search text, 1..{MAX_QUERY_CHARS} characters")],
    k: Annotated[int, Query(ge=1, le=100, description="Number of results, 1..100")] = 10,
    user_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
) -> SearchResponse:
    body = SearchRequest.model_validate({"query": q, "k": k, "user_id": user_id})
    return _respond(engine, body, request.state.request_id)
