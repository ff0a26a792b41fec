"""Product features: attributes, inventory, promotions and popularity.

Offline store: Parquet files under $SHOPRANK_FEATURES_DIR written by
`shoprank features build` (from the catalog and the simulated store world,
labelled SIMULATED) and by the learning loop's streaming updater. Popularity is
fed by a PushSource so the event stream updates it online.
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import FeatureView, Field, FileSource, PushSource
from feast.types import Float32, Int64, String

from entities import product

DATA = Path(os.environ.get("SHOPRANK_FEATURES_DIR", "../artifacts/features"))


def _source(name: str) -> FileSource:
    return FileSource(name=f"{name}_source", path=str(DATA / f"{name}.parquet"), timestamp_field="event_timestamp")


product_attributes = FeatureView(
    name="product_attributes",
    entities=[product],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="price", dtype=Float32),
        Field(name="category_id", dtype=Int64),
        Field(name="department_id", dtype=Int64),
        Field(name="category", dtype=String),
        Field(name="brand", dtype=String),
    ],
    source=_source("product_attributes"),
    description="Price, category and brand per product.",
)

inventory = FeatureView(
    name="inventory",
    entities=[product],
    ttl=timedelta(days=3650),
    schema=[Field(name="in_stock", dtype=Int64), Field(name="quantity", dtype=Int64)],
    source=_source("inventory"),
    description="Stock level per product.",
)

promotions = FeatureView(
    name="promotions",
    entities=[product],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="promoted", dtype=Int64),
        Field(name="discount", dtype=Float32),
        Field(name="campaign_start", dtype=Int64),
        Field(name="campaign_end", dtype=Int64),
    ],
    source=_source("promotions"),
    description="Promotion flag, discount and campaign window (unix seconds).",
)

popularity_push = PushSource(name="popularity_push", batch_source=_source("popularity"))

popularity = FeatureView(
    name="popularity",
    entities=[product],
    # Long on purpose: a quiet product's counts fall to 0 through the streaming consumer's pushes as its days
    # leave the windows, not by expiry. A 30-day ttl would make materialization and point-in-time (training)
    # joins drop a row pushed over 30 days ago by the wall clock, so a quiet product would read as missing, not 0.
    ttl=timedelta(days=3650),
    schema=[
        Field(name="impressions_7d", dtype=Int64),
        Field(name="clicks_7d", dtype=Int64),
        Field(name="purchases_7d", dtype=Int64),
        Field(name="impressions_30d", dtype=Int64),
        Field(name="clicks_30d", dtype=Int64),
        Field(name="purchases_30d", dtype=Int64),
        Field(name="ctr_7d", dtype=Float32),
        Field(name="ctr_30d", dtype=Float32),
    ],
    source=popularity_push,
    description="Impressions, clicks, purchases and smoothed CTR over 7 and 30 days.",
)
