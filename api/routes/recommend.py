"""``/v1/recommend``: shelves of products for a product page, a cart or a shopper (no query)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.auth import require
from api.deps import ServedDep
from api.routes.search import ERRORS, listed, log_shown, shelf_event
from api.schemas import ErrorBody, RecommendItem, RecommendRequest, RecommendResponse
from api.stores import current
from core.keys import ApiKey
from core.query import Filters
from online_learning.events import RECOMMEND, ShownItem
from serving.recommendations import recommend as recommend_for

router = APIRouter(tags=["recommend"])  # mounted at /v1 and /v1/stores/{store}
KeyDep = Annotated[ApiKey | None, Depends(require("search"))]


@router.post("/recommend", response_model=RecommendResponse,
             responses={**ERRORS, 404: {"model": ErrorBody, "description": "None of the seed products is in the "
                                        "catalog (for_you with a user_id serves the shopper's shelf instead), or a "
                                        "store this server does not serve (under /v1/stores/{store}/)"}},
             summary="Recommended products: similar, bought or viewed together, for a shopper")
def recommend(body: RecommendRequest, served: ServedDep, request: Request, key: KeyDep) -> RecommendResponse:
    """The products of ``kind`` for the seed products (and the shopper), within the filters, the seeds
    and ``exclude`` never shown, ordered by the business rules; a short shelf is filled (``fill``)."""
    started = time.perf_counter()
    engine = served.engine
    shelf = recommend_for(engine, current(request).settings.paths.recommendations, body.kind, body.product_ids,
                          body.k, Filters(**body.filters.model_dump()), tuple(body.exclude), body.user_id, body.fill)
    items = [RecommendItem(rank=i + 1, score=round(shelf.scores[i], 6), source=shelf.sources[i], **fields)
             for i, fields in enumerate(listed(engine, shelf.candidates, shelf.notes))]
    response = RecommendResponse(request_id=request.state.event_id, kind=body.kind, seeds=shelf.seeds,
                                 took_ms=round((time.perf_counter() - started) * 1e3, 2), degraded=shelf.degraded,
                                 unknown=shelf.unknown, cached=shelf.cached,
                                 stages_ms={name: round(s * 1e3, 2) for name, s in shelf.timings.items()}, items=items)
    if current(request).settings.events.log_impressions:
        shown = [ShownItem(product_id=i.product_id, position=i.rank, score=i.score, scores={i.source: i.score})
                 for i in items]
        log_shown(request, shelf_event(request, RECOMMEND + body.kind, body.user_id, body.session_id,
                                       body.filters.model_dump(exclude_none=True), None, shown, key, response.took_ms))
    return response
