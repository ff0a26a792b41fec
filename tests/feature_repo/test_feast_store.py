"""The Feast repo with real online stores (sqlite; Redis started by the test).

Hand-made feature rows with known timestamps check point-in-time joins, that
no entity row is dropped or reordered, the on-demand personalization features,
and that the online reader returns the latest values from both stores.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import feast_repo
from core.feature_store import OnlineFeatureReader
from core.settings import FeatureSettings, Settings
from online_learning.local_broker import free_port
from ranking.training.ltr_data import historical_features

pytestmark = pytest.mark.integration

T = pd.Timestamp("2026-10-01", tz="UTC")


def day(n: int) -> pd.Timestamp:
    return T + pd.Timedelta(days=n)


def write_tables(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"product_id": ["P1", "P1", "P2"], "price": np.float32([10, 12, 5]), "category_id": [1, 1, 2],
                  "department_id": [0, 0, 0], "category": ["drills", "drills", "paint"], "brand": ["A", "A", "B"],
                  "event_timestamp": [day(0), day(2), day(1)]}).to_parquet(folder / "product_attributes.parquet")
    pd.DataFrame({"product_id": ["P1", "P2"], "in_stock": [1, 0], "quantity": [3, 0],
                  "event_timestamp": [day(0), day(1)]}).to_parquet(folder / "inventory.parquet")
    pd.DataFrame({"product_id": ["P1", "P2"], "promoted": [0, 1], "discount": np.float32([0, 0.2]),
                  "campaign_start": [0, 0], "campaign_end": [0, 0],
                  "event_timestamp": [day(0), day(1)]}).to_parquet(folder / "promotions.parquet")
    counts = {f"{kind}_{w}d": [1, 5] for kind in ("impressions", "clicks", "purchases") for w in (7, 30)}
    pd.DataFrame({"product_id": ["P1", "P1"], **counts, "ctr_7d": np.float32([0.1, 0.3]),
                  "ctr_30d": np.float32([0.1, 0.3]), "event_timestamp": [day(0), day(3)]}).to_parquet(
        folder / "popularity.parquet")
    pd.DataFrame({"user_id": ["u1", "u1"], "top_categories": [[1], [2, 1]], "category_affinity": [[1.0], [0.6, 0.4]],
                  "median_price": np.float32([20, 10]), "purchases": [1, 2], "recent_items": [["P1"], ["P2", "P1"]],
                  "event_timestamp": [day(0), day(2)]}).to_parquet(folder / "user_profile.parquet")


@pytest.fixture(scope="module")
def sqlite_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("feast"), progress=False)
    write_tables(feast_repo.features_dir(settings))
    feast_repo.apply(settings)
    return settings


def test_point_in_time_join_keeps_every_row_in_order(sqlite_settings: Settings) -> None:
    store = feast_repo.open_store(sqlite_settings)
    entities = pd.DataFrame({
        "product_id": ["P1", "P2", "P1", "P3", "P2"],
        "user_id": ["u1", "u1", "u1", "u1", "nobody"],
        "event_timestamp": [day(1), day(0), day(3), day(3), day(2)],
    })
    out = historical_features(store, "ranker_v1", entities)
    assert len(out) == 5
    assert out["price"].iloc[0] == pytest.approx(10)      # P1 at day 1: the day-0 row
    assert np.isnan(out["price"].iloc[1])                  # P2 before its first row: missing, not dropped
    assert out["price"].iloc[2] == pytest.approx(12)      # P1 at day 3: the day-2 row
    assert np.isnan(out["price"].iloc[3])                  # unknown product: missing, in place
    assert out["price"].iloc[4] == pytest.approx(5)
    assert out["ctr_7d"].iloc[0] == pytest.approx(0.1) and out["ctr_7d"].iloc[2] == pytest.approx(0.3)
    # personalization: u1's profile at day 1 is {category 1: 1.0}, median price 20
    assert out["user_category_affinity"].iloc[0] == pytest.approx(1.0)
    assert out["price_vs_user"].iloc[0] == pytest.approx(10 / 20)
    # at day 3 the profile is {2: 0.6, 1: 0.4}, median 10
    assert out["user_category_affinity"].iloc[2] == pytest.approx(0.4)
    assert out["price_vs_user"].iloc[2] == pytest.approx(12 / 10)


def test_rows_sharing_a_product_and_a_time_all_get_their_features(sqlite_settings: Settings) -> None:
    """Feast keeps one row per feature view key and timestamp: the same product in two queries' lists,
    as of one moment, must still come back twice, each with its own user's features."""
    store = feast_repo.open_store(sqlite_settings)
    entities = pd.DataFrame({
        "product_id": ["P1", "P1", "P2", "P1", "P2", "P1"],
        "user_id": ["u1", "nobody", "u1", "u1", "nobody", None],
        "event_timestamp": [day(3)] * 6,
    })
    out = historical_features(store, "ranker_v1", entities)
    assert len(out) == 6
    assert out["price"].tolist() == pytest.approx([12, 12, 5, 12, 5, 12])
    assert out["in_stock"].tolist() == [1, 1, 0, 1, 0, 1]
    assert out["user_category_affinity"].iloc[0] == pytest.approx(0.4)  # u1 at day 3
    assert out["user_category_affinity"].iloc[3] == pytest.approx(0.4)  # the same row asked twice
    assert np.isnan(out["median_price"].iloc[1]) and np.isnan(out["median_price"].iloc[5])  # no profile


def read_online(settings: Settings) -> dict[str, np.ndarray]:
    feast_repo.materialize(settings, end=day(10).to_pydatetime())
    reader = OnlineFeatureReader(feast_repo.open_store(settings), "ranker_v1")
    batch = reader.fetch(["P1", "P2", "P3"], "u1")
    again = reader.fetch(["P1", "P2", "P3"], None)
    assert reader.hits == 3 and reader.misses == 3  # the second read came from the product cache
    assert np.array_equal(again.columns["price"], batch.columns["price"], equal_nan=True)
    return batch.columns


def check_latest(columns: dict[str, np.ndarray]) -> None:
    assert columns["price"][:2].tolist() == pytest.approx([12, 5]) and np.isnan(columns["price"][2])
    assert columns["in_stock"][:2].tolist() == [1, 0]
    assert columns["ctr_7d"][0] == pytest.approx(0.3) and np.isnan(columns["ctr_7d"][1])
    assert columns["user_category_affinity"][:2].tolist() == pytest.approx([0.4, 0.6])
    assert columns["price_vs_user"][:2].tolist() == pytest.approx([1.2, 0.5])


def test_sqlite_online_store(sqlite_settings: Settings) -> None:
    check_latest(read_online(sqlite_settings))


def test_servers_bound_their_store_reads_and_batch_jobs_wait(sqlite_settings: Settings) -> None:
    from serving.loading import BATCH_READ_TIMEOUT_S, open_feature_reader

    settings = sqlite_settings.model_copy(update={"features": FeatureSettings(read_timeout_ms=80, retry_after_s=5,
                                                                                 product_ttl_s=45)})
    served, batch = open_feature_reader(settings), open_feature_reader(settings, batch=True)
    assert served is not None and batch is not None
    assert (served.read_timeout, served.retry_after, served.product_ttl) == (0.08, 5, 45)
    assert (batch.read_timeout, batch.retry_after) == (BATCH_READ_TIMEOUT_S, 0.0)


def test_warm_cache_and_stale_rows_refreshed_in_the_background(sqlite_settings: Settings) -> None:
    feast_repo.materialize(sqlite_settings, end=day(10).to_pydatetime())
    reader = OnlineFeatureReader(feast_repo.open_store(sqlite_settings), "ranker_v1", product_ttl=0.0)
    reader.warm(["P1", "P2", "P3"])
    first = reader.fetch(["P1", "P2"], None)
    assert reader.misses == 0 and reader.hits == 2  # warmed: nothing read on the search path
    reader._refresher.submit(lambda: None).result()  # the stale rows' refresh has run
    assert first.columns["price"].tolist() == pytest.approx([12, 5])
    assert reader.fetch(["P1"], None).columns["price"].tolist() == pytest.approx([12])


def test_filters_read_category_and_brand_from_the_store_when_the_catalog_has_none(sqlite_settings: Settings) -> None:
    from types import SimpleNamespace

    from core.query import Filters
    from ranking.facts import CatalogFacts

    feast_repo.materialize(sqlite_settings, end=day(10).to_pydatetime())
    facts = {**FeatureSettings().facts, "brand": "product_attributes:maker", "promoted": "no_such_view:promoted"}
    reader = OnlineFeatureReader(feast_repo.open_store(sqlite_settings), "ranker_v1", facts=facts)
    assert reader.facts == {"category": "category", "price": "price", "in_stock": "in_stock",  # what the store has
                            "popularity": "purchases_30d"}
    reader.warm(["P1", "P2", "P3"])
    catalog = pd.DataFrame({"product_id": ["P1", "P2", "P3"], "title": ["drill", "paint", "hose"],
                            "brand": ["A", "B", "C"], "price": [99.0, 99.0, 7.0]})
    index = SimpleNamespace(products=catalog, generation=0)
    known = CatalogFacts(index, reader)  # type: ignore[arg-type]
    assert known.table().category.tolist() == ["drills", "paint", None]
    assert known.table().price.tolist() == pytest.approx([12, 5, 7])  # the store's, the catalog's for P3
    assert known.allowed(Filters(category="paint")).tolist() == [False, True, False]
    assert known.allowed(Filters(brand="C", max_price=10)).tolist() == [False, False, True]
    assert known.allowed(Filters(in_stock=True)).tolist() == [True, False, True]  # P3's stock is unknown


def test_a_store_update_no_search_touches_reaches_the_filters_within_ttl_and_refresh(
        sqlite_settings: Settings) -> None:
    """A product out of stock is left out of every in-stock mask, so no search's rules stage reads it again; the
    facts' periodic refresh re-reads the rows older than product_ttl, so the store's update (a materialize, a stock
    feed) still reaches the filters."""
    from types import SimpleNamespace

    from core.query import Filters
    from ranking.facts import CatalogFacts

    feast_repo.materialize(sqlite_settings, end=day(10).to_pydatetime())
    store = feast_repo.open_store(sqlite_settings)
    reader = OnlineFeatureReader(store, "ranker_v1", product_ttl=0.1, facts=FeatureSettings().facts)
    try:
        reader.warm(["P1", "P2"])
        catalog = pd.DataFrame({"product_id": ["P1", "P2"], "title": ["drill", "paint"], "live": [True, True]})
        facts = CatalogFacts(SimpleNamespace(products=catalog, generation=0), reader,  # type: ignore[arg-type]
                             refresh_s=0.1)
        assert facts.shown(Filters(in_stock=True)).tolist() == [True, False]  # P2 out of stock at warm-up
        store.write_to_online_store("inventory", pd.DataFrame({"product_id": ["P2"], "in_stock": [1], "quantity": [9],
                                                               "event_timestamp": [pd.Timestamp.now(tz="UTC")]}))
        deadline = time.monotonic() + 10
        while facts.shown(Filters(in_stock=True)).tolist() != [True, True]:  # searches meanwhile read the masks
            assert time.monotonic() < deadline, "the store's update never reached the filters"
            time.sleep(0.05)
        assert facts.shown(Filters(), hide_out_of_stock=True).tolist() == [True, True]
    finally:
        reader.close()
        feast_repo.materialize(sqlite_settings, end=day(10).to_pydatetime())  # the module's other tests read day 10


def test_a_shoppers_recent_items_are_read_for_recommendations(sqlite_settings: Settings) -> None:
    feast_repo.materialize(sqlite_settings, end=day(10).to_pydatetime())
    reader = OnlineFeatureReader(feast_repo.open_store(sqlite_settings), "ranker_v1")
    assert reader.user_list("u1", "user_profile:recent_items") == ["P2", "P1"]  # the latest row
    assert reader.user_list("u2", "user_profile:recent_items") == []  # no row
    assert reader.user_list("u1", "user_profile:no_such_feature") == []
    assert reader.user_list("u1", "no_such_view:recent_items") == []
    assert reader.user_list("u1", "product_attributes:category") == []  # not a user's feature


def live_update_reaches_another_reader(settings: Settings, product: str, category: str) -> None:
    """A write through one reader's store is read by another server's reader from the change feed."""
    from core.product_changes import SqliteChanges, open_changes, write_facts

    facts = FeatureSettings().facts
    writer = OnlineFeatureReader(feast_repo.open_store(settings), "ranker_v1", facts=facts)
    other = OnlineFeatureReader(feast_repo.open_store(settings), "ranker_v1", facts=facts, product_ttl=3600)
    try:
        other.warm([product])
        before = dict(other.rows([product])[0])
        other.follow(open_changes(other.store), every_s=0.05)
        writer.follow(open_changes(writer.store), every_s=3600)  # takes the position, then only catches up
        time.sleep(0.2)  # the followers have taken the feed's position
        start = other.position
        assert start is not None and writer.position == start
        rows = write_facts(writer.store, {product: {"price": 7.5, "in_stock": 0, "promoted": 0}},
                           {k: v for k, v in facts.items() if k in ("price", "in_stock", "promoted")},
                           open_changes(writer.store))
        assert rows == {"product_attributes": 1, "inventory": 1, "promotions": 1}
        writer.catch_up([product])  # as the answering server does: the feed read now, not at the next tick
        assert writer.position != start and writer.rows([product])[0]["in_stock"] == 0
        deadline = time.monotonic() + 10
        while other.position == start and time.monotonic() < deadline:
            time.sleep(0.02)
        assert other.changes == 1 and other.position == writer.position  # one position names the same updates
        after = other.rows([product])[0]  # its cache, read again: no TTL expired
        assert (after["price"], after["in_stock"], after["promoted"]) == (pytest.approx(7.5), 0, 0)
        assert before["price"] != pytest.approx(7.5)
        assert after["category"] == before["category"] == category  # the row's other features stay
        with pytest.raises(ValueError, match="colour"):
            write_facts(writer.store, {product: {"colour": "red"}}, facts)
    finally:
        writer.close()
        other.close()
    # closed: its read threads and its feed's connection go now, not at a garbage collection (a swap's reader)
    assert other._io._shutdown and writer._io._shutdown
    if isinstance(other.feed, SqliteChanges):
        with pytest.raises(sqlite3.ProgrammingError):
            other.feed.since(None)


def test_live_updates_reach_every_reader_through_the_change_feed(sqlite_settings: Settings) -> None:
    feast_repo.materialize(sqlite_settings, end=day(10).to_pydatetime())
    live_update_reaches_another_reader(sqlite_settings, "P1", "drills")
    feast_repo.materialize(sqlite_settings, end=day(10).to_pydatetime())  # the module's other tests read day 10


def test_a_refresh_that_read_the_store_before_a_live_update_does_not_put_the_old_row_back(
        sqlite_settings: Settings) -> None:
    import threading

    from core.product_changes import write_facts

    feast_repo.materialize(sqlite_settings, end=day(10).to_pydatetime())
    facts = FeatureSettings().facts
    reader = OnlineFeatureReader(feast_repo.open_store(sqlite_settings), "ranker_v1", product_ttl=0.0, facts=facts,
                                 read_timeout=5.0)
    real, hold, held, go = reader.provider.online_read, threading.Event(), [], threading.Event()

    def online_read(**kwargs: object) -> object:  # while ``hold`` is set, a read answers, then waits for ``go``
        rows = real(**kwargs)
        if hold.is_set():
            held.append(kwargs)
            go.wait(5)
        return rows

    try:
        reader.warm(["P1"])
        reader.provider.online_read = online_read
        hold.set()
        reader.rows(["P1"])  # stale (ttl 0): re-read in the background, which reads the row as it is now
        views = sum(key == "product_id" for _, _, key in reader._views.values())
        deadline = time.monotonic() + 5
        while len(held) < views:
            assert time.monotonic() < deadline, "the background refresh did not read"
            time.sleep(0.01)
        hold.clear()
        write_facts(reader.store, {"P1": {"price": 7.5}}, {"price": facts["price"]})  # as POST /v1/admin/products
        reader.catch_up(["P1"])
        assert reader.cached_rows(["P1"])[0]["price"] == pytest.approx(7.5)
        go.set()  # the refresh ends with the row it read before the update
        reader._refresher.submit(lambda: None).result()
        assert reader.cached_rows(["P1"])[0]["price"] == pytest.approx(7.5)
    finally:
        go.set()
        reader.close()
        feast_repo.materialize(sqlite_settings, end=day(10).to_pydatetime())  # the module's other tests read day 10


def test_a_warm_up_cut_short_by_the_process_exiting_is_quiet(sqlite_settings: Settings,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    reader = OnlineFeatureReader(feast_repo.open_store(sqlite_settings), "ranker_v1")
    reader._io.shutdown()  # as the interpreter does to every executor when a short command ends
    with caplog.at_level("WARNING", logger="core.feature_store"):
        reader.warm(["P1", "P2"])
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert reader.fetch(["P1"], None).unavailable == "the feature reader is shut down"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed (make test installs it)")
def test_redis_online_store(sqlite_settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        settings = sqlite_settings.model_copy(update={
            "features": FeatureSettings(online_store="redis", redis_url=f"127.0.0.1:{port}")})
        feast_repo.apply(settings)
        check_latest(read_online(settings))
        live_update_reaches_another_reader(settings, "P2", "paint")  # P2: its price and stock are not read below
        facts = OnlineFeatureReader(feast_repo.open_store(settings), "ranker_v1", facts=FeatureSettings().facts)
        assert [row.get("category") for row in facts.rows(["P1", "P2", "P3"])] == ["drills", "paint", None]
        # Redis stops: reads fail fast (bounded wait, then a rest), cached rows still serve, the rest is missing
        reader = OnlineFeatureReader(feast_repo.open_store(settings), "ranker_v1", read_timeout=0.5,
                                     retry_after=60)
        reader.warm(["P1"])
        server.terminate()
        server.wait(timeout=10)
        batch = reader.fetch(["P1", "P2"], "U1")
        assert batch.unavailable and "online store" in batch.unavailable
        assert batch.columns["price"][0] == pytest.approx(12) and np.isnan(batch.columns["price"][1])
        again = reader.fetch(["P2"], "U1")  # resting: not tried again
        assert again.unavailable == batch.unavailable and reader.failures == 1
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)


def test_a_lambdamart_reading_features_no_one_fills_is_refused(sqlite_settings: Settings, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A model trained by another version (or for another feature service) would fail its stage on every
    search and fall back to the first stage's order: activating it, or loading it to serve, is refused."""
    from core.errors import Conflict
    from core.registry import ModelRegistry
    from ranking.lambdamart import LambdaMART, LambdaMARTConfig, RankingData
    from serving.loading import check_features, check_loads, load_models

    rng = np.random.default_rng(4)
    registry = ModelRegistry(sqlite_settings.paths.models)
    versions = {}
    for tag, names in (("known", ["bm25", "title_coverage", "price"]), ("newer", ["bm25", "head_in_title", "price"])):
        x = rng.normal(size=(200, 3)).astype(np.float32)
        data = RankingData(x, np.clip(np.round(1 + x[:, 0]), 0, 2).astype(np.int32), [10] * 20, names)
        LambdaMART.fit(data, data, LambdaMARTConfig(max_grade=2, min_data_in_leaf=5, max_rounds=5)).save(
            tmp_path / tag)
        versions[tag] = registry.register("ltr", tmp_path / tag, base_model="lightgbm").version
    check_loads(sqlite_settings, "ltr", versions["known"])  # computed here, or a feature of ranker_v1
    with pytest.raises(Conflict, match=r"ltr v2 reads features \['head_in_title'\] .* 'ranker_v1' does not hold"):
        check_loads(sqlite_settings, "ltr", versions["newer"])
    with pytest.raises(Conflict, match="head_in_title"):  # a server or batch job does not start serving it either
        load_models(sqlite_settings, ltr_versions=[versions["newer"]])
    served = load_models(sqlite_settings, ltr_versions=[versions["known"]]).ltr_versions[0]
    with caplog.at_level("WARNING", logger="serving.loading"):
        check_features(served, None, sqlite_settings)  # no feature store: every other name is a missing store feature
    assert "ltr v1 reads 1 store features (price) but no feature store is open" in caplog.text


def test_feast_is_imported_without_torch_and_torch_still_imports_after() -> None:
    import sys

    script = ("import sys; from core.feast_repo import _import_feast; _import_feast(); "
              "import feast.torch_wrapper as w; print('torch' in sys.modules, w.TORCH_AVAILABLE); "
              "import torch; print(torch.tensor([1]).sum().item())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["False", "False", "1"], out.stdout + out.stderr


def test_a_materialize_before_the_apply_is_refused_by_name(tmp_path: Path) -> None:
    from core.errors import NotFound

    settings = Settings(home=tmp_path, progress=False)
    write_tables(feast_repo.features_dir(settings))  # built, never applied
    with pytest.raises(NotFound, match="has no feature views: run `shoprank features apply` first"):
        feast_repo.materialize(settings)


def test_readers_never_see_the_store_config_cut_short_while_it_is_rendered(tmp_path: Path) -> None:
    """Every open of the store renders its config while other processes of the home read it (replicas
    reloading, a retrain): a reader gets a whole file, the old one or the new one, never an empty one."""
    import threading

    import yaml

    first = Settings(home=tmp_path, progress=False,
                     features=FeatureSettings(online_store="redis", redis_url="127.0.0.1:6379"))
    second = first.model_copy(update={"features": first.features.model_copy(update={"redis_url": "127.0.0.1:6380"})})
    path = feast_repo.render_config(first)
    stop = threading.Event()

    def render() -> None:  # two settings in turn: every render changes the file
        while not stop.is_set():
            feast_repo.render_config(first)
            feast_repo.render_config(second)

    writer = threading.Thread(target=render)
    writer.start()
    reads, bad = 0, []
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            reads += 1
            config = yaml.safe_load(path.read_text())
            if not isinstance(config, dict) or "online_store" not in config:
                bad.append(config)
    finally:
        stop.set()
        writer.join(timeout=30)
    assert reads > 100 and not bad, f"{len(bad)} of {reads} reads saw no whole config: {bad[:3]}"


def test_an_unchanged_store_config_is_not_written_again(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, progress=False)
    path = feast_repo.render_config(settings)
    before = path.stat()
    time.sleep(0.01)
    assert feast_repo.render_config(settings) == path
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    redis = settings.model_copy(update={"features": FeatureSettings(online_store="redis", redis_url="h:1")})
    assert feast_repo.render_config(redis) != path  # each online store has its own file
    path.write_text("project: stale\n")
    feast_repo.render_config(settings)
    assert "project: shoprank\n" in path.read_text()  # a file that differs is written again


def test_apply_deletes_the_views_the_repo_no_longer_defines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import sys

    settings = Settings(home=tmp_path / "home", progress=False)
    write_tables(feast_repo.features_dir(settings))
    repo = tmp_path / "feature_repo"
    shutil.copytree(feast_repo.REPO, repo, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(feast_repo, "REPO", repo)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the copy's folder leaves sys.path after the test
    feast_repo.apply(settings)
    products, services = repo / "products.py", repo / "services.py"
    products.write_text(re.sub(r"promotions = FeatureView\(.*?\n\)\n", "", products.read_text(), flags=re.S))
    services.write_text(services.read_text().replace(", promotions\n", "\n")
                        .replace('        promotions[["promoted", "discount"]],\n', ""))
    assert "promotions" not in feast_repo.apply(settings)
    # before: the view stayed registered (feast's apply leaves what it is not given) and was still materialized
    views = sorted(view.name for view in feast_repo.open_store(settings).list_feature_views())
    assert views == ["inventory", "popularity", "product_attributes", "user_profile"]


def test_a_slow_store_holds_a_search_read_timeout_at_most_and_never_past_its_deadline(
        sqlite_settings: Settings) -> None:
    reader = OnlineFeatureReader(feast_repo.open_store(sqlite_settings), "ranker_v1", read_timeout=1.0)
    real = reader.provider.online_read

    def slow(**kwargs: object) -> object:  # each view answers in 0.3 s: within read_timeout
        time.sleep(0.3)
        return real(**kwargs)

    reader.provider.online_read = slow
    try:
        started = time.monotonic()
        batch = reader.fetch(["P1", "P2"], "u1")  # 4 product views and the user's: read at once
        # before: one view after another, 1.5 s (each read waited up to read_timeout on its own)
        assert time.monotonic() - started < 1.0 and batch.unavailable is None
        started = time.monotonic()
        late = reader.fetch(["P3"], "u1", deadline=started + 0.1)  # the search's deadline comes first
        assert time.monotonic() - started < 0.6
        assert late.unavailable == "the search's deadline came before the online store answered"
        assert reader.failures == 0  # a search short of time does not rest the store for the others
    finally:
        reader.close()


def test_a_store_that_hangs_is_rested_though_every_search_leaves_at_its_deadline(sqlite_settings: Settings) -> None:
    """Each search waits until its deadline (sooner than read_timeout) and leaves without resting the store; a
    read still under way read_timeout after it started rests it, and no more reads pile up behind it."""
    import threading

    reader = OnlineFeatureReader(feast_repo.open_store(sqlite_settings), "ranker_v1", read_timeout=0.3,
                                 retry_after=30.0)
    release = threading.Event()
    real = reader.provider.online_read

    def hung(**kwargs: object) -> object:
        release.wait(10)
        return real(**kwargs)

    reader.provider.online_read = hung
    try:
        waits = []
        for n in range(8):  # searches one after another, each with 0.1 s left
            started = time.monotonic()
            batch = reader.fetch([f"P{n}"], "u1", deadline=started + 0.1)
            waits.append(time.monotonic() - started)
            assert batch.unavailable is not None
        # before: every search waited its 0.1 s, the store was never rested and 5 reads a search queued up
        assert reader.failures == 1 and max(waits[-3:]) < 0.05, waits
        assert len(reader._pending) <= 5 * 3, len(reader._pending)
    finally:
        release.set()
        reader.close()


def test_a_warm_up_read_slower_than_read_timeout_does_not_rest_the_store(sqlite_settings: Settings) -> None:
    """Warm-up reads a chunk of products for up to 60 s: a search meanwhile judges the store by its own reads'
    read_timeout, not by that chunk, so it gets its features and warm-up's next chunks are read."""
    import threading

    feast_repo.materialize(sqlite_settings, end=day(10).to_pydatetime())
    reader = OnlineFeatureReader(feast_repo.open_store(sqlite_settings), "ranker_v1", read_timeout=0.25,
                                 retry_after=2.0)
    real = reader.provider.online_read

    def bulk(**kwargs: object) -> object:  # a healthy store: a chunk of 200 keys in 0.6 s, a few keys at once
        if len(kwargs["entity_keys"]) > 100:  # type: ignore[arg-type]
            time.sleep(0.6)
        return real(**kwargs)

    reader.provider.online_read = bulk
    try:
        out: dict[str, list[str]] = {}
        warming = threading.Thread(target=lambda: out.setdefault("failed", reader.warm(
            [f"P{n}" for n in range(1, 401)], batch=200)))
        warming.start()
        time.sleep(0.4)  # a search while the first chunk is read
        batch = reader.fetch(["P1", "P2"], "u1")
        warming.join()
        assert batch.unavailable is None and reader.failures == 0
        assert batch.columns["price"].tolist() == pytest.approx([12, 5])
        assert out["failed"] == []
    finally:
        reader.close()


def test_a_materialize_into_a_redis_out_of_reach_names_the_url_and_its_setting(sqlite_settings: Settings) -> None:
    """Before: the Redis client's traceback, naming neither the setting nor what to do."""
    from core.errors import NotReady

    settings = sqlite_settings.model_copy(update={
        "features": FeatureSettings(online_store="redis", redis_url=f"127.0.0.1:{free_port()}")})
    with pytest.raises(NotReady, match=r"Redis online store at 127\.0\.0\.1:\d+ cannot be reached .* "
                                       "SHOPRANK_FEATURES__REDIS_URL"):
        feast_repo.materialize(settings)


def test_a_redis_that_hangs_fails_a_command_within_its_timeout() -> None:
    """The Redis connection string ShopRank gives Feast: 1 s socket timeouts and no retry of a timed-out command
    (redis-py's default retried it 3 times with backoff: a price update to a hung Redis took 15 s, not 1);
    a URL's own settings stay."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    from core.feast_repo import _with_timeouts

    _, params = RedisOnlineStore._parse_connection_string(_with_timeouts("127.0.0.1:6379,db=2"))
    assert params == {"db": 2, "socket_connect_timeout": 1, "socket_timeout": 1, "retry": None}
    _, own = RedisOnlineStore._parse_connection_string(_with_timeouts("127.0.0.1:6379,socket_timeout=5"))
    assert own == {"socket_timeout": 5, "socket_connect_timeout": 1, "retry": None}
