"""The traffic filters on hand-made logs: each reason, counted; honest traffic untouched."""

from __future__ import annotations

import pandas as pd

from online_learning.traffic_filter import FilterConfig, clean, engagement
from tests.helpers import log_daily_searches


def searches(rows: list[tuple[str, str, str, list[str]]]) -> pd.DataFrame:
    """(request, user, query, shown products) -> one impression row per shown product."""
    return pd.DataFrame([{"request_id": r, "user_id": u, "session_id": None, "query": q, "product_id": p,
                          "position": i + 1} for r, u, q, shown in rows for i, p in enumerate(shown)])


def actions(rows: list[tuple[str, str | None, str, str]]) -> pd.DataFrame:
    """(request, user, product, type) -> interaction rows in time order."""
    return pd.DataFrame([{"event_id": f"e{i}", "request_id": r, "user_id": u, "session_id": None, "product_id": p,
                          "type": t, "timestamp": pd.Timestamp("2026-11-01", tz="UTC") + pd.Timedelta(seconds=i)}
                         for i, (r, u, p, t) in enumerate(rows)])


def test_honest_traffic_passes_untouched() -> None:
    ranks = searches([(f"r{i}", f"u{i}", "drill", ["a", "b", "c"]) for i in range(30)])
    acts = actions([(f"r{i}", f"u{i}", "a", "click") for i in range(0, 30, 3)] + [("r0", None, "a", "purchase")])
    out = clean(ranks, acts)
    assert sum(out.excluded.values()) == 0 and out.anomalous == {} and len(out.interactions) == len(acts)
    assert engagement(out.rankings, out.interactions, {"click": 1, "purchase": 3}).tolist()[:3] == [3, 0, 0]


def test_clicks_need_an_impression_of_that_product_for_that_shopper() -> None:
    ranks = searches([("r1", "u1", "drill", ["a", "b"])])
    acts = actions([("r1", "u1", "z", "click"), ("r9", "u1", "a", "click"), ("r1", "u2", "a", "click"),
                    ("r1", None, "b", "click")])
    out = clean(ranks, acts)
    assert out.excluded == {"no_impression": 2, "other_shopper": 1}
    assert out.interactions["product_id"].tolist() == ["b"]  # anonymous: the search's own shopper


def test_repeats_are_capped_per_shopper_query_product() -> None:
    ranks = searches([(f"r{i}", "u1", "Drill ", ["a", "b"]) for i in range(6)])
    acts = actions([(f"r{i}", "u1", "a", "click") for i in range(6)] + [("r0", "u1", "b", "click")])
    out = clean(ranks, acts, FilterConfig(max_repeats=2, min_searches=100))
    assert out.excluded["repeat"] == 4 and len(out.interactions) == 3


def test_anomalous_shoppers_lose_every_search_and_interaction() -> None:
    honest = [(f"h{i}", f"u{i}", "hose", ["a", "b"]) for i in range(200)]
    bot = [(f"b{i}", "bot", f"hose {i}", ["a", "x"]) for i in range(30)]
    ranks = searches(honest + bot)
    acts = actions([(f"h{i}", f"u{i}", "a", "click") for i in range(0, 200, 10)]
                   + [(f"b{i}", "bot", "x", "click") for i in range(30)])
    out = clean(ranks, acts, FilterConfig(min_searches=20, ctr_ratio=3.0))
    assert out.anomalous == {"bot": "click_rate"} and out.excluded == {"anomalous:click_rate": 30}
    assert "bot" not in set(out.rankings["user_id"]) and len(out.interactions) == 20
    volume = clean(ranks, acts, FilterConfig(max_searches=25))
    assert volume.anomalous == {"bot": "volume"}
    chatty = clean(ranks, acts, FilterConfig(min_clicks=30, min_searches=1000))
    assert chatty.anomalous == {"bot": "no_conversion"}


def test_a_bot_repeating_one_query_is_judged_on_all_its_clicks_not_the_capped_ones() -> None:
    honest = [(f"h{i}", f"u{i}", "hose", ["a", "b"]) for i in range(200)]
    bot = [(f"b{i}", "bot", "hose", ["a", "x"]) for i in range(30)]  # one query: 27 of its clicks are repeats
    acts = actions([(f"h{i}", f"u{i}", "a", "click") for i in range(0, 200, 10)]
                   + [(f"b{i}", "bot", "x", "click") for i in range(30)])
    out = clean(searches(honest + bot), acts, FilterConfig(min_searches=20, ctr_ratio=3.0))
    assert out.anomalous == {"bot": "click_rate"}  # click rate 30/30, not the 3/30 left after the cap
    assert out.excluded == {"repeat": 27, "anomalous:click_rate": 3}
    assert "bot" not in set(out.rankings["user_id"]) and set(out.interactions["product_id"]) == {"a"}


def test_a_key_whose_shoppers_are_all_anomalous_is_excluded() -> None:
    ranks = searches([("r1", "bot1", "hose", ["x"]), ("r2", "bot2", "hose", ["x"]), ("r3", "u1", "hose", ["x"])])
    ranks["key_id"] = ranks["request_id"].map({"r1": "k-bad", "r2": "k-bad", "r3": "k-good"})
    acts = actions([("r1", "bot1", "x", "click"), ("r2", "bot2", "x", "click")])
    out = clean(ranks, acts, FilterConfig(max_searches=0))  # every shopper over the volume limit
    assert out.anomalous["key:k-bad"] == "all_shoppers_anomalous"


def test_the_report_names_api_keys_and_no_shopper_in_clear() -> None:
    """The report is kept in a registered model's metrics, where an erasure does not reach: a shopper appears only
    as its ``name`` (a keyed hash), or not at all; an API key by its id. Before, up to 20 ids in clear."""
    ranks = searches([("r1", "bot1", "hose", ["x"]), ("r2", "bot2", "hose", ["x"]), ("r3", "u1", "hose", ["x"])])
    ranks["key_id"] = ranks["request_id"].map({"r1": "k-bad", "r2": "k-bad", "r3": "k-good"})
    out = clean(ranks, actions([("r1", "bot1", "x", "click")]), FilterConfig(max_searches=0))
    report = out.report()
    keys = {"key:k-bad": "all_shoppers_anomalous", "key:k-good": "all_shoppers_anomalous"}  # every shopper is
    assert report["anomalous"] == keys, report
    assert report["anomalous_by_reason"] == {"volume": 3, "all_shoppers_anomalous": 2}
    assert report["excluded_shoppers"] == 5 and "bot1" not in str(report) and "u1" not in str(report)
    named = out.report(lambda who: f"h-{who[-1]}" if who != "u1" else None)
    assert named["anomalous"] == {"h-1": "volume", "h-2": "volume", **keys}, named


def test_a_swarm_clicking_one_product_for_one_query_is_excluded_unless_it_converts() -> None:
    honest = [(f"h{i}", f"u{i}", "hose", ["a", "b", "c"]) for i in range(300)]
    swarm = [(f"s{i}", f"bot{i % 50}", "hose", ["a", "b", "x"]) for i in range(100)]
    ranks = searches(honest + swarm)
    clicks = ([(f"h{i}", f"u{i}", "a", "click") for i in range(0, 300, 3)]
              + [(f"s{i}", f"bot{i % 50}", "x", "click") for i in range(100)])
    out = clean(ranks, actions(clicks))
    assert out.excluded == {"anomalous:pair": 100} and set(out.interactions["product_id"]) == {"a"}
    bought = clean(ranks, actions([*clicks, ("s0", "bot0", "x", "purchase")]))
    assert "anomalous:pair" not in bought.excluded  # a pair that sells is a popular product, not a swarm


def test_anonymous_visitors_are_each_their_own_shopper() -> None:
    ranks = searches([(f"r{i}", None, "drill", ["a", "b"]) for i in range(3000)])  # no user, no session
    acts = actions([(f"r{i}", None, "a", "click") for i in range(0, 3000, 3)])
    out = clean(ranks, acts)  # before: one "anonymous" shopper over every volume and repeat limit
    assert out.anomalous == {} and sum(out.excluded.values()) == 0
    assert len(out.rankings) == len(ranks) and len(out.interactions) == len(acts)


def test_a_click_is_another_shoppers_only_when_an_id_both_carry_differs() -> None:
    ranks = pd.concat([searches([("r1", "u1", "drill", ["a", "b"])]).assign(session_id="s1"),
                       searches([("r2", "", "hammer", ["c"])]),  # an export's blank user id: anonymous
                       searches([("r3", None, "saw", ["d"])]).assign(session_id="s3")])
    acts = actions([("r1", None, "a", "click"), ("r2", "", "c", "click"), ("r3", "u7", "d", "click"),
                    ("r1", "u2", "b", "click")])
    acts.loc[0, "session_id"] = "s1"  # the search's session alone (before: "s1" is not "u1", another shopper)
    acts.loc[2, "session_id"] = "s3"  # logged in after searching: its user is new, its session the search's
    out = clean(ranks, acts)
    assert out.excluded == {"other_shopper": 1}  # only u2 on u1's search
    assert out.interactions["product_id"].tolist() == ["a", "c", "d"]
    acts.loc[0, "session_id"] = "s9"
    assert clean(ranks, acts).excluded == {"other_shopper": 2}  # a session the search did not have
    acts.loc[0, "user_id"] = "u1"  # ... but the search's user: the same shopper in a new session (app, then web)
    assert clean(ranks, acts).excluded == {"other_shopper": 1}


def test_a_scraper_is_dropped_before_anyone_has_clicked() -> None:
    """With no interaction logged yet (an experiment's first hours), a shopper's volume of searches is still
    judged: a scraper's searches would otherwise count in its arm's search totals."""
    honest = [(f"h{i}", f"u{i}", "hose", ["a", "b"]) for i in range(20)]
    scraper = [(f"s{i}", "scraper", f"hose {i}", ["a", "x"]) for i in range(30)]
    out = clean(searches(honest + scraper), actions([]), FilterConfig(max_searches=25))
    assert out.anomalous == {"scraper": "volume"}
    assert set(out.rankings["user_id"]) == {f"u{i}" for i in range(20)} and out.interactions.empty
    assert clean(searches(honest), actions([]), FilterConfig(max_searches=25)).rankings.equals(searches(honest))


def test_the_experiments_and_guards_searches_judge_a_shoppers_volume_a_day_at_a_time(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A loyal shopper: 30 searches a day for 5 days, against max_searches 100. Judged over all of them (150)
    they were dropped from the A/B and guard tables while the nightly retrain learnt from each night's 30; a
    bot's 120 in one day still goes."""
    from online_learning.analysis import searches as searches_table

    log_daily_searches(tmp_path / "log", [("loyal", day, 30) for day in range(5)] + [("bot", 2, 120)]
                       + [(f"u{i}", day, 5) for i in range(5) for day in range(5)])
    table = searches_table(tmp_path / "log", filters=FilterConfig(max_searches=100))
    kept = table.groupby("user_id").size()
    assert kept["loyal"] == 150 and "bot" not in kept and kept["u0"] == 25
    # each day's clicks with its searches: the loyal shopper's 10 a day on one product capped at max_repeats (3)
    assert int(table["clicked"].sum()) == 5 * 3 + 5 * 5 * 2
