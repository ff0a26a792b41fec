"""The SIMULATED offline feature tables: profiles built as the streaming consumer builds its pushes, and
popularity snapshots that reach the history's last day."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from online_learning.consumers.streaming_features import profile_of
from simulation.feature_data import popularity_snapshots, user_profiles


def test_simulated_profiles_are_the_consumers_profiles() -> None:
    categories = [30, 7, 12, 3, 25, 9]  # six purchases, one per category: a six-way tie
    products = pd.DataFrame({"product_id": [f"P{i}" for i in range(6)], "category_id": categories,
                             "price": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]})
    history = pd.DataFrame({"user_id": "u1", "product_id": products["product_id"],
                            "event_timestamp": pd.date_range("2026-10-01", periods=6, freq="D", tz="UTC")})
    profiles = user_profiles(SimpleNamespace(history=history, products=products))
    assert len(profiles) == 6  # one row after each purchase
    bought = list(zip(products["product_id"], categories, products["price"]))
    for n, (_, row) in enumerate(profiles.iterrows(), start=1):
        assert row.drop(["user_id", "event_timestamp"]).to_dict() == profile_of(bought[:n])
    assert profiles["top_categories"].iloc[-1] == [3, 7, 9, 12, 25]  # ties: the lower id, as the consumer


def test_simulated_popularity_counts_the_last_day_and_zeroes_quiet_products() -> None:
    end = pd.Timestamp("2026-06-30", tz="UTC")
    history = pd.DataFrame({"user_id": ["u1", "u2"], "product_id": ["QUIET", "BUSY"],
                            "event_timestamp": [end - pd.Timedelta(days=55), end + pd.Timedelta(hours=9)]})
    snapshots = popularity_snapshots(SimpleNamespace(history=history, config=SimpleNamespace(history_days=60)))
    # a snapshot on the history's last day, stamped at its last purchase: a point-in-time read before 09:00 that
    # day does not see it (it had been stamped at midnight, counting the purchase of 09:00)
    assert snapshots["event_timestamp"].max() == end + pd.Timedelta(hours=9)
    busy = snapshots[snapshots["product_id"] == "BUSY"]
    assert busy[["purchases_7d", "purchases_30d"]].values.tolist() == [[1, 1]]
    quiet = snapshots[snapshots["product_id"] == "QUIET"].set_index("event_timestamp")["purchases_30d"]
    assert quiet.iloc[-1] == 0 and quiet.iloc[:-1].tolist() == [1] * (len(quiet) - 1)  # one row of zeros
    assert quiet.index[-1] < end  # written once, when the purchase left the 30 days
