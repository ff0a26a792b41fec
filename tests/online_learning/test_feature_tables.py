"""The feature store filled from a store's own catalog and event log (``features build --from-catalog``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import feast_repo
from core.feature_store import OnlineFeatureReader
from core.settings import Settings, get_settings
from online_learning.consumers.base import Delivered
from online_learning.consumers.log_sink import ParquetLogSink
from online_learning.events import InteractionEvent, RankingEvent, ShownItem
from online_learning.feature_tables import product_tables, stable_id, write_catalog_tables
from tests.helpers import run_cli

NOW = datetime.now(UTC)
CATALOG = pd.DataFrame({
    "product_id": ["P1", "P2", "P3", "P4"], "title": ["Drill", "Saw", "Paint", "Brush"],
    "category": ["Tools > Drills", "Tools > Saws", "Paint > Interior", None],
    "brand": ["Acme", "Bolt", "Acme", None], "price": [99.0, 49.5, None, 5.0],
    "in_stock": ["true", "false", None, None], "quantity": [3, 0, None, 7], "promoted": ["yes", None, "no", None],
})


def test_the_catalogs_columns_become_the_product_tables() -> None:
    tables = product_tables(CATALOG, NOW)
    attributes = tables["product_attributes"].set_index("product_id")
    assert attributes.loc["P1", "category_id"] == stable_id("Tools > Drills") > 0
    assert attributes.loc["P1", "department_id"] == attributes.loc["P2", "department_id"] == stable_id("Tools")
    assert attributes.loc["P4", "category_id"] == -1 and np.isnan(attributes.loc["P3", "price"])
    assert stable_id("Tools > Drills") == stable_id(" Tools > Drills ")  # the same id on every build and machine
    inventory = tables["inventory"].set_index("product_id")
    assert inventory.to_dict("index") == {  # P3 gives neither: no row, it counts as in stock
        "P1": {"in_stock": 1, "quantity": 3, "event_timestamp": pd.Timestamp(NOW)},
        "P2": {"in_stock": 0, "quantity": 0, "event_timestamp": pd.Timestamp(NOW)},
        "P4": {"in_stock": 1, "quantity": 7, "event_timestamp": pd.Timestamp(NOW)}}
    assert tables["promotions"].set_index("product_id")["promoted"].to_dict() == {"P1": 1, "P3": 0}
    numbers = CATALOG.assign(promoted=[1.0, None, 0.0, float("nan")])  # a Parquet catalog's flags, as floats
    assert product_tables(numbers, NOW)["promotions"].set_index("product_id")["promoted"].to_dict() == {"P1": 1,
                                                                                                     "P3": 0}
    bare = product_tables(CATALOG[["product_id", "title"]], NOW)  # titles only: attributes, no stock or promotion
    assert len(bare["product_attributes"]) == 4 and bare["inventory"].empty and bare["promotions"].empty


def log_of_a_store(root: Path) -> None:
    events: list[Delivered] = []
    for i, (user, product) in enumerate([("u1", "P1"), ("u1", "P3"), ("u1", "P2"), ("u2", "P2")]):
        when = NOW - timedelta(days=10 - i)
        events.append(Delivered("r", 0, len(events), RankingEvent(
            event_id=f"r{i}", request_id=f"r{i}", timestamp=when, user_id=user, query="drill", pipeline="full",
            items=[ShownItem(product_id=p, position=j + 1) for j, p in enumerate(["P1", "P2", "P3"])])))
        for kind in ("click", "purchase"):
            events.append(Delivered("i", 0, len(events), InteractionEvent(
                type=kind, event_id=f"{kind}{i}", request_id=f"r{i}", timestamp=when + timedelta(seconds=30),
                user_id=user, product_id=product, position=1)))
    ParquetLogSink(root)(events)


@pytest.mark.integration
def test_a_store_serves_its_own_features_and_the_streaming_consumer_builds_on_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(home=tmp_path, progress=False)
    log_of_a_store(settings.paths.event_log)
    counts = write_catalog_tables(CATALOG, settings.paths.event_log, feast_repo.features_dir(settings), NOW,
                                  settings.paths.streaming_state)
    # a profile row after each purchase: u1 bought three times, u2 once
    assert counts == {"product_attributes": 4, "inventory": 3, "promotions": 2, "popularity": 3, "user_profile": 4}
    popularity = pd.read_parquet(feast_repo.features_dir(settings) / "popularity.parquet").set_index("product_id")
    assert popularity.loc["P2", ["impressions_30d", "clicks_30d", "purchases_30d", "purchases_7d"]].tolist() == [
        4, 2, 2, 0]  # bought 8 days ago and 7 days less 30 s ago: before the 7 whole days that end today
    feast_repo.apply(settings)
    feast_repo.materialize(settings)
    reader = OnlineFeatureReader(feast_repo.open_store(settings), "ranker_v1")
    try:
        rows = {p: row for p, row in zip(["P1", "P2"], reader.rows(["P1", "P2"]))}
        assert rows["P1"]["price"] == pytest.approx(99.0) and rows["P1"]["category"] == "Tools > Drills"
        assert (rows["P1"]["in_stock"], rows["P2"]["in_stock"], rows["P1"]["promoted"]) == (1, 0, 1)
        assert reader.user_list("u1", "user_profile:recent_items") == ["P2", "P3", "P1"]
    finally:
        reader.close()
    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        from shoprank.commands.loop import streaming_features

        consumer = streaming_features(get_settings())  # no simulated world: the catalog's table
        assert consumer.products["P1"] == (stable_id("Tools > Drills"), 99.0)
        consumer([Delivered("i", 0, 0, InteractionEvent(type="purchase", event_id="late", request_id="r9",
                                                         user_id="u2", product_id="P4", position=1)),
                  Delivered("i", 0, 1, InteractionEvent(type="purchase", event_id="again", request_id="r9",
                                                         user_id="u3", product_id="P2", position=2))])
        reader = OnlineFeatureReader(feast_repo.open_store(settings), "ranker_v1")
        assert reader.user_list("u2", "user_profile:recent_items") == ["P4", "P2"]  # added to the seeded history
        assert reader.rows(["P2"])[0]["purchases_30d"] == 3  # the two logged and the new one
        reader.close()
    finally:
        get_settings.cache_clear()


def test_the_offline_popularity_counts_the_days_the_consumer_counts(tmp_path: Path) -> None:
    from online_learning.consumers.streaming_features import StreamingFeatures, seed_state
    from online_learning.feature_tables import popularity

    now = datetime(2025, 3, 8, 12, 0, tzinfo=UTC)  # the build's clock
    shown = {"A": now - timedelta(days=6, hours=20), "B": now - timedelta(days=6, hours=10),
             "C": now - timedelta(days=20), "D": now - timedelta(hours=1)}  # A: March 1, B: March 2
    rankings = pd.DataFrame({"event_id": [f"r{p}" for p in shown], "product_id": list(shown),
                             "timestamp": pd.to_datetime(list(shown.values()), utc=True)})
    interactions = pd.DataFrame({"event_id": ["cB"], "product_id": ["B"], "user_id": ["u1"], "type": ["click"],
                                 "timestamp": pd.to_datetime([now - timedelta(days=6, hours=9)], utc=True)})
    offline = popularity(rankings, interactions, now - timedelta(seconds=1)).set_index("product_id").sort_index()
    state = tmp_path / "state.sqlite"
    seed_state(state, rankings, interactions)
    consumer = StreamingFeatures(state, {}, lambda source, frame: None)
    streamed = consumer.popularity(sorted(shown)).set_index("product_id")
    columns = ["impressions_7d", "clicks_7d", "impressions_30d", "clicks_30d", "ctr_7d", "ctr_30d"]
    pd.testing.assert_frame_equal(offline[columns], streamed[columns], check_dtype=False)
    # the 7 whole UTC days March 2 to 8: A, shown on March 1 (less than 7 x 24 hours ago), is not counted
    assert offline["impressions_7d"].to_dict() == {"A": 0, "B": 1, "C": 0, "D": 1}


def test_the_command_reads_the_served_catalog_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        code, _, err = run_cli(capsys, "features", "build", "--from-catalog", "--dataset", str(tmp_path))
        assert code == 2 and "leave out --dataset" in err
    finally:
        get_settings.cache_clear()


def test_a_simulated_worlds_history_stays_in_the_profiles_the_consumer_pushes(tmp_path: Path) -> None:
    from online_learning.consumers.streaming_features import StreamingFeatures, seed_history

    state = tmp_path / "state.sqlite"
    history = pd.DataFrame({"user_id": ["w1", "w1", "w2"], "product_id": ["P1", "P2", "P3"],
                            "event_timestamp": pd.to_datetime([NOW - timedelta(days=3), NOW - timedelta(days=2),
                                                               NOW - timedelta(days=1)], utc=True)})
    assert seed_history(state, history, prefix="world-") == 3
    assert seed_history(state, history.iloc[:2], prefix="world-") == 2  # a new world: the old one's purchases go
    pushed: list[pd.DataFrame] = []
    consumer = StreamingFeatures(state, {"P1": (1, 10.0), "P2": (1, 20.0), "P4": (2, 5.0)},
                                 lambda source, frame: pushed.append(frame))
    assert pushed == []  # seeding marks nothing to push
    consumer([Delivered("i", 0, 0, InteractionEvent(type="purchase", event_id="e1", request_id="r1", user_id="w1",
                                                     product_id="P4", position=1))])
    profile = pushed[-1].set_index("user_id").loc["w1"]
    assert profile["purchases"] == 3 and list(profile["recent_items"]) == ["P4", "P2", "P1"]
    assert consumer.db.execute("SELECT COUNT(*) FROM purchases WHERE user_id = 'w2'").fetchone()[0] == 0


def test_pushes_are_stamped_after_the_last_one_whatever_the_events_clock(tmp_path: Path) -> None:
    from online_learning.consumers.streaming_features import StreamingFeatures

    pushed: list[pd.DataFrame] = []
    consumer = StreamingFeatures(tmp_path / "state.sqlite", {"P1": (1, 10.0)}, lambda s, frame: pushed.append(frame))
    for i, days_ago in enumerate((1, 3, 3)):  # then two late clicks: the events' clock does not move
        consumer([Delivered("i", 0, i, InteractionEvent(type="click", event_id=f"c{i}", request_id="r", user_id="u1",
                                                         product_id="P1", position=1,
                                                         timestamp=NOW - timedelta(days=days_ago)))])
    stamps = [frame["event_timestamp"].iloc[0] for frame in pushed]
    # an online store keeps a row only when its stamp is newer (Redis): equal stamps lost the late counts
    assert stamps == sorted(set(stamps)) and len(stamps) == 3 and stamps[0] >= pd.Timestamp(NOW)
    assert pushed[-1]["clicks_30d"].iloc[0] == 3


def test_the_consumer_and_the_offline_table_build_one_profile(tmp_path: Path) -> None:
    from online_learning.consumers.streaming_features import StreamingFeatures
    from online_learning.feature_tables import user_profiles

    attributes = product_tables(CATALOG, NOW)["product_attributes"]  # P3: no price; P4: no category
    bought = [("P1", 1), ("P3", 2), ("P4", 3)]
    interactions = pd.DataFrame({"event_id": [f"b{i}" for i, _ in enumerate(bought)], "type": "purchase",
                                 "user_id": "u1", "product_id": [p for p, _ in bought],
                                 "timestamp": [NOW - timedelta(hours=5 - h) for _, h in bought]})
    offline = user_profiles(interactions, attributes).drop(columns="event_timestamp").iloc[-1].to_dict()
    pushed: list[pd.DataFrame] = []
    known = {row.product_id: (row.category_id, row.price) for row in attributes.itertuples()}
    consumer = StreamingFeatures(tmp_path / "state.sqlite", known, lambda s, frame: pushed.append(frame))
    consumer([Delivered("i", 0, i, InteractionEvent(type="purchase", event_id=f"b{i}", request_id="r", user_id="u1",
                                                     product_id=p, position=1, timestamp=NOW - timedelta(hours=5 - h)))
              for i, (p, h) in enumerate(bought)])
    streamed = pushed[-1].drop(columns="event_timestamp").iloc[0].to_dict()
    # before: the consumer counted "no category" (-1) as a top category and its median price was NaN
    assert offline == streamed
    assert streamed["top_categories"] == [stable_id("Tools > Drills"), stable_id("Paint > Interior")]
    assert streamed["category_affinity"] == [0.5, 0.5] and streamed["median_price"] == 52.0  # 99 and 5
    ahead = interactions.assign(timestamp=NOW + timedelta(hours=1))  # a client's clock an hour fast
    assert user_profiles(ahead, attributes, latest=NOW)["event_timestamp"].iloc[0] == pd.Timestamp(NOW)


def test_a_running_consumer_reads_the_product_attributes_a_rebuild_writes(tmp_path: Path) -> None:
    from online_learning.consumers.streaming_features import ProductAttributes, StreamingFeatures
    from online_learning.feature_tables import write_table

    drill = pd.DataFrame({"product_id": ["P1"], "title": ["Drill"], "category": ["Tools > Drills"], "price": [99.0]})
    write_table(product_tables(drill, NOW)["product_attributes"], tmp_path, "product_attributes")
    pushed: list[pd.DataFrame] = []
    consumer = StreamingFeatures(tmp_path / "state.sqlite", ProductAttributes(tmp_path / "product_attributes.parquet"),
                                 lambda source, frame: pushed.append(frame))
    saw = pd.DataFrame({"product_id": ["P9"], "title": ["Saw"], "category": ["Tools > Saws"], "price": [20.0]})
    rebuilt = product_tables(pd.concat([drill, saw], ignore_index=True), NOW)["product_attributes"]
    write_table(rebuilt, tmp_path, "product_attributes")  # the catalog gained P9; the consumer keeps running
    consumer([Delivered("i", 0, 0, InteractionEvent(type="purchase", event_id="b1", request_id="r", user_id="u1",
                                                     product_id="P9", position=1, timestamp=NOW))])
    profile = pushed[-1].set_index("user_id").loc["u1"]
    assert list(profile["top_categories"]) == [stable_id("Tools > Saws")] and profile["median_price"] == 20.0


def test_a_rebuild_overwrites_what_the_catalog_and_the_log_no_longer_give(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, progress=False)
    log_of_a_store(settings.paths.event_log)
    folder = feast_repo.features_dir(settings)
    write_catalog_tables(CATALOG, settings.paths.event_log, folder, NOW, settings.paths.streaming_state)
    later = NOW + timedelta(days=45)  # no event in the last 30 days; the catalog gives no stock or promotion
    counts = write_catalog_tables(CATALOG[["product_id", "title"]], settings.paths.event_log, folder, later,
                                  settings.paths.streaming_state)
    assert counts["popularity"] == 3 and counts["inventory"] == 3 and counts["promotions"] == 2

    def latest(name: str) -> pd.DataFrame:  # the second build's rows (the first one's stay beside them)
        table = pd.read_parquet(folder / f"{name}.parquet")
        return table[table["event_timestamp"] == pd.Timestamp(later - timedelta(seconds=1))].set_index("product_id")

    assert latest("popularity")["purchases_30d"].to_dict() == {"P1": 0, "P2": 0, "P3": 0}  # were kept online at 1, 2, 1
    assert latest("inventory")["in_stock"].to_dict() == {"P1": 1, "P2": 1, "P4": 1}  # P2's stock-out is unknown now
    assert latest("promotions")["promoted"].to_dict() == {"P1": 0, "P3": 0}


@pytest.mark.integration
def test_training_and_serving_read_one_affinity_for_a_catalogs_large_category_ids(tmp_path: Path) -> None:
    from ranking.training.ltr_data import historical_features

    settings = Settings(home=tmp_path, progress=False)
    log_of_a_store(settings.paths.event_log)  # u1 bought P1 (drills, 99), P3 (paint, no price), P2 (saws, 49.5)
    free = pd.DataFrame({"product_id": ["P5"], "title": ["Drill bit"], "category": ["Tools > Drills"], "price": [0.0]})
    write_catalog_tables(pd.concat([CATALOG, free], ignore_index=True), settings.paths.event_log,
                         feast_repo.features_dir(settings), NOW, settings.paths.streaming_state)
    assert stable_id("Tools > Drills") > 2**53  # past what a float64 holds exactly
    feast_repo.apply(settings)
    feast_repo.materialize(settings)
    products = ["P1", "P5", "NEW"]  # a product with no attributes row makes the joined category_id float64
    entities = pd.DataFrame({"product_id": products, "user_id": "u1", "event_timestamp": NOW + timedelta(hours=1)})
    trained = historical_features(feast_repo.open_store(settings), "ranker_v1", entities)
    reader = OnlineFeatureReader(feast_repo.open_store(settings), "ranker_v1")
    try:
        served = reader.fetch(products, "u1").columns
    finally:
        reader.close()
    for columns in (trained, served):
        assert list(columns["user_category_affinity"]) == pytest.approx([1 / 3, 1 / 3, 0.0])
        assert list(columns["price_vs_user"]) == pytest.approx([99 / 74.25, 0.0, 1.0])  # P5 is free


@pytest.mark.integration
def test_a_store_without_events_writes_tables_training_can_join(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from ranking.training.ltr_data import historical_features

    settings = Settings(home=tmp_path, progress=False)
    folder = feast_repo.features_dir(settings)
    counts = write_catalog_tables(CATALOG[["product_id", "title", "price"]], settings.paths.event_log, folder, NOW,
                                  settings.paths.streaming_state)  # no stock, no promotion, no event
    assert counts == {"product_attributes": 4, "inventory": 0, "promotions": 0, "popularity": 0, "user_profile": 0}
    for name in counts:  # empty tables keep their types: string keys, UTC times, integer counts
        schema = pq.read_schema(folder / f"{name}.parquet")
        assert str(schema.field("user_id" if name == "user_profile" else "product_id").type) == "string"
        assert str(schema.field("event_timestamp").type) == "timestamp[ns, tz=UTC]"
    assert str(pq.read_schema(folder / "popularity.parquet").field("clicks_7d").type) == "int64"
    feast_repo.apply(settings)
    entities = pd.DataFrame({"product_id": ["P1", "P2"], "user_id": "u1", "event_timestamp": NOW + timedelta(hours=1)})
    trained = historical_features(feast_repo.open_store(settings), "ranker_v1", entities)
    assert trained["price"].tolist() == [99.0, 49.5] and trained["clicks_7d"].isna().all()


def test_a_build_keeps_the_rows_before_it_that_logged_impressions_can_join_to(tmp_path: Path) -> None:
    from online_learning.feature_tables import with_history, write_table

    def day(n: int) -> pd.Timestamp:
        return pd.Timestamp("2026-03-01", tz="UTC") + pd.Timedelta(days=n)

    write_table(pd.DataFrame({"product_id": "P1", "price": [10.0, 11.0, 12.0], "category_id": 1, "department_id": 1,
                              "category": "Tools", "brand": None, "event_timestamp": [day(1), day(2), day(5)]}),
                tmp_path, "product_attributes")
    build = pd.DataFrame({"product_id": "P1", "price": [99.0, 13.0], "category_id": 1, "department_id": 1,
                          "category": "Tools", "brand": None, "event_timestamp": [day(5), day(6)]})
    rows = with_history(build, tmp_path / "product_attributes.parquet", "product_id", first_day=day(3))
    # day 1 goes (the log starts on day 3; day 2's row is what a day-3 impression reads); day 5 stays as written
    assert rows.set_index("event_timestamp")["price"].to_dict() == {day(2): 11.0, day(5): 12.0, day(6): 13.0}
    profile = {"top_categories": [[1]], "category_affinity": [[1.0]], "median_price": 5.0, "purchases": 1,
               "recent_items": [["P1"]]}
    write_table(pd.DataFrame({"user_id": "u1", **profile, "event_timestamp": [day(2)]}), tmp_path, "user_profile")
    rows = with_history(pd.DataFrame({"user_id": "u1", **profile, "event_timestamp": [day(4)]}),
                        tmp_path / "user_profile.parquet", "user_id", first_day=day(3))
    assert rows["event_timestamp"].tolist() == [day(4)]  # a profile from purchases the log no longer holds goes


@pytest.mark.integration
def test_a_rebuild_keeps_the_features_logged_impressions_were_served_with(tmp_path: Path) -> None:
    from ranking.training.ltr_data import historical_features

    settings = Settings(home=tmp_path, progress=False)
    folder = feast_repo.features_dir(settings)
    write_catalog_tables(CATALOG, settings.paths.event_log, folder, NOW - timedelta(days=20))  # nothing logged yet
    log_of_a_store(settings.paths.event_log)  # u1 buys P1 10 days ago, P3 9 days ago, P2 8 days ago
    first, second = NOW - timedelta(days=2), NOW - timedelta(days=1)
    write_catalog_tables(CATALOG, settings.paths.event_log, folder, first, settings.paths.streaming_state)
    repriced = CATALOG.assign(price=[89.0, 49.5, None, 5.0], in_stock=["false", "false", None, None])
    write_catalog_tables(repriced, settings.paths.event_log, folder, second, settings.paths.streaming_state)
    feast_repo.apply(settings)
    when = [first + timedelta(hours=12), second + timedelta(hours=1),  # between the builds, after the second
            NOW - timedelta(days=9, hours=12), NOW - timedelta(days=7)]  # after u1's first purchase, the third
    # (P4 then: Feast's file store drops a row whose product has rows in a view, all of them later; P1's
    # popularity starts with the first build)
    entities = pd.DataFrame({"product_id": ["P1", "P1", "P4", "P4"], "user_id": "u1", "event_timestamp": when})
    trained = historical_features(feast_repo.open_store(settings), "ranker_v1", entities)
    assert trained["price"].tolist()[:2] == [99.0, 89.0] and trained["in_stock"].tolist()[:2] == [1, 0]
    # u1's profile as it was: P1 (99) bought, then P3 (no price) and P2 (49.5) too
    assert trained["median_price"].tolist()[2:] == [99.0, 74.25]


def test_an_erased_shopper_leaves_no_profile_row_in_the_tables_history(tmp_path: Path) -> None:
    import shutil

    from online_learning.privacy import forget

    settings = Settings(home=tmp_path, progress=False)
    log_of_a_store(settings.paths.event_log)
    ParquetLogSink(settings.paths.event_log)([Delivered("r", 0, 99, RankingEvent(  # the log's first day stays
        event_id="r9", request_id="r9", timestamp=NOW - timedelta(days=12), user_id="u9", query="saw",
        pipeline="full", items=[ShownItem(product_id="P2", position=1)]))])
    folder, paths = feast_repo.features_dir(settings), settings.paths
    write_catalog_tables(CATALOG, paths.event_log, folder, NOW, paths.streaming_state, paths.forgotten)
    shutil.copy(folder / "user_profile.parquet", tmp_path / "read-by-a-build.parquet")
    forget(paths, ["u1"], [], datetime.now(UTC))
    # a build that read the table before the erasure writes it back after: the erasure list still holds
    shutil.copy(tmp_path / "read-by-a-build.parquet", folder / "user_profile.parquet")
    write_catalog_tables(CATALOG, paths.event_log, folder, NOW + timedelta(hours=1), paths.streaming_state,
                         paths.forgotten)
    assert set(pd.read_parquet(folder / "user_profile.parquet")["user_id"]) == {"u2"}


def test_an_erasure_while_a_build_runs_puts_none_of_the_shoppers_purchases_back(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`events forget` landing after the build read the log and before it seeded the streaming state: before, the
    build seeded the erased shopper's purchases back (it held no lock of the erasure list, and read no list).
    Now the erasure waits for the build; a shopper listed before the build, whose log rows a running `forget`
    has not erased yet (it lists first), is left out."""
    import sqlite3
    import threading
    from contextlib import closing

    import online_learning.feature_tables as feature_tables
    from online_learning.forget_list import ForgetList
    from online_learning.privacy import forget

    paths = Settings(home=tmp_path, progress=False).paths
    log_of_a_store(paths.event_log)
    seed, erasing = feature_tables.seed_state, threading.Thread(target=forget, args=(paths, ["u1"], [], NOW))

    def seeded_after_an_erasure(*args):  # type: ignore[no-untyped-def]
        erasing.start()
        erasing.join(timeout=3)  # before: done by then; now it waits for the build
        return seed(*args)

    def buyers(state: Path) -> set[str]:
        with closing(sqlite3.connect(state)) as db:
            return {user for (user,) in db.execute("SELECT user_id FROM purchases")}

    monkeypatch.setattr(feature_tables, "seed_state", seeded_after_an_erasure)
    write_catalog_tables(CATALOG, paths.event_log, tmp_path / "f1", NOW, paths.streaming_state, paths.forgotten)
    erasing.join()
    assert buyers(paths.streaming_state) == {"u2"}
    monkeypatch.setattr(feature_tables, "seed_state", seed)
    ForgetList(paths.forgotten).add(["u2"], [], datetime.now(UTC))  # listed; its log rows not erased yet
    write_catalog_tables(CATALOG, paths.event_log, tmp_path / "f2", NOW, tmp_path / "state.sqlite", paths.forgotten)
    assert buyers(tmp_path / "state.sqlite") == set()
    assert set(pd.read_parquet(tmp_path / "f2" / "user_profile.parquet")["user_id"]) == set()


def test_a_build_from_the_catalog_replaces_a_simulated_worlds_tables(tmp_path: Path) -> None:
    from online_learning.feature_tables import write_table

    settings = Settings(home=tmp_path, progress=False)
    folder = feast_repo.features_dir(settings)
    folder.mkdir(parents=True)
    write_table(pd.DataFrame({"user_id": ["U0001"], "top_categories": [[3]], "category_affinity": [[1.0]],
                              "median_price": [5.0], "purchases": [1], "recent_items": [["P1"]],
                              "event_timestamp": [pd.Timestamp(NOW - timedelta(days=1))]}), folder, "user_profile")
    (folder / "README.md").write_text("# Offline feature tables\n\nSIMULATED: generated by simulation.world\n")
    log_of_a_store(settings.paths.event_log)
    write_catalog_tables(CATALOG, settings.paths.event_log, folder, NOW, settings.paths.streaming_state)
    assert set(pd.read_parquet(folder / "user_profile.parquet")["user_id"]) == {"u1", "u2"}


def _bought(i: int, product: str, days_ago: float) -> list[Delivered]:
    return [Delivered("i", 0, i, InteractionEvent(type="purchase", event_id=f"b{i}", request_id="r", user_id="u1",
                                                  product_id=product, position=1,
                                                  timestamp=NOW - timedelta(days=days_ago)))]


def _last_profile(folder: Path) -> dict[str, object]:
    profiles = pd.read_parquet(folder / "user_profile.parquet").sort_values("event_timestamp", kind="stable")
    row = profiles.drop(columns="event_timestamp").iloc[-1]
    return {name: list(value) if isinstance(value, np.ndarray) else value for name, value in row.items()}


def test_a_built_profile_counts_every_purchase_the_consumer_holds(tmp_path: Path) -> None:
    from online_learning.consumers.streaming_features import ProductAttributes, StreamingFeatures
    from online_learning.feature_tables import write_table

    settings = Settings(home=tmp_path, progress=False)
    folder = feast_repo.features_dir(settings)
    folder.mkdir(parents=True)
    write_table(product_tables(CATALOG, NOW - timedelta(days=60))["product_attributes"], folder, "product_attributes")
    pushed: list[pd.DataFrame] = []
    attributes = ProductAttributes(folder / "product_attributes.parquet")
    consumer = StreamingFeatures(settings.paths.streaming_state, attributes, lambda source, frame: pushed.append(frame))
    sink = ParquetLogSink(settings.paths.event_log)
    for i, (product, days_ago) in enumerate([("P1", 40), ("P4", 5)]):  # the first one before the last 30 days
        consumer(_bought(i, product, days_ago))
        sink(_bought(i, product, days_ago))
    write_catalog_tables(CATALOG, settings.paths.event_log, folder, NOW, settings.paths.streaming_state)
    streamed = pushed[-1].drop(columns="event_timestamp").iloc[0].to_dict()
    # before: the build counted the last 30 days' purchases only (1, at 5.0), the consumer both (99.0 and 5.0)
    assert _last_profile(folder) == streamed and streamed["purchases"] == 2 and streamed["median_price"] == 52.0


def test_a_built_profile_knows_a_product_deleted_from_the_catalog_as_the_consumer_does(tmp_path: Path) -> None:
    from online_learning.consumers.streaming_features import ProductAttributes, StreamingFeatures

    settings = Settings(home=tmp_path, progress=False)
    folder, log = feast_repo.features_dir(settings), settings.paths.event_log
    sink = ParquetLogSink(log)
    sink(_bought(0, "P1", 3))
    write_catalog_tables(CATALOG, log, folder, NOW - timedelta(days=2), settings.paths.streaming_state)
    pushed: list[pd.DataFrame] = []
    attributes = ProductAttributes(folder / "product_attributes.parquet")
    consumer = StreamingFeatures(settings.paths.streaming_state, attributes, lambda source, frame: pushed.append(frame))
    without_drill = CATALOG[CATALOG["product_id"] != "P1"]  # P1 leaves the catalog; its attribute rows stay
    write_catalog_tables(without_drill, log, folder, NOW - timedelta(days=1), settings.paths.streaming_state)
    consumer(_bought(1, "P4", 0.5))
    sink(_bought(1, "P4", 0.5))
    write_catalog_tables(without_drill, log, folder, NOW, settings.paths.streaming_state)
    streamed = pushed[-1].drop(columns="event_timestamp").iloc[0].to_dict()
    # before: the build gave P1 no category and no price (median 5.0, one top category)
    assert _last_profile(folder) == streamed and streamed["median_price"] == 52.0
    assert streamed["top_categories"] == [stable_id("Tools > Drills")]


def test_a_search_that_found_nothing_counts_no_impression(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, progress=False)
    folder = feast_repo.features_dir(settings)
    ParquetLogSink(settings.paths.event_log)([Delivered("r", 0, 0, RankingEvent(
        event_id="r0", request_id="r0", timestamp=NOW - timedelta(hours=1), user_id="u1", query="xyzzy",
        pipeline="full", items=[]))])  # logged as one row without a product
    for now in (NOW, NOW + timedelta(hours=1)):  # the second build gives zeros to the products the state counts
        write_catalog_tables(CATALOG, settings.paths.event_log, folder, now, settings.paths.streaming_state)
    # before: the state counted an impression of a product "None", and the tables gave it a popularity row
    assert set(pd.read_parquet(folder / "popularity.parquet")["product_id"]) == set()


def test_the_running_profile_after_every_purchase_is_the_profile_of_all_the_purchases_up_to_it() -> None:
    """The offline table keeps a profile a purchase, built one purchase at a time, and the consumer builds one
    from all the purchases: both must be the profile of the purchases so far (unknown categories and prices,
    ties, even and odd counts), computed here from its definition."""
    import math
    import random
    from collections import Counter

    from online_learning.consumers.streaming_features import (
        RECENT_ITEMS,
        TOP_CATEGORIES,
        RunningProfile,
        profile_of,
    )

    def defined(bought: list[tuple[str, int, float]]) -> dict[str, object]:
        shares = Counter(c for _, c, _ in bought if c >= 0)
        top = sorted(shares, key=lambda c: (-shares[c], c))[:TOP_CATEGORIES]
        prices = [p for _, _, p in bought if not math.isnan(p)]
        return {"top_categories": top, "category_affinity": [shares[c] / sum(shares.values()) for c in top],
                "median_price": float(np.median(prices)) if prices else float("nan"), "purchases": len(bought),
                "recent_items": [p for p, _, _ in bought[-RECENT_ITEMS:]][::-1]}

    rng = random.Random(5)
    for _ in range(50):
        running, items = RunningProfile(), []
        for n in range(rng.randint(1, 40)):
            item = (f"P{rng.randint(0, 9)}", rng.choice([-1, 1, 2, 3, 4, 5, 6, 7]),
                    rng.choice([float("nan"), 1.0, 2.5, 10.0, rng.random() * 100]))
            items.append(item)
            running.add(item)
            expected = defined(items)
            for got in (running.profile(), profile_of(items)):
                assert math.isnan(got["median_price"]) == math.isnan(expected["median_price"])
                if not math.isnan(expected["median_price"]):
                    assert got["median_price"] == expected["median_price"]
                assert {k: v for k, v in got.items() if k != "median_price"} == {
                    k: v for k, v in expected.items() if k != "median_price"}
