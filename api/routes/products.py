"""``/v1/admin/products``: live updates of a product's price, stock and promotion (admin scope)."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.deps import ServedDep
from api.routes.admin import require_admin
from api.schemas import INVALID, RATE_LIMITED, ErrorBody, ProductId
from ranking.facts import as_written
from serving.product_updates import update_facts

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody},
                              409: {"model": ErrorBody}, 422: INVALID, 429: RATE_LIMITED,
                              503: {"model": ErrorBody, "description": "The store is still loading"}})


class ProductUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    product_id: ProductId
    price: float | None = Field(None, strict=True, ge=0, le=100_000_000, description="The new price.")
    in_stock: bool | None = Field(None, strict=True, description="In stock now.")
    promoted: bool | None = Field(None, description="On promotion now (the business rules' boost).")

    @field_validator("price")
    @classmethod
    def _kept_to_the_cent(cls, value: float | None) -> float | None:
        """The store keeps prices as float32 (``product_attributes:price``): a price it would hand back changed
        (1234567.89 as 1234567.9) is refused, not saved as another price."""
        if value is not None and as_written(np.array([np.float32(value)], dtype=np.float64))[0] != value:
            raise ValueError(f"price {value!r} cannot be kept as written: the feature store holds prices as "
                             "float32, about 7 significant digits (99999.99 with its cents, whole amounts up to "
                             "16777216)")
        return value

    @model_validator(mode="after")
    def _something(self) -> ProductUpdate:
        if self.price is None and self.in_stock is None and self.promoted is None:
            raise ValueError(f"product {self.product_id!r}: give at least one of price, in_stock, promoted")
        return self


class ProductUpdates(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"products": [
        {"product_id": "P100831", "in_stock": False}, {"product_id": "P101472", "price": 89.0, "promoted": True}]}]})

    products: list[ProductUpdate] = Field(..., min_length=1, max_length=1000, description="1..1000 products.")


class Updated(BaseModel):
    updated: int = Field(..., description="Products written.")
    rows: dict[str, int] = Field(..., description="Rows written per feature view.")


@router.post("/products", response_model=Updated, summary="Update products' price, stock or promotion now")
async def update_products(body: ProductUpdates, served: ServedDep) -> Updated:
    """Writes the given facts to the online store (only those: the rest of each row stays) and reads
    them back; every other server process reads them within ``features.changes_poll_s``. Filters,
    the business rules, listings, recommendations and cached result pages use them from then on (a page
    cached before the update is not served after it has been read)."""
    updates: dict[str, dict[str, object]] = {}
    for product in body.products:
        values = updates.setdefault(product.product_id, {})  # a product given twice: the later values win
        for fact in ("price", "in_stock", "promoted"):
            value = getattr(product, fact)
            if value is not None:
                values[fact] = int(value) if isinstance(value, bool) else value
    return Updated(**await asyncio.to_thread(update_facts, served.engine, updates))
