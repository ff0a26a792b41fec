"""The search terms report from a hand-made log: counts, rates and the three lists."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.settings import get_settings
from online_learning.analysis import search_terms, searches, terms_report
from online_learning.consumers.base import Delivered
from online_learning.consumers.log_sink import ParquetLogSink
from online_learning.events import (
    INTERACTIONS_TOPIC,
    RANKINGS_TOPIC,
    InteractionEvent,
    RankingEvent,
    ShownItem,
)
from tests.helpers import run_cli

NOW = datetime.now(UTC)


def write_log(root: Path) -> None:
    events: list[Delivered] = []

    def search(typed: str, searched: str | None, user: str, shown: int = 3, click: bool = False, buy: bool = False,
               filters: dict | None = None, pipeline: str = "full") -> None:
        n = len(events)
        when = NOW - timedelta(hours=1, minutes=n)
        events.append(Delivered(RANKINGS_TOPIC, 0, n, RankingEvent(
            event_id=f"r{n}", request_id=f"r{n}", timestamp=when, user_id=user, query=typed, searched=searched,
            pipeline=pipeline, filters=filters,
            items=[ShownItem(product_id=f"P{j}", position=j + 1) for j in range(shown)])))
        for kind, wanted in (("click", click), ("purchase", buy)):
            if wanted:
                events.append(Delivered(INTERACTIONS_TOPIC, 0, len(events), InteractionEvent(
                    type=kind, event_id=f"{kind}{n}", request_id=f"r{n}", timestamp=when + timedelta(seconds=5),
                    user_id=user, product_id="P0", position=1, **({"revenue": 10.0} if kind == "purchase" else {}))))

    for i in range(6):  # the head: 6 searches by 6 shoppers, 3 clicked, 1 bought
        search("Cordless Drill" if i % 2 else "cordles drill", "cordless drill", f"u{i}", click=i < 3, buy=i == 0)
    for i in range(5):  # searched often, never clicked
        search("deck screws", "deck screws", f"v{i}", filters={"brand": ["Acme"]} if i < 2 else None)
    for i in range(5):  # showed nothing
        search("flux capacitor", "flux capacitor", f"w{i}", shown=0)
    search("rare thing", "rare thing", "x1", shown=0)  # too rare to list
    for i in range(4):  # listings and recommendation shelves: not searches
        search("", None, f"u{i}", pipeline="browse", click=i == 0)
        search("", None, f"u{i}", pipeline="recommend:similar", click=i < 2, buy=i == 1)
    ParquetLogSink(root)([e for e in events if e.topic == RANKINGS_TOPIC])
    ParquetLogSink(root)([e for e in events if e.topic == INTERACTIONS_TOPIC])


def test_search_terms_and_the_report(tmp_path: Path) -> None:
    write_log(tmp_path / "log")
    table = searches(tmp_path / "log")
    terms = search_terms(table).set_index("text")
    assert list(terms.index[:3]) == ["cordless drill", "deck screws", "flux capacitor"]  # most searched first
    head = terms.loc["cordless drill"]
    assert (head["searches"], head["shoppers"]) == (6, 6)  # both typed forms: one searched text
    assert head["ctr"] == pytest.approx(0.5) and head["purchase_rate"] == pytest.approx(1 / 6)
    assert terms.loc["deck screws", "filtered_share"] == pytest.approx(0.4)
    assert terms.loc["flux capacitor", "zero_result_rate"] == 1.0
    report = terms_report(table, top=2, min_searches=5)
    assert report["searches"] == 17 and report["texts"] == 4
    assert [r["text"] for r in report["top"]] == ["cordless drill", "deck screws"]  # --top 2
    assert [r["text"] for r in report["no_results"]] == ["flux capacitor"]  # "rare thing": once
    assert [r["text"] for r in report["no_clicks"]] == ["deck screws", "flux capacitor"]
    assert terms_report(searches(tmp_path / "empty"))["searches"] == 0


def test_listings_and_shelves_are_reported_apart_from_searches(tmp_path: Path) -> None:
    from online_learning.analysis import head_queries, shelves_report
    from online_learning.retrain import impressions

    write_log(tmp_path / "log")
    report = shelves_report(searches(tmp_path / "log", shelves=True))
    assert report["shown"] == 8
    by_shelf = {row["shelf"]: row for row in report["shelves"]}
    assert (by_shelf["browse"]["shown"], by_shelf["browse"]["ctr"]) == (4, pytest.approx(0.25))
    similar = by_shelf["recommend:similar"]
    assert (similar["ctr"], similar["purchase_rate"], similar["revenue"]) == (0.5, 0.25, 10.0)
    assert similar["revenue_per_shelf"] == pytest.approx(2.5) and similar["shoppers"] == 4
    shown, _ = impressions(tmp_path / "log", None, None, filters=None)  # what retraining learns from
    assert "" not in set(shown["query"]) and shown["request_id"].nunique() == 11  # the searches that showed some
    assert "" not in {text for text, _ in head_queries(tmp_path / "log", 10)}
    assert shelves_report(searches(tmp_path / "empty", shelves=True)) == {"shown": 0, "shelves": []}


def test_the_report_command_writes_html(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    write_log(get_settings().paths.event_log)
    out = tmp_path / "terms.html"
    code, printed, err = run_cli(capsys, "report", "terms", "--days", "7", "--min-searches", "5", "--out", str(out))
    assert code == 0, err
    assert json.loads(printed)["no_clicks"][0]["text"] == "deck screws"
    page = out.read_text()
    assert "<h1>Search terms</h1>" in page and "flux capacitor" in page and "100.0%" in page
    code, _, err = run_cli(capsys, "report", "terms", "--top", "0")
    assert code == 2 and "--top 0" in err
    code, printed, err = run_cli(capsys, "report", "shelves", "--out", str(tmp_path / "shelves.html"))
    assert code == 0, err
    assert [row["shelf"] for row in json.loads(printed)["shelves"]] == ["browse", "recommend:similar"]
    assert "recommend:similar" in (tmp_path / "shelves.html").read_text()
    get_settings.cache_clear()


def test_lists_sorted_by_price_teach_no_ranking_and_old_files_still_read(tmp_path: Path) -> None:
    from online_learning.consumers.log_sink import read_log
    from online_learning.retrain import impressions

    when = NOW - timedelta(hours=2)
    logged = [RankingEvent(event_id=f"r{i}", request_id=f"r{i}", timestamp=when, user_id=f"u{i}", query="drill",
                           pipeline="full", sort=sort, items=[ShownItem(product_id="P1", position=1)])
              for i, sort in enumerate((None, "price_asc"))]
    ParquetLogSink(tmp_path / "log")([Delivered(RANKINGS_TOPIC, 0, i, e) for i, e in enumerate(logged)])
    old = read_log(tmp_path / "log", "rankings").drop(columns=["sort", "filters"])
    old = old.assign(event_id="r9", request_id="r9")
    folder = tmp_path / "log" / "rankings" / f"date={when:%Y-%m-%d}" / f"hour={when:%H}"
    old.head(1).to_parquet(folder / "written-before-sort.parquet", index=False)  # a file from before the column
    shown, _ = impressions(tmp_path / "log", None, None, filters=None)
    assert sorted(shown["request_id"]) == ["r0", "r9"]  # r1 was sorted by price
    assert read_log(tmp_path / "log", "rankings", ["sort"]).set_index("event_id").loc["r9", "sort"] is None


def test_blank_shopper_ids_of_older_logs_are_read_as_none(tmp_path: Path) -> None:
    from online_learning.analysis import shopper

    events = [Delivered(RANKINGS_TOPIC, 0, n, RankingEvent(  # "" as logged before ingestion read it as none
        event_id=f"r{n}", request_id=f"r{n}", timestamp=NOW - timedelta(minutes=n), query="drill", pipeline="full",
        items=[ShownItem(product_id="P0", position=1)]).model_copy(update={"user_id": "", "session_id": " "}))
        for n in range(3)]
    ParquetLogSink(tmp_path / "log")(events)
    per_search = searches(tmp_path / "log", filters=None)
    assert per_search["user_id"].isna().all() and per_search["session_id"].isna().all()
    assert shopper(per_search).nunique() == 3  # each anonymous search its own shopper, not one named ""


def test_a_shopper_paging_through_a_query_made_one_search(tmp_path: Path) -> None:
    """Pages 2 and 3 of a search fold into its first page (counted once, the click on page 2 credited to it);
    before, each page read as a search of its own: 3 searches, a third of them clicked."""
    events: list[Delivered] = []

    def page(n: int, user: str | None, first: int, minutes: float, text: str = "drill", click: bool = False,
             sort: str | None = None, shown: int = 10) -> None:
        when = NOW - timedelta(hours=2) + timedelta(minutes=minutes)
        events.append(Delivered(RANKINGS_TOPIC, 0, len(events), RankingEvent(
            event_id=f"r{n}", request_id=f"r{n}", timestamp=when, user_id=user, query=text, pipeline="full",
            sort=sort, items=[ShownItem(product_id=f"P{j}", position=j) for j in range(first, first + shown)])))
        if click:
            events.append(Delivered(INTERACTIONS_TOPIC, 0, len(events), InteractionEvent(
                type="click", event_id=f"c{n}", request_id=f"r{n}", timestamp=when + timedelta(seconds=5),
                user_id=user, product_id=f"P{first}", position=first)))

    page(1, "u1", 1, 0)
    page(2, "u1", 11, 1, click=True)
    page(3, "u1", 21, 2)
    page(4, "u2", 11, 3)  # u2 never saw page 1 (in this log): a search of its own
    page(5, None, 11, 4)  # an anonymous shopper's page 2: no search to fold it into
    page(6, "u1", 1, 5, sort="price_asc")  # the same text sorted by price: another search,
    page(7, "u1", 11, 6, sort="price_asc")  # with its own page 2
    page(8, "u1", 11, 60)  # an hour after u1's last relevance-ranked first page: a search of its own
    page(10, "u3", 1, 70)  # pages 1 and 2 logged in the same instant (page 2's id sorts first)
    page(9, "u3", 11, 70)
    for n, minutes in enumerate((80, 100, 120, 141)):  # a page every 20 minutes, 61 after the first
        page(11 + n, "u4", 1 + 10 * n, minutes, click=n == 3)
    page(20, "u5", 1, 150)  # pages 1 and 2, a page past the last result, then page 2 again and a click:
    page(21, "u5", 11, 151)
    page(22, "u5", 21, 152, shown=0)  # its own row, showing nothing (before: it took over the search,
    page(23, "u5", 11, 153, click=True)  # and the click)
    ParquetLogSink(tmp_path / "log")([e for e in events if e.topic == RANKINGS_TOPIC])
    ParquetLogSink(tmp_path / "log")([e for e in events if e.topic == INTERACTIONS_TOPIC])
    table = searches(tmp_path / "log", filters=None)
    assert list(table["request_id"]) == ["r1", "r4", "r5", "r6", "r8", "r10", "r11", "r20", "r22"]
    assert list(table["clicked"]) == [1, 0, 0, 0, 0, 0, 1, 1, 0]
    assert "first_shown" not in table and "sort" not in table
    drill = search_terms(table).set_index("text").loc["drill"]
    assert (drill["searches"], drill["ctr"], drill["zero_result_rate"]) == (9, 3 / 9, 1 / 9)
