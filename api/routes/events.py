"""``/v1/events``: clicks, add-to-cart and purchases from the storefront."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from api.auth import require
from api.schemas import INVALID, RATE_LIMITED, UNKNOWN_STORE, ErrorBody
from api.stores import current
from core.errors import NotReady
from core.keys import ApiKey
from online_learning import events as events_schema

router = APIRouter(tags=["events"],  # mounted at /v1 and /v1/stores/{store}
                   responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: UNKNOWN_STORE,
                              429: RATE_LIMITED})

MAX_BATCH = 1000
SERVER_SET = ("key_id", "received")  # an event's fields the server sets, whatever a client sent


class InteractionEvent(events_schema.InteractionEvent):
    """A shopper's action on a shown product (revenue on a purchase only)."""

    # the fields the server sets: what a client sends there is replaced, so it is never checked (a key id too
    # long or a received time out of range would refuse the whole batch)
    @model_validator(mode="before")
    @classmethod
    def _server_set(cls, data: object) -> object:
        return {k: v for k, v in data.items() if k not in SERVER_SET} if isinstance(data, dict) else data

    # here, not in the event schema, so events already on their way stay valid; checked with the other fields,
    # so a 422 names every bad event of a batch (the OpenAPI component keeps the name InteractionEvent)
    @field_validator("revenue")
    @classmethod
    def _purchase_only(cls, revenue: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("type")
        if revenue is not None and kind is not None and kind != "purchase":
            raise ValueError(f"{revenue!r} is a purchase's value; a {kind} has none (leave it out)")
        return revenue


class Accepted(BaseModel):
    accepted: int = Field(..., description="Events durably stored (on disk, then shipped to Kafka).")


@router.post("/events", status_code=202, response_model=Accepted, summary="Log interactions",
             responses={422: INVALID, 503: {"model": ErrorBody, "description": "The events could not be stored (a "
                                            "full or failing disk): none of the call was kept; send it again after "
                                            "Retry-After"}})
def post_events(
    request: Request,
    key: Annotated[ApiKey | None, Depends(require("events"))],
    events: Annotated[list[InteractionEvent], Body(min_length=1, max_length=MAX_BATCH,
                                                   description=f"1..{MAX_BATCH} interaction events")],
) -> Accepted:
    """Accept interactions; answers 202 only once they are fsynced to the local event log.

    Each event needs a client ``event_id``: sending the same event again (a retry)
    is safe, consumers keep one per id.
    """
    received = datetime.now(UTC)  # what an erasure goes by: a client's clock may run ahead
    logged = [events_schema.InteractionEvent(**{**dict(e), "key_id": key.id if key else None, "received": received})
              for e in events]
    try:
        current(request).event_log.append(logged, durable=True)
    except OSError as error:  # a full or failing disk: nothing was accepted, the client sends them again
        raise NotReady(f"the events could not be stored ({error.strerror or error}); nothing of this call was "
                       "accepted: send it again later (an event sent twice is kept once, by its event_id)",
                       retry_after=5.0) from None
    for event in logged:
        request.app.state.metrics.events.labels(event.type).inc()
    return Accepted(accepted=len(logged))
