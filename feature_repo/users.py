"""User features: the profile learned from a shopper's history, and request-time
personalization computed against each candidate product."""

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import FeatureView, Field, FileSource, PushSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float32, Float64, Int64, String

from entities import user
from products import product_attributes

DATA = Path(os.environ.get("SHOPRANK_FEATURES_DIR", "../artifacts/features"))

user_activity_push = PushSource(
    name="user_activity_push",
    batch_source=FileSource(name="user_profile_source", path=str(DATA / "user_profile.parquet"),
                            timestamp_field="event_timestamp"),
)

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="top_categories", dtype=Array(Int64)),
        Field(name="category_affinity", dtype=Array(Float32)),
        Field(name="median_price", dtype=Float32),
        Field(name="purchases", dtype=Int64),
        Field(name="recent_items", dtype=Array(String)),
    ],
    source=user_activity_push,
    description="Category affinities (share of past purchases), usual price, recent items.",
)


@on_demand_feature_view(
    sources=[product_attributes, user_profile],
    schema=[
        Field(name="user_category_affinity", dtype=Float64),
        Field(name="price_vs_user", dtype=Float64),
    ],
    mode="python",  # python floats infer as Float64
    description="Affinity of the user for the candidate's category; candidate price / user's median price.",
)
def personalization(inputs: dict[str, Any]) -> dict[str, Any]:
    """Category ids are compared as the floats they round to. A store's own catalog gives 56-bit ids, and a
    training join makes the ``category_id`` column float64 when one of its products has no attributes row,
    which rounds such an id; the profile's ids are integers. As floats both sides round the same way, online
    and in training. (Feast runs this function from its source alone: no helper outside it is seen.)"""
    affinities, ratios = [], []
    for category, price, tops, weights, median in zip(
        inputs["category_id"], inputs["price"], inputs["top_categories"], inputs["category_affinity"],
        inputs["median_price"],
    ):
        share = {float(top): weight for top, weight in zip(tops or [], weights or [])}
        affinities.append(float(share.get(float(category), 0.0)) if category is not None else 0.0)
        # a free product (price 0) is priced below the user's usual price; only an unknown price reads as 1
        ratios.append(float(price / median) if price is not None and median else 1.0)
    return {"user_category_affinity": affinities, "price_vs_user": ratios}
