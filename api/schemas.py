"""Request and response models of the HTTP API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_QUERY_CHARS = 256


class SearchRequest(BaseModel):
    """A search from a storefront."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"query": "cordless drill", "k": 10, "user_id": "u123"}]})

    query: str = Field(..., description=f"Search text, 1..{MAX_QUERY_CHARS} characters after trimming.")
    k: int = Field(10, ge=1, le=100, description="Number of results, 1..100.")
    user_id: str | None = Field(None, min_length=1, max_length=128, description="Shopper id (optional).")

    @field_validator("query")
    @classmethod
    def _trimmed_length(cls, value: str) -> str:
        text = value.strip()
        if not 1 <= len(text) <= MAX_QUERY_CHARS:
            raise ValueError(
                f"query must be 1..{MAX_QUERY_CHARS} characters after trimming whitespace, got {len(text)}"
            )
        return text


class SearchItem(BaseModel):
    product_id: str
    title: str
    score: float = Field(..., description="Score of the last stage that ordered the list.")
    rank: int
    scores: dict[str, float] = Field(default_factory=dict, description="Score per stage (bm25, dense, rrf, ...).")
    ranks: dict[str, int] = Field(default_factory=dict, description="1-based rank per stage.")


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
    versions: dict[str, str] = Field(default_factory=dict, description="Encoder and model versions served.")
    index: IndexInfo
    items: list[SearchItem]


class Health(BaseModel):
    status: str
    detail: str | None = None


class ErrorBody(BaseModel):
    error: str = Field(..., description="Error type, e.g. invalid_request, not_ready.")
    message: str = Field(..., description="What was wrong, the value, what is allowed.")
    request_id: str | None = None
    detail: list[dict] | None = None
