"""Event schema, version 1 (pydantic): what ShopRank logs and what it accepts.

A ranking/interaction split (as in Metarank): a :class:`RankingEvent` per
search, listing every shown item with its position and scores, the model
versions and the experiment arm; and :class:`InteractionEvent` s (click,
add_to_cart, purchase) pointing back at the ranking by ``request_id``.
Impressions are logged, not only clicks, so position bias can be estimated.
Listings (``/v1/browse``) and recommendation shelves (``/v1/recommend``) are
logged as ranking events too, with no query and their own ``pipeline``
(:func:`is_shelf`): what learns to rank searches reads searches only.

Every event has an ``event_id`` used to de-duplicate (a ranking's is its
request id; interactions carry the client's id, so retries are safe).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
)

from retrieval.catalog import MAX_ID_CHARS

SCHEMA_VERSION = 1
RANKINGS_TOPIC = "shoprank.rankings"
INTERACTIONS_TOPIC = "shoprank.interactions"

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$")]
MAX_POSITION = 100_100  # the deepest row a listing shows (/v1/browse: offset 100,000, k 100)
MAX_SEARCHED = 1024  # the analyzed text logged (synonyms can make it longer than the 256 characters typed)
BROWSE = "browse"  # the pipeline of a listing's ranking event
RECOMMEND = "recommend:"  # a recommendation shelf's pipeline: recommend:<kind>


def is_shelf(pipeline: str) -> bool:
    """A listing or a recommendation shelf, not a search."""
    return pipeline == BROWSE or pipeline.startswith(RECOMMEND)


def _now() -> datetime:
    return datetime.now(UTC)


MAX_AHEAD = timedelta(hours=24)  # clock skew allowed to a client's timestamps
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)  # the log's day partitions and pandas' timestamps hold what follows


def _utc(value: datetime | None, field: str = "received") -> datetime | None:
    """``value`` in UTC (one without an offset is read as UTC); one out of range is a ValueError naming
    ``field``."""
    try:
        return None if value is None else value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValueError(f"{field} {value.isoformat()} is out of range; send a time from 1970 on (ISO 8601)") \
            from None


STORED = {"stored": True}  # the validation context of an event read back (:func:`parse` with ``stored``)


def _in_utc(value: datetime, info: ValidationInfo) -> datetime:
    """A timestamp in UTC (one without an offset is read as UTC). One far ahead of this clock is refused
    where an event is taken in (the API, ``events import`` of a file): the streaming features count windows
    back from the latest event, so it would empty every count. An event read back from the spool, Kafka or
    the log (validated with the context :data:`STORED`) was checked when it came in against that machine's
    clock, which may run ahead of this one: it is refused only past twice the allowance. That refuses one
    that no ShopRank took in (another producer's, which would stop the streaming features and the log's
    readers), and also the events of a server whose clock ran more than that far ahead of this one's."""
    value = _utc(value, "timestamp")
    if value < EARLIEST:
        raise ValueError(f"timestamp {value.isoformat()} is before 1970; send when the event happened (ISO 8601)")
    stored = (info.context or {}).get("stored")
    if value > datetime.now(UTC) + (2 * MAX_AHEAD if stored else MAX_AHEAD):
        raise ValueError(f"timestamp {value.isoformat()} is more than {48 if stored else 24} hours ahead of the "
                         f"{'reading machine' if stored else 'server'}'s clock "
                         f"({datetime.now(UTC).isoformat(timespec='seconds')}); send when the event happened "
                         "(ISO 8601; no offset means UTC)")
    return value


Timestamp = Annotated[datetime, AfterValidator(_in_utc)]


def _blank_is_none(value: object) -> object:
    """A blank shopper id (``""``, as exports write none) is no id: an anonymous shopper, as the streaming
    consumer reads it (the reports took every blank one for one shopper, and dropped it as a bot)."""
    return None if isinstance(value, str) and not value.strip() else value


ShopperId = Annotated[Annotated[str, StringConstraints(max_length=128)] | None, BeforeValidator(_blank_is_none)]


class ShownItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: str = Field(..., min_length=1, max_length=MAX_ID_CHARS)
    position: int = Field(..., ge=1, le=MAX_POSITION, description="1-based position shown.")
    score: float | None = None
    scores: dict[str, float] = Field(default_factory=dict, description="Per-stage scores.")
    team: str | None = Field(None, description="Interleaving: the arm that placed this item.")


class RankingEvent(BaseModel):
    """One search (or listing, or recommendation shelf) as served: what was shown, where, by which
    models."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    type: Literal["ranking"] = "ranking"
    event_id: Id
    request_id: Id
    timestamp: Timestamp = Field(default_factory=_now, description="When it happened, ISO 8601 (no offset: "
                                 "UTC); at most 24 hours ahead of the server's clock.")
    user_id: ShopperId = None
    session_id: ShopperId = None
    query: str = Field(..., max_length=256)
    searched: str | None = Field(None, max_length=MAX_SEARCHED, description="The analyzed text that was searched "
                                 "(normalized, spelling corrected; its first 1,024 characters); None: as typed.")
    pipeline: str
    filters: dict[str, Any] | None = Field(None, description="The request's filters that were set (category, "
                                           "brand, min_price, max_price, in_stock); None: an unfiltered search.")
    sort: str | None = Field(None, max_length=32, description="How the list was sorted when not by relevance "
                             "(price_asc, price_desc): such lists teach no ranking (shoprank retrain skips them).")
    items: list[ShownItem]
    models: dict[str, str] = Field(default_factory=dict, description="Role -> version of each model that ranked the search "
                                     "(interleaved: each arm's LambdaMART as 'ltr:<arm>', no 'ltr').")
    experiment: str | None = None
    arm: str | None = None
    degraded: list[str] = Field(default_factory=list)
    latency_ms: float | None = None
    key_id: str | None = Field(None, max_length=64, description="Set by the server: the API key of the search.")


class InteractionEvent(BaseModel):
    """A shopper's action on a shown product."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [{
        "event_id": "e-123", "request_id": "5f0c...", "type": "click", "product_id": "100001",
        "position": 3, "user_id": "u42"}]})

    schema_version: Literal[1] = SCHEMA_VERSION
    type: Literal["click", "add_to_cart", "purchase"]
    event_id: Id = Field(..., description="Client id of this event; retries with the same id are de-duplicated.")
    request_id: Id = Field(..., description="request_id of the search that showed the product.")
    timestamp: Timestamp = Field(default_factory=_now, description="When it happened, ISO 8601 (no offset: "
                                 "UTC); at most 24 hours ahead of the server's clock.")
    user_id: ShopperId = None
    session_id: ShopperId = None
    product_id: str = Field(..., min_length=1, max_length=MAX_ID_CHARS)
    position: int | None = Field(None, ge=1, le=MAX_POSITION)
    quantity: int = Field(1, ge=1, le=10_000)
    revenue: float | None = Field(None, ge=0, le=10_000_000, description="Purchase value (purchases only).")
    key_id: str | None = Field(None, max_length=64, description="Set by the server (a value sent is replaced): "
                               "the API key that sent the event, when keys are required.")
    received: Annotated[datetime | None, AfterValidator(_utc)] = Field(
        None, description="Set by the server (a value sent is replaced): when it accepted the event. An erasure "
        "drops the shopper's events received before it, whatever their timestamp says (a client's clock may run "
        "ahead).")


Event = Annotated[RankingEvent | InteractionEvent, Field(discriminator="type")]
EVENT = TypeAdapter(Event)


def topics(store: str | None = None) -> tuple[str, str]:
    """The (rankings, interactions) topics of a store: ``shoprank.rankings`` and
    ``shoprank.interactions`` for the default store, ``shoprank.<store>.rankings`` ... for another."""
    if not store:
        return RANKINGS_TOPIC, INTERACTIONS_TOPIC
    return f"shoprank.{store}.rankings", f"shoprank.{store}.interactions"


def topic_of(event: RankingEvent | InteractionEvent, store: str | None = None) -> str:
    rankings, interactions = topics(store)
    return rankings if isinstance(event, RankingEvent) else interactions


def key_of(event: RankingEvent | InteractionEvent) -> str:
    """Partition key: the user (a user's events stay in order), else the request."""
    return event.user_id or event.request_id


def parse(raw: bytes | str, stored: bool = False) -> RankingEvent | InteractionEvent:
    """The event of the JSON ``raw``. ``stored``: an event read back (the consumers, ``events import --spool``),
    accepted before against the clock of the server that took it in: its timestamp is refused only when it is
    more than twice the allowance (48 hours) ahead of this machine's clock (:func:`_in_utc`). That refuses
    another producer's record dated years ahead, and also the events of a server whose clock ran more than
    48 hours fast (or of a reader whose clock runs that far behind): they are dead letters."""
    return EVENT.validate_json(raw, context=STORED if stored else None)
