"""Offline feature tables for the Feast repo, from a (simulated) store world.

Writes the Parquet files the ``feature_repo/`` sources read: product attributes,
inventory, promotions, weekly popularity snapshots up to the history's last day
and user profiles (one row per user after each purchase, so point-in-time joins
see the profile as it was, built as the streaming consumer builds its pushes),
with the column types of ``online_learning.feature_tables.SCHEMAS``. Popularity
and profiles are computed from the world's *observable* history, never from its
hidden preferences. All rows carry SIMULATED lineage in the folder's ``README``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from online_learning.feature_tables import SCHEMAS, write_table
from online_learning.feature_tables import user_profiles as profiles_of_purchases
from simulation.world import SIMULATED, StoreWorld

logger = logging.getLogger(__name__)


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
    """Per-product counts over trailing 7 and 30 days, every ``every_days`` days back from the history's last
    day (a snapshot on that day too, so the last days are counted). Each is stamped when its counts are complete,
    so a point-in-time join never reads a purchase made after the search: a snapshot counts the days before its
    midnight, and the last one the days through its own, stamped at the history's last purchase.

    A snapshot has a row for each product with purchases in its 30 days, and a row of zeros for each product
    the snapshot before counted that has none now: a point-in-time join reads a product's latest row, so a
    product that went quiet reads 0 rather than its old counts. Purchases come from the history; clicks and
    impressions around them are simulated (about 4 clicks and 60 impressions per purchase, noisy), so CTR
    carries signal without being a copy of purchases.
    """
    rng = np.random.default_rng(seed)
    history = world.history.copy()
    columns = SCHEMAS["popularity"].names
    if history.empty:
        return pd.DataFrame(columns=columns)
    history["day"] = history["event_timestamp"].dt.floor("D")
    daily = history.groupby(["product_id", "day"]).size().rename("purchases").reset_index()
    daily["clicks"] = daily["purchases"] + rng.poisson(3 * daily["purchases"])
    daily["impressions"] = daily["clicks"] + rng.poisson(55 * daily["purchases"])
    end = history["day"].max()
    snapshots = pd.date_range(end, end - pd.Timedelta(days=world.config.history_days), freq=f"-{every_days}D")[::-1]
    counts = [f"{kind}_{window}d" for window in (7, 30) for kind in ("impressions", "clicks", "purchases")]
    rows, counted = [], set()
    last = history["event_timestamp"].max()
    for snapshot in snapshots:
        # a snapshot counts the days before it, as of its midnight; the last one counts its own day too, as of the
        # history's last purchase: no point-in-time read sees a purchase made after it
        through = snapshot + pd.Timedelta(days=1) if snapshot == end else snapshot
        sums = []
        for window in (7, 30):
            part = daily[(daily["day"] < through) & (daily["day"] >= through - pd.Timedelta(days=window))]
            window_sums = part.groupby("product_id")[["impressions", "clicks", "purchases"]].sum()
            sums.append(window_sums.rename(columns=lambda c, w=window: f"{c}_{w}d"))
        snap = pd.concat(sums, axis=1)
        quiet = sorted(counted - set(snap.index))  # counted by the snapshot before, nothing now: zeros
        snap = snap.reindex([*snap.index, *quiet], columns=counts).fillna(0)
        counted = set(snap.index[snap["purchases_30d"] > 0])
        rows.append(snap.rename_axis("product_id").reset_index().assign(
            event_timestamp=last if snapshot == end else snapshot))
    merged = pd.concat(rows, ignore_index=True)
    for column in counts:
        merged[column] = merged[column].astype("int64")
    for window in (7, 30):
        merged[f"ctr_{window}d"] = ((merged[f"clicks_{window}d"] + 1) / (merged[f"impressions_{window}d"] + 30)) \
            .astype("float32")
    return merged[columns]


def user_profiles(world: StoreWorld) -> pd.DataFrame:
    """One profile row per user after each purchase (for point-in-time joins), built as the tables of a
    store's own data build them (:func:`online_learning.feature_tables.user_profiles`, with the streaming
    consumer's :func:`profile_of`: the same ties, the same median)."""
    purchases = world.history.rename(columns={"event_timestamp": "timestamp"}).assign(type="purchase")
    return profiles_of_purchases(purchases, world.products)


def write_feature_tables(world: StoreWorld, folder: Path) -> dict[str, int]:
    """Write every offline table; returns rows per table."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = product_tables(world)
    tables["popularity"] = popularity_snapshots(world)
    tables["user_profile"] = user_profiles(world)
    for name, frame in tables.items():
        write_table(frame, folder, name)
    (folder / "README.md").write_text(
        f"# Offline feature tables\n\n{SIMULATED}: store signals (prices, stock, promotions, popularity, "
        "user histories) were generated by `shoprank features build` for this catalog.\n")
    counts = {name: len(frame) for name, frame in tables.items()}
    logger.info("wrote feature tables to %s: %s", folder, counts)
    return counts
