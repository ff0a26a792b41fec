"""Following the live updates' change feed: a feed that is down at start is followed once it answers."""

from __future__ import annotations

import threading
import time

from core.product_changes import FeedCursor, SqliteChanges, poll


class DownAtFirst:
    """A feed that fails its first two reads (the store is down when the server starts)."""

    def __init__(self) -> None:
        self.reads = 0

    def since(self, position: str | None) -> tuple[str, list[str] | None]:
        self.reads += 1
        if self.reads <= 2:
            raise ConnectionError("store down")
        return ("1", []) if position is None else ("2", ["P1"]) if position == "1" else (position, [])


def test_a_feed_down_at_start_is_followed_once_it_answers() -> None:
    seen: list[list[str] | None] = []
    stop = threading.Event()
    cursor = FeedCursor(DownAtFirst(), seen.append)
    follower = threading.Thread(target=poll, args=(cursor, 0.01, stop))
    follower.start()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    follower.join(timeout=5)
    assert seen == [["P1"]] and not follower.is_alive() and cursor.position == "2"


def test_a_read_that_fails_is_tried_again_from_the_same_position() -> None:
    feed, calls = DownAtFirst(), []
    feed.reads = 2  # up
    failing = [True]

    def on_change(ids: list[str] | None) -> None:
        calls.append(ids)
        if failing.pop(0) if failing else False:
            raise ConnectionError("the online store is down")

    cursor = FeedCursor(feed, on_change)
    cursor.catch_up()  # takes the position
    try:
        cursor.catch_up()
    except ConnectionError:
        pass
    assert cursor.position == "1"  # not moved past what was not read
    cursor.catch_up()
    assert calls == [["P1"], ["P1"]] and cursor.position == "2"


def test_the_sqlite_feed_gives_what_changed_after_a_position(tmp_path) -> None:  # type: ignore[no-untyped-def]
    feed = SqliteChanges(tmp_path / "changes.sqlite")
    start, nothing = feed.since(None)
    assert (start, nothing) == ("0", [])
    feed.append(["P1", "P2"])
    position, ids = feed.since(start)
    assert ids == ["P1", "P2"] and feed.since(position) == (position, [])


def test_stores_on_one_redis_keep_their_projects_and_feeds_apart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    import pytest
    import yaml

    from core import feast_repo
    from core.errors import InvalidInput
    from core.product_changes import STREAM, RedisChanges, open_changes
    from core.settings import FeatureSettings, Settings

    settings = Settings(home=tmp_path, features=FeatureSettings(online_store="redis", redis_url="127.0.0.1:1"))
    (settings.paths.stores / "shop-eu").mkdir(parents=True)
    eu = settings.for_store("shop-eu")
    assert yaml.safe_load(feast_repo.render_config(eu).read_text())["project"] == "shoprank_shop_eu"
    (settings.paths.stores / "shop.eu").mkdir()
    with pytest.raises(InvalidInput, match=r"\['shop-eu', 'shop.eu'\] would share .* 'shoprank_shop_eu'"):
        feast_repo.render_config(eu)  # before: both read and wrote one project's rows

    def redis_store(project: str) -> SimpleNamespace:
        config = SimpleNamespace(type="redis")
        provider = SimpleNamespace(online_store=SimpleNamespace(_get_client=lambda c: "client"))
        return SimpleNamespace(project=project, config=SimpleNamespace(online_store=config),
                               _get_provider=lambda: provider)

    feeds = [open_changes(redis_store(p)) for p in ("shoprank", "shoprank_garden")]
    assert all(isinstance(f, RedisChanges) for f in feeds)
    assert [f._key for f in feeds] == [STREAM, f"{STREAM}:shoprank_garden"]  # one store's updates, its own feed
