"""Offline feature tables for the Feast repo, from a (simulated) store world.

Writes the Parquet files the ``feature_repo/`` sources read: product attributes,
inventory, promotions, weekly popularity snapshots and user profiles (one row
per user after each purchase, so point-in-time joins see the profile as it
was). Popularity and profiles are computed from the world's *observable*
history, never from its hidden preferences. All rows carry SIMULATED lineage
in the folder's ``README``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from simulation.world import SIMULATED, StoreWorld

logger = logging.getLogger(__name__)

TOP_CATEGORIES = 5
RECENT_ITEMS = 5


def product_tables(world: StoreWorld) -> dict[str, pd.DataFrame]:
    p = world.products
    ts = pd.to_datetime(p["event_timestamp"], utc=True)
    return {
        "product_attributes": pd.DataFrame({
            "product_id": p["product_id"], "price": p["price"].astype("float32"),
            "category_id": p["category_id"].astype("int64"), "department_id": p["department_id"].astype("int64"),
            "category": p["category"], "brand": p["brand"], "event_timestamp": ts}),
        "inventory": pd.DataFrame({
            "product_id": p["product_id"], "in_stock": p["in_stock"].astype("int64"),
            "quantity": p["quantity"].astype("int64"), "event_timestamp": ts}),
        "promotions": pd.DataFrame({
            "product_id": p["product_id"], "promoted": p["promoted"].astype("int64"),
            "discount": p["discount"].astype("float32"),
            "campaign_start": pd.to_datetime(p["campaign_start"], utc=True).astype("int64") // 10**9,
            "campaign_end": pd.to_datetime(p["campaign_end"], utc=True).astype("int64") // 10**9,
            "event_timestamp": ts}),
    }


def popularity_snapshots(world: StoreWorld, seed: int = 0, every_days: int = 7) -> pd.DataFrame:
    """Weekly per-product counts over trailing 7 and 30 days (products with activity).

    Purchases come from the history; clicks and impressions around them are
    simulated (about 4 clicks and 60 impressions per purchase, noisy), so
    CTR carries signal without being a copy of purchases.
    """
    rng = np.random.default_rng(seed)
    history = world.history.copy()
    if history.empty:
        return pd.DataFrame(columns=["product_id", "event_timestamp"])
    history["day"] = history["event_timestamp"].dt.floor("D")
    daily = history.groupby(["product_id", "day"]).size().rename("purchases").reset_index()
    daily["clicks"] = daily["purchases"] + rng.poisson(3 * daily["purchases"])
    daily["impressions"] = daily["clicks"] + rng.poisson(55 * daily["purchases"])
    end = history["day"].max()
    rows = []
    for snapshot in pd.date_range(end - pd.Timedelta(days=world.config.history_days), end, freq=f"{every_days}D"):
        for window in (7, 30):
            part = daily[(daily["day"] <= snapshot) & (daily["day"] > snapshot - pd.Timedelta(days=window))]
            sums = part.groupby("product_id")[["impressions", "clicks", "purchases"]].sum()
            sums.columns = [f"{c}_{window}d" for c in sums.columns]
            sums["event_timestamp"] = snapshot
            rows.append(sums.reset_index())
    merged = pd.concat(rows).groupby(["product_id", "event_timestamp"], as_index=False).sum()
    for window in (7, 30):
        merged[f"ctr_{window}d"] = ((merged[f"clicks_{window}d"] + 1) / (merged[f"impressions_{window}d"] + 30)).astype("float32")
    for column in merged.columns:
        if column.startswith(("impressions", "clicks", "purchases")):
            merged[column] = merged[column].astype("int64")
    return merged


def user_profiles(world: StoreWorld) -> pd.DataFrame:
    """One profile row per user after each purchase (for point-in-time joins)."""
    history = world.history.merge(world.products[["product_id", "category_id", "price"]], on="product_id")
    rows = []
    for user_id, events in history.groupby("user_id", sort=True):
        events = events.sort_values("event_timestamp")
        categories, prices, items = [], [], []
        for category, price, item, when in events[["category_id", "price", "product_id", "event_timestamp"]].itertuples(index=False):
            categories.append(int(category))
            prices.append(float(price))
            items.append(item)
            counts = pd.Series(categories).value_counts()
            top = counts.index[:TOP_CATEGORIES].tolist()
            rows.append({"user_id": user_id, "top_categories": [int(c) for c in top],
                         "category_affinity": [float(counts[c] / len(categories)) for c in top],
                         "median_price": float(np.median(prices)), "purchases": len(categories),
                         "recent_items": items[-RECENT_ITEMS:][::-1], "event_timestamp": when})
    return pd.DataFrame(rows)


def write_feature_tables(world: StoreWorld, folder: Path) -> dict[str, int]:
    """Write every offline table; returns rows per table."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = product_tables(world)
    tables["popularity"] = popularity_snapshots(world)
    tables["user_profile"] = user_profiles(world)
    for name, frame in tables.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    (folder / "README.md").write_text(
        f"# Offline feature tables\n\n{SIMULATED}: store signals (prices, stock, promotions, popularity, "
        "user histories) were generated by `shoprank features build` for this catalog.\n")
    counts = {name: len(frame) for name, frame in tables.items()}
    logger.info("wrote feature tables to %s: %s", folder, counts)
    return counts
