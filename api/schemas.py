"""Request and response models of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from online_learning.events import ShopperId
from retrieval.catalog import MAX_FACET_CHARS, MAX_ID_CHARS
from retrieval.vocabulary import tokenize

MAX_QUERY_CHARS = 256
MAX_SUGGESTIONS = 20  # per /v1/suggest call
MAX_K = 100  # results per page; the rules stage orders the first 100 (ranking.rules.RulesStage.depth)


FilterValue = Annotated[str, StringConstraints(min_length=1, max_length=MAX_FACET_CHARS)]  # as catalogs hold them


class SearchFilters(BaseModel):
    """Every product returned matches every filter given; the search runs over the products that do."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    category: FilterValue | list[FilterValue] | None = Field(
        None, description="Only this category, or any of these (up to 100; exact values, as facets name them).")
    brand: FilterValue | list[FilterValue] | None = Field(
        None, description="Only this brand, or any of these (up to 100; exact values).")
    min_price: float | None = Field(None, strict=True, ge=0, description="Lowest price, >= 0 (a product without a "
                                    "price is left out).")
    max_price: float | None = Field(None, strict=True, ge=0, description="Highest price, >= 0.")
    in_stock: bool | None = Field(None, strict=True, description="true: only products in stock (false or null: no "
                                  "stock filter).")

    @field_validator("category", "brand")
    @classmethod
    def _few_values(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not 1 <= len(value) <= 100:
            raise ValueError(f"give 1..100 values, got {len(value)}")
        return value

    @model_validator(mode="after")
    def _range(self) -> SearchFilters:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError(f"min_price={self.min_price} is above max_price={self.max_price}; pass min_price <= max_price")
        return self


class SearchRequest(BaseModel):
    """A search from a storefront."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"query": "cordless drill", "k": 10, "user_id": "u123"}]})

    query: str = Field(..., description=f"Search text, 1..{MAX_QUERY_CHARS} characters after trimming.")
    k: int = Field(10, strict=True, ge=1, le=MAX_K, description=f"Number of results, 1..{MAX_K}.")
    offset: int = Field(0, strict=True, ge=0, le=900, description="Results to skip (paging), 0..900.")
    user_id: ShopperId = Field(None, description="Shopper id (optional; up to 128 characters, blank: none).")
    session_id: ShopperId = Field(None, description="Session id (optional; up to 128 characters, blank: none).")
    filters: SearchFilters = Field(default_factory=SearchFilters)
    explain: bool = Field(False, strict=True, description="Return per-result feature contributions and rule notes.")
    rewrite: bool = Field(True, strict=True, description="Correct misspelled and run-together words against the "
                          "catalog (false: search the words as typed; normalization of units and case still applies).")
    sort: Literal["relevance", "price_asc", "price_desc"] = Field(
        "relevance", description="relevance (default), or the most relevant products (serving.sort_depth, 100) by "
        "price, up or down (products without a price last).")
    facets: list[Literal["category", "brand", "price"]] = Field(
        default_factory=list, max_length=3, description="Facet counts to return, over every product the search "
        "found (after the filters; up to ranking.first_stage_depth), whatever the sort (a price sort shows only "
        "serving.sort_depth of them): category, brand (values and counts), price (lowest and highest).")

    @field_validator("query")
    @classmethod
    def _trimmed_length(cls, value: str) -> str:
        text = value.strip()
        if not 1 <= len(text) <= MAX_QUERY_CHARS:
            raise ValueError(
                f"query must be 1..{MAX_QUERY_CHARS} characters after trimming whitespace, got {len(text)}"
            )
        if not tokenize(text):
            raise ValueError(f"query {text!r} has no letter or digit to search for; send at least one word")
        return text


class Explanation(BaseModel):
    features: dict[str, float] | None = Field(None, description="LambdaMART contribution per feature (+ bias).")
    rules: list[str] = Field(default_factory=list, description="Business rules applied to this result.")


class SearchItem(BaseModel):
    product_id: str
    title: str
    score: float | None = Field(..., description="Score of the last stage that ordered the list.")
    rank: int = Field(..., description="1-based position in the full result list (offset included).")
    scores: dict[str, float] = Field(default_factory=dict, description="Score per stage (bm25, dense, rrf, ...).")
    ranks: dict[str, int] = Field(default_factory=dict, description="1-based rank per stage.")
    explanation: Explanation | None = None


class RewriteItem(BaseModel):
    original: str = Field(..., description="The word as typed (normalized).")
    replacement: str = Field(..., description="What was searched instead.")
    reason: str = Field(..., description="spelling (not in the catalog; corrected), split (run-together words) or "
                        "synonym (a rule of the store's synonyms, retrieval.synonyms).")


class FacetValue(BaseModel):
    value: str
    count: int = Field(..., description="Products found with this value.")


class PriceRange(BaseModel):
    min: float
    max: float
    products: int = Field(..., description="Products found with a price.")


class Facets(BaseModel):
    """Counts over every product the search found (after the filters), not only the page. A category
    or brand facet whose own filter is set counts the products found without that filter."""

    counted: int = Field(..., description="Products counted: the search's whole list.")
    category: list[FacetValue] | None = Field(None, description="The 20 most frequent categories, most first.")
    brand: list[FacetValue] | None = Field(None, description="The 20 most frequent brands, most first.")
    price: PriceRange | None = Field(None, description="Lowest and highest price (null: no product has one).")


class QueryRewrite(BaseModel):
    """What the query analyzer made of the text."""

    text: str = Field(..., description="The text that was searched: normalized (case, units) and corrected.")
    rewrites: list[RewriteItem] = Field(default_factory=list, description="Words corrected or split.")
    brand: list[str] = Field(default_factory=list, description="Query words that name a brand of the catalog.")
    product_type: list[str] = Field(default_factory=list, description="Query words that name a product type.")
    numbers: list[str] = Field(default_factory=list, description="Numbers with their units, e.g. '1/2 in'.")


class IndexInfo(BaseModel):
    name: str
    products: int
    catalog_hash: str
    encoder: str
    dense_index: str


class SearchResponse(BaseModel):
    request_id: str
    query: str
    k: int
    pipeline: str
    took_ms: float
    stages_ms: dict[str, float] = Field(default_factory=dict, description="Milliseconds per stage.")
    versions: dict[str, str] = Field(default_factory=dict, description="The encoder and the versions of the models "
                                     "whose stages ranked this search, by role (a cross-encoder the served "
                                     "LambdaMART never reads is not run, so not named). An interleaved search names each "
                                     "arm's LambdaMART as 'ltr:<arm>' and no single 'ltr'.")
    experiment: str | None = Field(None, description="Experiment this search took part in, if any.")
    arm: str | None = Field(None, description="Experiment arm (or 'interleaved') that served it.")
    degraded: list[str] = Field(default_factory=list, description="Stages skipped and why (timeout, error).")
    cached: bool = Field(False, description="Served from the results cache.")
    query_rewrite: QueryRewrite | None = Field(None, description="What the query analyzer searched for.")
    redirect: str | None = Field(None, description="A page of the store the business rules send this query to "
                                 "(a storefront opens it instead of, or above, the results).")
    index: IndexInfo
    items: list[SearchItem]
    facets: Facets | None = Field(None, description="The counts the request asked for (facets).")


class BrowseRequest(BaseModel):
    """A listing without a query (a storefront's category or brand page)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"filters": {"category": "Tools > Drills", "in_stock": True}, "sort": "popular", "k": 24}]})

    filters: SearchFilters = Field(default_factory=SearchFilters)
    sort: Literal["popular", "price_asc", "price_desc"] = Field(
        "popular", description="popular: most purchased in the last 30 days first (the feature store's "
        "popularity; catalog order when unknown), with the business rules on the first rows; price_asc, "
        "price_desc: by price, strictly (products without a price last).")
    k: int = Field(24, strict=True, ge=1, le=MAX_K, description=f"Number of products, 1..{MAX_K}.")
    offset: int = Field(0, strict=True, ge=0, le=100_000, description="Products to skip (paging), 0..100000.")
    user_id: ShopperId = Field(None, description="Shopper id (optional; up to 128 characters, blank: none; "
                               "logged with the listing, so its clicks are credited).")
    session_id: ShopperId = Field(None, description="Session id (optional; up to 128 characters, blank: none).")
    facets: list[Literal["category", "brand", "price"]] = Field(
        default_factory=list, max_length=3, description="Facet counts over the whole listing.")


class BrowseItem(BaseModel):
    product_id: str
    title: str
    rank: int = Field(..., description="1-based position in the listing (offset included).")
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    in_stock: bool | None = Field(None, description="null: stock unknown.")
    rules: list[str] = Field(default_factory=list, description="Business rules applied to this product.")


class BrowseResponse(BaseModel):
    request_id: str
    sort: str
    took_ms: float
    total: int = Field(..., description="Products in the listing (every one that matches the filters).")
    stages_ms: dict[str, float] = Field(default_factory=dict)
    cached: bool = False
    items: list[BrowseItem]
    facets: Facets | None = None


ProductId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]


class RecommendRequest(BaseModel):
    """A shelf of recommendations: for a product page, a cart or a shopper."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"kind": "bought_together", "product_ids": ["100001"], "k": 8},
                     {"kind": "for_you", "user_id": "u42", "filters": {"in_stock": True}}]})

    kind: Literal["similar", "bought_together", "viewed_together", "for_you"] = Field(
        "similar", description="similar: the products nearest the seeds by meaning (bi-encoder vectors); "
        "bought_together / viewed_together: what shoppers who carted or bought (clicked) the seeds also did "
        "(shoprank recommendations, nightly); for_you: from the shopper's recent purchases (feature store) "
        "and any product_ids, then the most popular products.")
    product_ids: list[ProductId] = Field(default_factory=list, max_length=50,
                                         description="Seed products (a product page: one; a cart: several), 0..50; "
                                         "never shown. Needed by every kind but for_you.")
    user_id: ShopperId = Field(None, description="The shopper (up to 128 characters, blank: none; needed by "
                               "for_you without product_ids; logged with the shelf, so its clicks are credited).")
    session_id: ShopperId = Field(None, description="Session id (optional; up to 128 characters, blank: none).")
    k: int = Field(10, strict=True, ge=1, le=MAX_K, description=f"Number of products, 1..{MAX_K}.")
    filters: SearchFilters = Field(default_factory=SearchFilters)
    exclude: list[ProductId] = Field(default_factory=list, max_length=500,
                                     description="Products not to show (already in the cart), 0..500.")
    fill: bool = Field(True, strict=True, description="Fill a shelf its kind cannot fill with similar, then popular "
                       "products (each item's source says which); false: only the kind's own.")

    @model_validator(mode="after")
    def _seeds(self) -> RecommendRequest:
        if self.kind != "for_you" and not self.product_ids:
            raise ValueError(f"kind {self.kind!r} needs product_ids (1..50 seed products); for a shopper "
                             "without one, use kind 'for_you' with user_id")
        if self.kind == "for_you" and not self.product_ids and self.user_id is None:
            raise ValueError("kind 'for_you' needs user_id or product_ids")
        return self


class RecommendItem(BrowseItem):
    score: float = Field(..., description="The score in its source: the fused RRF score (similar), summed "
                         "neighbour cosines (together), purchases in 30 days (popular).")
    source: Literal["similar", "bought_together", "viewed_together", "popular"]


class RecommendResponse(BaseModel):
    request_id: str
    kind: str
    took_ms: float
    seeds: list[str] = Field(..., description="The products it started from: product_ids, and for for_you the "
                             "shopper's recent purchases still listed.")
    stages_ms: dict[str, float] = Field(default_factory=dict)
    degraded: list[str] = Field(default_factory=list, description="What could not be read (the feature store), "
                                "served without it.")
    unknown: list[str] = Field(default_factory=list, description="product_ids and exclude ids that are not in the "
                               "index (deleted since the cart was filled): left out.")
    cached: bool = Field(False, description="Served from the results cache (never a for_you shelf).")
    items: list[RecommendItem]


class SuggestionItem(BaseModel):
    text: str = Field(..., description="A phrase to offer (normalized: lowercase, units spelled one way).")
    source: Literal["searches", "catalog"] = Field(..., description="searches: shoppers searched it (shoprank "
                                                  "suggestions); catalog: product titles hold it.")
    weight: float = Field(..., description="Distinct shoppers who searched it, or products whose titles hold it "
                          "(a catalog phrase after kept words: products holding all its words; a searched one: "
                          "the shoppers of the completing phrase).")


class SuggestResponse(BaseModel):
    query: str
    took_ms: float
    suggestions: list[SuggestionItem] = Field(..., description="Best first: searched phrases, then catalog "
                                              "phrases, each by weight; a phrase that starts with the text "
                                              "before one that holds it from a later word.")


class Health(BaseModel):
    status: str
    detail: str | None = None
    pid: int | None = Field(None, description="The answering server process (several run with api.workers > 1).")
    versions: dict[str, str] | None = Field(None, description="Model versions this process serves (readiness).")
    stores: dict[str, str] | None = Field(None, description="Every served store: 'ready', 'loading' or the error "
                                          "that stopped it (readiness; one failed store does not stop the others).")
    reload_errors: dict[str, str] | None = Field(None, description="Stores whose last reload after a change of the "
                                                 "shared state (models, experiment, synonyms file) failed, with why; "
                                                 "they serve what they loaded before (readiness).")
    cpu: dict[str, object] | None = Field(None, description="CPU model, fast-path flags (AVX2, AVX-512 VNNI, AMX), "
                                          "the int8 kernel path ONNX Runtime can use and the precision the "
                                          "cross-encoders compute in (liveness).")
    server: dict[str, int] | None = Field(None, description="Server processes of this server (api.workers), the "
                                          "cores they may use and each model's ONNX Runtime threads in one "
                                          "process (liveness).")


class ErrorBody(BaseModel):
    error: str = Field(..., description="Error type, e.g. invalid_request, not_ready.")
    message: str = Field(..., description="What was wrong, the value, what is allowed.")
    request_id: str | None = None
    detail: list[dict] | None = None


# the answers the routers list in OpenAPI beside their own (each in the ErrorBody shape)
INVALID = {"model": ErrorBody, "description": "Invalid input, named with the value sent and what is allowed: a "
           "field out of its range, or a body that is no JSON this API reads (malformed; not UTF-8; half of a "
           "UTF-16 surrogate pair; an integer of more than 4300 digits; arrays or objects nested about 1000 deep)"}
UNKNOWN_STORE = {"model": ErrorBody, "description": "A store this server does not serve (under /v1/stores/{store}/)"}
RATE_LIMITED = {"model": ErrorBody, "description": "Over the key's or the client's request rate "
                "(api.rate_limit_per_s); Retry-After says when to try again"}
TOO_LARGE = {"model": ErrorBody, "description": "A body over api.max_body_bytes (by its Content-Length, before it "
             "is read; or as sent, in chunks): split it into smaller calls"}
