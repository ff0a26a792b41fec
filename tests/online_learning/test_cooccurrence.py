"""Products acted on together: counted per distinct shopper from the event log, scored by cosine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from core.settings import get_settings
from online_learning.consumers.base import Delivered
from online_learning.consumers.log_sink import ParquetLogSink
from online_learning.cooccurrence import (
    Neighbour,
    neighbours,
    read_together,
    together,
    write_together,
)
from online_learning.events import (
    INTERACTIONS_TOPIC,
    RANKINGS_TOPIC,
    InteractionEvent,
    RankingEvent,
    ShownItem,
)
from tests.helpers import run_cli

NOW = datetime.now(UTC)


def actions(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"shopper": [s for s, _ in rows], "product_id": [p for _, p in rows],
                         "timestamp": [pd.Timestamp(NOW)] * len(rows)})


def test_neighbours_are_the_cosine_of_shopper_sets_above_a_floor() -> None:
    rows = [(s, p) for s in ("a", "b", "c") for p in ("drill", "bits")]  # three shoppers bought both
    rows += [(s, "drill") for s in ("d", "e", "f")]  # three more bought only the drill
    rows += [("a", "gloves"), ("g", "gloves"), ("a", "drill")]  # one shopper bought gloves with a drill (twice)
    found = neighbours(actions(rows), min_shoppers=2)
    assert found["bits"] == [Neighbour("drill", pytest.approx(3 / (3 * 6) ** 0.5), 3)]
    assert found["drill"] == [Neighbour("bits", pytest.approx(3 / (6 * 3) ** 0.5), 3)]
    assert "gloves" not in found  # one shared shopper: below the floor
    assert neighbours(actions(rows), min_shoppers=1)["drill"][1].product_id == "gloves"
    assert neighbours(actions(rows), min_shoppers=1, top=1)["drill"] == found["drill"]
    assert neighbours(actions([])) == {}


def test_a_long_history_counts_its_most_recent_products_only() -> None:
    rows = actions([("bot", f"p{i}") for i in range(10)] + [("u", "p0"), ("u", "p1")])
    rows.loc[:9, "timestamp"] = [pd.Timestamp(NOW - timedelta(hours=i)) for i in range(10)]
    assert neighbours(rows, min_shoppers=2, max_items=2)["p0"] == [Neighbour("p1", pytest.approx(1.0), 2)]
    assert neighbours(rows, min_shoppers=2, max_items=1) == {}


def search(n: int, user: str | None, session: str | None, shown: list[str], days_ago: float = 1) -> Delivered:
    event = RankingEvent(event_id=f"r{n}", request_id=f"r{n}", timestamp=NOW - timedelta(days=days_ago),
                         user_id=user, session_id=session, query="drill", pipeline="full",
                         items=[ShownItem(product_id=p, position=j + 1) for j, p in enumerate(shown)])
    return Delivered(RANKINGS_TOPIC, 0, n, event)


def act(n: int, request: int, kind: str, product: str, user: str | None = None, days_ago: float = 1) -> Delivered:
    event = InteractionEvent(event_id=f"i{n}", request_id=f"r{request}", type=kind, product_id=product,
                             user_id=user, timestamp=NOW - timedelta(days=days_ago))
    return Delivered(INTERACTIONS_TOPIC, 0, n, event)


def write_log(root: Path) -> None:
    logged = [search(i, f"u{i}", None, ["drill", "bits", "gloves"]) for i in range(3)]
    logged += [search(10 + i, None, f"s{i}", ["drill", "bits"]) for i in range(2)]  # sessions, no user
    logged.append(search(20, "u9", None, ["drill", "bits"], days_ago=200))  # too old
    clicks = [act(10 * i + j, i, "click", p, f"u{i}") for i in range(3) for j, p in enumerate(("drill", "gloves"))]
    bought = [act(100 + 10 * i + j, i, kind, p, f"u{i}")
              for i in range(3) for j, (kind, p) in enumerate((("purchase", "drill"), ("add_to_cart", "bits")))]
    # no user on the event: credited to the session of the search that showed it
    bought += [act(200 + 10 * i + j, 10 + i, kind, p)
               for i in range(2) for j, (kind, p) in enumerate((("add_to_cart", "drill"), ("purchase", "bits")))]
    bought.append(act(300, 0, "purchase", "saw", "u0"))  # never shown by that search: the traffic filters drop it
    bought += [act(301 + j, 20, "purchase", p, "u9", days_ago=200) for j, p in enumerate(("drill", "bits"))]
    ParquetLogSink(root)([*logged, *clicks, *bought])


def test_together_credits_each_shopper_once_per_product_and_keeps_the_filters(tmp_path: Path) -> None:
    write_log(tmp_path / "log")
    tables = together(tmp_path / "log", pd.Timestamp(NOW - timedelta(days=90)), min_shoppers=2)
    assert tables["bought"]["drill"] == [Neighbour("bits", pytest.approx(1.0), 5)]  # 3 users and 2 sessions
    assert tables["viewed"]["drill"] == [Neighbour("gloves", pytest.approx(1.0), 3)]
    assert "saw" not in tables["bought"]
    unfiltered = together(tmp_path / "log", None, min_shoppers=1, filters=None)
    assert unfiltered["bought"]["drill"][0] == Neighbour("bits", pytest.approx(1.0), 6)  # and u9, 200 days ago
    assert unfiltered["bought"]["saw"] == [Neighbour(p, pytest.approx(1 / 6 ** 0.5), 1) for p in ("bits", "drill")]
    assert together(tmp_path / "nothing") == {"bought": {}, "viewed": {}}
    write_together(tmp_path / "t.json", tables, since="x")
    assert read_together(tmp_path / "t.json") == tables
    assert read_together(tmp_path / "absent.json") == {"bought": {}, "viewed": {}}


@pytest.mark.parametrize("score", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_together_file_with_a_score_that_is_no_number_is_damaged(tmp_path: Path, score: str) -> None:
    """JSON readers take NaN and Infinity; a shelf would serve them as a null score. The file is refused as
    damaged instead, as one cut short is (the shelves then fill from similar and popular products)."""
    path = tmp_path / "together.json"
    path.write_text('{"neighbours": {"bought": {"drill": [["bits", %s, 3]]}, "viewed": {}}}' % score)
    with pytest.raises(ValueError, match="drill"):
        read_together(path)


def test_one_person_is_one_shopper_across_logging_in(tmp_path: Path) -> None:
    def sent(n: int, request: int, kind: str, product: str, user: str | None, session: str | None) -> Delivered:
        return Delivered(INTERACTIONS_TOPIC, 0, n, InteractionEvent(
            event_id=f"i{n}", request_id=f"r{request}", type=kind, product_id=product, user_id=user,
            session_id=session, timestamp=NOW - timedelta(days=1)))

    logins = [[search(1, None, "s1", ["drill", "bits"]),  # carted anonymously, bought after logging in
               sent(1, 1, "add_to_cart", "drill", None, "s1"), sent(2, 1, "add_to_cart", "bits", None, "s1"),
               sent(3, 1, "purchase", "drill", "u1", "s1"), sent(4, 1, "purchase", "bits", "u1", "s1")],
              [search(2, "u2", "s2", ["drill", "bits"]),  # a cart sent with the session, a purchase with the user
               sent(5, 2, "add_to_cart", "drill", None, "s2"), sent(6, 2, "purchase", "bits", "u2", None)]]
    kiosk = [search(3, "u3", "k1", ["tent", "stove"]), sent(7, 3, "purchase", "tent", "u3", "k1"),
             search(4, "u4", "k1", ["tent", "stove"]), sent(8, 4, "purchase", "tent", "u4", "k1"),
             search(5, None, "k1", ["tent", "stove"]), sent(9, 5, "add_to_cart", "stove", None, "k1"),
             search(6, "u5", None, ["tent", "stove"]), sent(10, 6, "purchase", "tent", "u5", None),
             sent(11, 6, "purchase", "stove", "u5", None)]
    ParquetLogSink(tmp_path / "kiosk")(kiosk)  # a shared session's anonymous cart is not any of its users'
    assert together(tmp_path / "kiosk", None, min_shoppers=2)["bought"] == {}
    for n, events in enumerate(logins):
        ParquetLogSink(tmp_path / f"log{n}")(events)
        # before: the session and the user were two shoppers, and one person's checkout passed the floor of two
        assert together(tmp_path / f"log{n}", None, min_shoppers=2)["bought"] == {}
        assert together(tmp_path / f"log{n}", None, min_shoppers=1)["bought"]["drill"] == [
            Neighbour("bits", pytest.approx(1.0), 1)]


def test_the_nightly_command_writes_the_file_servers_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOPRANK_PROGRESS", "false")
    get_settings.cache_clear()
    try:
        write_log(get_settings().paths.event_log)
        code, out, err = run_cli(capsys, "recommendations", "--min-shoppers", "2", "--days", "90")
        assert code == 0, err
        report = json.loads(out)
        assert report["products"] == {"bought": 2, "viewed": 2} and report["pairs"] == {"bought": 2, "viewed": 2}
        saved = read_together(get_settings().paths.recommendations)
        assert saved["bought"]["bits"][0].product_id == "drill"
        code, _, err = run_cli(capsys, "recommendations", "--top", "0")
        assert code == 2 and "--top 0" in err
    finally:
        get_settings.cache_clear()
