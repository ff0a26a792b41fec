"""Analysis, promotion decisions and the HTML report on a generated experiment log."""

from __future__ import annotations

from pathlib import Path

import pytest

from online_learning.analysis import compare_arms, searches, segments
from online_learning.promotion import Policy, decide_ab
from online_learning.report import render
from tests.helpers import log_daily_searches
from tests.test_notebooks import write_experiment_log


def test_analysis_decision_and_report(tmp_path: Path) -> None:
    write_experiment_log(tmp_path / "log", searches=2000)
    table = searches(tmp_path / "log", "nb-test")
    assert len(table) == 2000 and set(table["arm"]) == {"control", "treatment"}
    report = compare_arms(table, "control", "treatment")
    ctr = report.by_metric()["ctr"]
    assert ctr.treatment > ctr.control and ctr.significant  # 30% vs 20% clicks over 1,000 searches each
    decision = decide_ab(table, "control", "treatment", Policy(primary="ctr", min_searches=500))
    assert decision.action == "promote" and "ctr rose" in decision.reasons[0]
    assert decide_ab(table, "treatment", "control", Policy(primary="ctr", min_searches=500)).action == "reject"
    assert decide_ab(table, "control", "treatment", Policy(min_searches=5000)).action == "continue"
    page = render("nb-test", table, report, None, tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64") == 3 and "purchase_rate" in page
    assert "searches per arm" in page.lower()
    table.loc[table.index % 4 < 2, "filters"] = '{"brand": ["Acme"]}'  # half the searches set a filter
    parts = dict(segments(table, "control", "treatment"))
    assert list(parts) == ["with filters", "without filters", "known shoppers"]  # nobody anonymous here
    assert parts["with filters"].sizes == {"control": 500, "treatment": 500}
    assert parts["known shoppers"].by_metric()["ctr"] == ctr  # every shopper is known: the whole table
    page = render("nb-test", table, report, None, tmp_path / "report.html", list(parts.items())).read_text()
    assert "<h2>Segments</h2>" in page and "with filters</td><td>500 / 500" in page


def test_the_report_command_writes_the_arms_and_their_segments(tmp_path: Path, monkeypatch,  # type: ignore[no-untyped-def]
                                                               capsys) -> None:
    import json

    from core.settings import get_settings
    from tests.helpers import run_cli

    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        write_experiment_log(get_settings().paths.event_log, searches=400)
        code, out, err = run_cli(capsys, "report", "ab", "--experiment", "nb-test", "--out", str(tmp_path / "ab.html"))
    finally:
        get_settings.cache_clear()
    assert code == 0, err
    assert json.loads(out)["searches"] == 400
    page = (tmp_path / "ab.html").read_text()
    assert "treatment vs control" in page and "<h2>Segments</h2>" in page
    assert "without filters</td><td>200 / 200" in page


VERSIONS = {"control": "v1", "treatment": "v2", "t1": "v2", "t2": "v3"}  # the LambdaMART each arm's searches name


def arms_table(rates: dict[str, float], shoppers: dict[str, int], searches: int = 4,  # type: ignore[no-untyped-def]
               seed: int = 0, versions: dict[str, str] = VERSIONS, start: str = "2026-11-01"):
    """One row per search (:func:`searches`' columns): each arm's shoppers search ``searches`` times at
    ``start`` and buy with their arm's rate; each search logged as served by its arm's version of ``versions``."""
    import json

    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for arm, rate in rates.items():
        for u in range(shoppers[arm]):
            for s in range(searches):
                rows.append({"request_id": f"{arm}-{u}-{s}", "user_id": f"{arm}-u{u}", "session_id": None, "arm": arm,
                             "clicked": 0, "carted": 0, "bought": int(rng.random() < rate), "zero_results": 0,
                             "is_degraded": 0, "revenue": 0.0, "latency_ms": 30.0,
                             "timestamp": pd.Timestamp(start, tz="UTC"),
                             "models": json.dumps({"ltr": versions.get(arm)})})
    return pd.DataFrame(rows)


def test_several_treatments_are_each_tested_and_the_best_winner_named() -> None:
    from online_learning.experiments import Arm, Experiment
    from online_learning.promotion import decide_experiment

    experiment = Experiment(name="three", arms={"control": Arm(ltr="v1"), "t1": Arm(ltr="v2"), "t2": Arm(ltr="v3")})
    table = arms_table({"control": 0.10, "t1": 0.10, "t2": 0.25}, {"control": 300, "t1": 300, "t2": 300})
    decision, winner = decide_experiment(table, experiment)
    assert decision.action == "promote" and winner == "t2"
    assert decision.details["alpha_per_treatment"] == 0.025 and set(decision.details["arms"]) == {"t1", "t2"}
    assert any(r.startswith("t2: purchase_rate rose") for r in decision.reasons)
    same = arms_table({"control": 0.10, "t1": 0.10, "t2": 0.10}, {"control": 300, "t1": 300, "t2": 300})
    assert decide_experiment(same, experiment)[0].action == "continue"
    lopsided = arms_table({"control": 0.10, "t1": 0.10, "t2": 0.25}, {"control": 300, "t1": 120, "t2": 300})
    stopped = decide_experiment(lopsided, experiment)[0]  # t2 wins, but t1's shoppers are lost somewhere
    assert stopped.action == "continue" and stopped.reasons[0].startswith("sample ratio mismatch")


def test_a_sample_ratio_mismatch_stops_the_decision() -> None:
    from online_learning.promotion import decide_ab

    table = arms_table({"control": 0.10, "treatment": 0.2}, {"control": 400, "treatment": 280})
    assert decide_ab(table, "control", "treatment").action == "promote"  # the weights unknown: not checked
    lopsided = decide_ab(table, "control", "treatment", weights={"control": 1, "treatment": 1})
    assert lopsided.action == "continue" and lopsided.reasons[0].startswith("sample ratio mismatch")
    assert decide_ab(table, "control", "treatment", weights={"control": 10, "treatment": 7}).action == "promote"
    two = decide_ab(arms_table({"control": 0.1, "treatment": 0.5}, {"control": 2, "treatment": 2}, searches=200),
                    "control", "treatment")  # 400 searches an arm, from two shoppers each: they are the units
    assert two.action == "continue" and "30 shoppers per arm" in two.reasons[0]
    unsure = decide_ab(arms_table({"control": 0.1, "treatment": 0.1}, {"control": 200, "treatment": 200}, seed=1),
                       "control", "treatment")
    assert unsure.action == "continue" and "would need about" in unsure.reasons[0]


def test_promote_and_report_read_the_log_as_it_is(tmp_path: Path, monkeypatch,  # type: ignore[no-untyped-def]
                                                  capsys) -> None:
    import json

    from core.registry import ModelRegistry
    from core.settings import get_settings
    from online_learning.experiments import Arm, Experiment
    from serving.router import load_router, save_router_config
    from tests.helpers import register_ltr, run_cli

    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        paths = get_settings().paths
        registry = ModelRegistry(paths.models)
        register_ltr(paths.models, tmp_path, 2)  # v1 active, v2
        experiment = Experiment(name="nb-test", arms={"control": Arm(ltr="v1"), "treatment": Arm(ltr="v2")})
        save_router_config(paths, experiment, "v2")
        code, out, err = run_cli(capsys, "promote", "--experiment", "nb-test")  # nothing logged yet
        assert code == 0, err
        assert json.loads(out)["decision"] == "continue"
        code, out, err = run_cli(capsys, "guard")
        assert code == 0 and json.loads(out)["decision"] == "keep", err
        write_experiment_log(paths.event_log, searches=3000)  # purchase rates 8% and 12%
        code, out, err = run_cli(capsys, "promote", "--experiment", "nb-test")
        assert code == 0 and json.loads(out)["decision"] == "continue", err  # always-valid p 0.18: read again later
        assert "always-valid p=0.179" in json.loads(out)["reasons"][0]
        code, out, err = run_cli(capsys, "promote", "--experiment", "nb-test", "--single-look")
        assert code == 0 and json.loads(out)["decision"] == "promote", err  # p 0.003, for a look planned once
        write_experiment_log(paths.event_log, searches=6000)  # the same experiment, twice as long
        code, out, err = run_cli(capsys, "report", "ab", "--experiment", "nb-test", "--control", "contrl",
                                 "--out", str(tmp_path / "ab.html"))
        assert code != 0 and "--control 'contrl'" in err and "['control', 'treatment']" in err
        code, out, err = run_cli(capsys, "report", "ab", "--experiment", "nb-test", "--control", "treatment",
                                 "--treatment", "control", "--out", str(tmp_path / "ab.html"))
        assert code == 0 and json.loads(out)["treatment"] == "control", err
        assert "control vs treatment" in (tmp_path / "ab.html").read_text()
        code, out, err = run_cli(capsys, "promote", "--experiment", "nb-test", "--apply")
        decided = json.loads(out)
        assert code == 0 and decided["decision"] == "promote" and decided["winner"] == "treatment", err
        assert registry.active("ltr").version == "v2"
        router = load_router(paths)
        assert router.experiment is None and router.shadow is None  # every shopper gets the winner: no shadow of it
    finally:
        get_settings.cache_clear()


def test_interleaving_reads_the_log_after_the_traffic_filters(tmp_path: Path) -> None:
    import random
    from datetime import UTC, datetime, timedelta

    from online_learning.analysis import interleaving
    from online_learning.consumers.base import Delivered
    from online_learning.consumers.log_sink import ParquetLogSink
    from online_learning.events import (
        INTERACTIONS_TOPIC,
        RANKINGS_TOPIC,
        InteractionEvent,
        RankingEvent,
        ShownItem,
    )
    from online_learning.promotion import decide_interleaving

    rng, batch, start = random.Random(5), [], datetime(2026, 11, 1, tzinfo=UTC)

    def search(n: int, user: str, query: str, click: str | None) -> None:
        request, when = f"r{n}", start + timedelta(minutes=n)
        items = [ShownItem(product_id=f"{query}-a", position=1, team="control"),
                 ShownItem(product_id=f"{query}-b", position=2, team="treatment")]
        batch.append(Delivered(RANKINGS_TOPIC, 0, len(batch), RankingEvent(
            event_id=request, request_id=request, timestamp=when, user_id=user, query=query, pipeline="full",
            experiment="il", arm="interleaved", items=items)))
        if click is not None:
            position = 1 if click.endswith("-a") else 2
            batch.append(Delivered(INTERACTIONS_TOPIC, 0, len(batch), InteractionEvent(
                type="click", event_id=f"c{n}", request_id=request, timestamp=when, user_id=user, product_id=click,
                position=position)))

    for n in range(400):  # honest shoppers: no preference
        query = f"q{n % 40}"
        search(n, f"u{n}", query, rng.choice([f"{query}-a", f"{query}-b"]) if rng.random() < 0.25 else None)
    for n in range(400, 460):  # a swarm of sixty bots clicks the treatment's product of one query, once each
        search(n, f"bot{n}", "q1", "q1-b")
    ParquetLogSink(tmp_path / "log")(batch)
    raw = interleaving(tmp_path / "log", "il", "control", "treatment", filters=None)
    assert raw.p_value < 0.01 and decide_interleaving(raw, "control", "treatment").action == "promote"
    cleaned = interleaving(tmp_path / "log", "il", "control", "treatment")
    assert cleaned.wins["treatment"] < raw.wins["treatment"] - 50 and cleaned.p_value > 0.05
    assert decide_interleaving(cleaned, "control", "treatment").action == "continue"


def test_the_band_over_time_counts_shoppers_and_the_page_says_what_it_cannot_tell(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    from online_learning.analysis import over_time, per_shopper
    from online_learning.stats import clustered_mean

    table = arms_table({"control": 0.3, "treatment": 0.3}, {"control": 40, "treatment": 40}, searches=5)
    table["bought"] = table.groupby("user_id")["bought"].transform("max")  # a shopper buys on all or none
    table["timestamp"] = pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.arange(len(table)), "min")
    table = table.sample(frac=1.0, random_state=0)  # searches logged out of time order
    last = over_time(table, "bought").groupby("arm").last()
    for arm in ("control", "treatment"):
        expected = clustered_mean(*per_shopper(table[table["arm"] == arm], "bought"))
        half = 1.96 * np.sqrt(expected.variance)
        assert last.loc[arm, "mean"] == pytest.approx(expected.mean)
        assert last.loc[arm, "high"] - last.loc[arm, "mean"] == pytest.approx(half)  # before: 2.3x narrower
    empty = arms_table({"control": 0.0, "treatment": 0.0}, {"control": 40, "treatment": 40})  # nobody bought yet
    empty["timestamp"] = pd.Timestamp("2026-11-01", tz="UTC")
    empty["filters"], empty["clicked"] = None, 0
    report = compare_arms(empty, "control", "treatment")
    page = render("zero", empty, report, None, tmp_path / "zero.html", segments(empty, "control", "treatment"))
    text = page.read_text()
    assert "an unknown number of searches" in text and "about <b>0</b>" not in text  # before: "about 0 searches"
    assert "nan%" not in text and "(n/a)" in text and "always-valid p" in text


def test_searches_logged_without_a_latency_are_left_out_of_its_mean() -> None:
    """A search logged without a latency (an older client, an event imported from elsewhere) was not timed:
    counted as 0 ms it would pull its arm's mean latency down."""
    import pandas as pd

    from online_learning.analysis import over_time

    table = arms_table({"control": 0.1, "treatment": 0.1}, {"control": 30, "treatment": 30})
    table.loc[(table["arm"] == "treatment") & (table.index % 2 == 0), "latency_ms"] = None  # half not timed
    table["timestamp"] = pd.Timestamp("2026-11-01", tz="UTC")
    latency = compare_arms(table, "control", "treatment").by_metric()["latency_ms"]
    assert latency.control == latency.treatment == pytest.approx(30.0)  # before: 15 ms for the treatment
    assert latency.n_treatment == 60  # the timed ones
    assert over_time(table, "latency_ms").groupby("arm")["mean"].last().to_dict() == pytest.approx(
        {"control": 30.0, "treatment": 30.0})


def test_several_treatments_divide_the_alpha_of_promotions_not_of_guardrails() -> None:
    """A treatment that raises zero-result searches at p = 0.03 is stopped by its guardrail with one treatment
    beside it as with none: Bonferroni guards against promoting by chance, and a harm is no less one."""
    from online_learning.experiments import Arm, Experiment
    from online_learning.promotion import decide_experiment

    table = arms_table({"control": 0.10, "t1": 0.10, "t2": 0.10}, {"control": 300, "t1": 300, "t2": 300})
    control, t1 = table.index[table["arm"] == "control"], table.index[table["arm"] == "t1"]
    table.loc[control[:: 1200 // 16][:16], "zero_results"] = 1  # 1.3% of the control's searches find nothing
    table.loc[t1[::40], "zero_results"] = 1  # 2.5% of t1's
    experiment = Experiment(name="three", arms={"control": Arm(ltr="v1"), "t1": Arm(ltr="v2"), "t2": Arm(ltr="v3")})
    decision, _ = decide_experiment(table, experiment)
    p = decision.details["arms"]["t1"]["comparisons"]
    assert 0.025 < next(c["p_value"] for c in p if c["metric"] == "zero_result_rate") < 0.05
    assert any(r.startswith("t1: guardrail zero_result_rate") for r in decision.reasons)  # before: unseen


def test_a_promotion_decides_on_the_searches_its_arms_versions_served() -> None:
    """The log keeps an experiment's searches by its name: those of the versions an arm served before it was
    pointed at another, or of an earlier experiment of the same name, tell nothing of what it serves now."""
    import pandas as pd

    from online_learning.experiments import Arm, Experiment
    from online_learning.promotion import decide_experiment

    before = arms_table({"control": 0.10, "treatment": 0.25}, {"control": 300, "treatment": 300},
                        start="2026-10-01")  # the treatment arm served v2, which won
    now = arms_table({"control": 0.10, "treatment": 0.10}, {"control": 150, "treatment": 150}, seed=1,
                     versions={"control": "v1", "treatment": "v3"})  # then pointed at v3
    now["request_id"] = "now-" + now["request_id"]
    table = pd.concat([before, now], ignore_index=True)
    experiment = Experiment(name="nb-test", arms={"control": Arm(ltr="v1"), "treatment": Arm(ltr="v3")})
    decision, _ = decide_experiment(table, experiment)
    assert decision.action == "continue", decision.reasons  # before: v3 promoted on v2's searches
    # the control's searches from before the change are left out too: no sample ratio mismatch of 450 to 150
    assert decision.details["sizes"] == {"control": 600, "treatment": 600}
    assert not decision.reasons[0].startswith("sample ratio mismatch")
    unserved = Experiment(name="nb-test", arms={"control": Arm(ltr="v1"), "treatment": Arm(ltr="v4")})
    decision, _ = decide_experiment(table, unserved)
    assert decision.action == "continue" and decision.reasons == [
        "searches per arm served by its configured LambdaMART {'control': 'v1', 'treatment': 'v4'} since the last "
        "one served by another: {'control': 0, 'treatment': 0}, of 3600 logged under experiment 'nb-test'; "
        "nothing to decide on until every arm has some"]
    logged = Experiment(name="nb-test", arms={"control": Arm(ltr="v1"), "treatment": Arm(ltr="v2")})
    assert decide_experiment(before, logged)[0].action == "promote"  # v2's own searches: its win


def interleaved_log(root: Path, searches: list[tuple[str, str, list[str], dict[str, str]]]) -> None:
    """One interleaved search of experiment ``il`` per (shopper, query, clicked products, logged models): the
    control's products ``c0``..``c4`` and the treatment's ``t0``..``t4`` in turns, the same draft for every
    search of a query."""
    from datetime import UTC, datetime, timedelta

    from online_learning.consumers.base import Delivered
    from online_learning.consumers.log_sink import ParquetLogSink
    from online_learning.events import (
        INTERACTIONS_TOPIC,
        RANKINGS_TOPIC,
        InteractionEvent,
        RankingEvent,
        ShownItem,
    )

    batch, start = [], datetime(2026, 11, 1, tzinfo=UTC)
    shown = [product for j in range(5) for product in (f"c{j}", f"t{j}")]
    for n, (user, query, clicked, models) in enumerate(searches):
        request, when = f"r{n}", start + timedelta(minutes=n)
        items = [ShownItem(product_id=p, position=i + 1, team="control" if p[0] == "c" else "treatment")
                 for i, p in enumerate(shown)]
        batch.append(Delivered(RANKINGS_TOPIC, 0, len(batch), RankingEvent(
            event_id=request, request_id=request, timestamp=when, user_id=user, query=query, pipeline="full",
            experiment="il", arm="interleaved", items=items, models=models)))
        for k, product in enumerate(clicked):
            batch.append(Delivered(INTERACTIONS_TOPIC, 0, len(batch), InteractionEvent(
                type="click", event_id=f"c{n}-{k}", request_id=request, timestamp=when + timedelta(seconds=k),
                user_id=user, product_id=product, position=shown.index(product) + 1)))
    ParquetLogSink(root)(batch)


SERVED = {"ltr:control": "v1", "ltr:treatment": "v2"}


def test_interleaving_counts_each_shopper_once(tmp_path: Path) -> None:
    """A shopper who searches a query again sees the same draft and clicks alike: twenty shoppers who each
    preferred the treatment's products in ten searches are twenty votes, not two hundred."""
    from online_learning.analysis import interleaving
    from online_learning.promotion import decide_interleaving

    searches = [(f"keen{u}", f"q{u}", [f"t{j % 5}"], SERVED) for u in range(20) for j in range(10)]
    searches += [(f"once{u}", f"p{u}", ["c0"], SERVED) for u in range(20)]  # one search each, for the control
    searches += [("mixed", "m", ["t0"], SERVED), ("mixed", "m", ["t1"], SERVED), ("mixed", "m", ["c0"], SERVED)]
    searches += [("even", "e", ["t0"], SERVED), ("even", "e", ["c0"], SERVED), ("even", "e", [], SERVED)]
    interleaved_log(tmp_path / "log", searches)
    result = interleaving(tmp_path / "log", "il", "control", "treatment")
    # "mixed" won 2 of 3 for the treatment: one vote for it; "even" 1 and 1: neither
    assert result.wins == {"control": 20, "treatment": 21} and result.ties == 1 and result.searches == 225
    assert result.p_value == 1.0 and result.preference == (21 - 20) / 42
    decision = decide_interleaving(result, "control", "treatment")
    assert decision.action == "continue", decision.reasons  # before: 201 searches won against 21, promoted
    assert decision.details["unit"] == "shopper"
    assert decide_interleaving(result, "control", "treatment", Policy(sequential=False)).action == "continue"


def test_interleaving_counts_a_product_clicked_again_once_and_only_the_arms_versions(tmp_path: Path) -> None:
    from online_learning.analysis import interleaving

    again = [("u1", "drill", ["c0", "c0", "c0", "t0", "t1"], SERVED)]  # a double click and a return to c0
    other = [("u2", "hose", ["c0"], {"ltr:control": "v1", "ltr:treatment": "v9"})]  # the treatment served v9
    interleaved_log(tmp_path / "log", other + again)  # v9's search first: the searches since are v2's
    result = interleaving(tmp_path / "log", "il", "control", "treatment", versions={"control": "v1",
                                                                                   "treatment": "v2"})
    assert result.wins == {"control": 0, "treatment": 1} and result.ties == 0  # before: 3 clicks to 2, the control
    every = interleaving(tmp_path / "log", "il", "control", "treatment")
    assert every.wins == {"control": 1, "treatment": 1} and every.searches == 2


def test_interleaving_counts_only_the_searches_since_the_arms_were_last_served_otherwise(tmp_path: Path) -> None:
    """An arm pointed elsewhere and back: its searches from before are not the configured version's latest
    ones (before: the first period's 40 votes for v2 promoted it, its 5 searches since were for the control)."""
    from online_learning.analysis import interleaving
    from online_learning.promotion import decide_interleaving

    elsewhere = {"ltr:control": "v1", "ltr:treatment": "v9"}
    searches = [(f"a{u}", f"q{u}", ["t0"], SERVED) for u in range(40)]  # the treatment served v2
    searches += [(f"b{u}", f"p{u}", ["c0"], elsewhere) for u in range(40)]  # then v9
    searches += [(f"c{u}", f"r{u}", ["c0"], SERVED) for u in range(5)]  # then v2 again
    interleaved_log(tmp_path / "log", searches)
    result = interleaving(tmp_path / "log", "il", "control", "treatment", versions={"control": "v1",
                                                                                   "treatment": "v2"})
    assert result.wins == {"control": 5, "treatment": 0} and result.searches == 5
    assert decide_interleaving(result, "control", "treatment").action == "continue"


def test_an_arm_the_versions_do_not_name_leaves_the_others_searches() -> None:
    """The notebook names the arms it reviews: a third arm's searches, all the while, are no change of version."""
    import pandas as pd

    from online_learning.analysis import served_since_change

    rows = pd.DataFrame({"arm": ["control", "treatment", "t2"] * 3,
                         "models": ['{"ltr": "v1"}', '{"ltr": "v2"}', '{"ltr": "v7"}'] * 3,
                         "timestamp": pd.date_range("2026-11-01", periods=9, freq="min", tz="UTC")})
    kept = served_since_change(rows, {"control": "v1", "treatment": "v2"})
    assert kept["arm"].tolist() == ["control", "treatment"] * 3  # before: none
    moved = rows.assign(models=['{"ltr": "v1"}', '{"ltr": "v9"}', '{"ltr": "v7"}'] + ['{"ltr": "v1"}',
                                                                                       '{"ltr": "v2"}',
                                                                                       '{"ltr": "v7"}'] * 2)
    assert served_since_change(moved, {"control": "v1", "treatment": "v2"})["timestamp"].min() == rows["timestamp"][3]


def test_arm_names_are_drawn_as_written(tmp_path: Path) -> None:
    """Matplotlib reads text between two ``$`` as math: an arm named ``t_$5_$`` failed the whole report."""
    from online_learning.analysis import InterleavingResult

    table = arms_table({"control": 0.1, "t_$5_$": 0.12}, {"control": 40, "t_$5_$": 40})
    table["filters"] = None
    result = InterleavingResult({"control": 3, "t_$5_$": 5}, 1, 0.2, 0.73, 12)
    page = render("exp", table, compare_arms(table, "control", "t_$5_$"), result, tmp_path / "ab.html",
                  segments(table, "control", "t_$5_$")).read_text()
    assert page.count("data:image/png;base64") == 4
    assert "12 searches with clicks by 9 shoppers; preferring control: 3, t_$5_$: 5, neither: 1" in page


def test_an_arm_named_with_a_leading_underscore_is_in_the_legend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Matplotlib leaves a label starting with ``_`` out of a legend: the plot over time showed ``_new``'s line
    with no name."""
    from online_learning import report

    legends = []

    def kept(figure):  # type: ignore[no-untyped-def]
        legends.append([text.get_text().lstrip("\u200b") for text in figure.axes[0].get_legend().get_texts()])
        return "<img>"

    monkeypatch.setattr(report, "_png", kept)
    report.plot_over_time(arms_table({"control": 0.1, "_new": 0.12}, {"control": 20, "_new": 20}), "bought", "Buy")
    assert legends == [["_new", "control"]]


@pytest.fixture()
def loop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A home whose event log holds 3,000 searches of experiment ``nb-test`` (control v1, treatment v2:
    purchase rates 8% and 12%, a promotion on one look) and whose registry holds v1 (active), v2 and v3; made
    by the function given, with the versions' places (from 0) that do not load."""
    from core.settings import get_settings
    from tests.helpers import register_ltr

    def make(broken: tuple[int, ...] = ()):  # type: ignore[no-untyped-def]
        monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path / "home"))
        get_settings.cache_clear()
        paths = get_settings().paths
        register_ltr(paths.models, tmp_path, 3, broken)
        write_experiment_log(paths.event_log, searches=3000)
        return paths

    yield make
    get_settings.cache_clear()


def test_promote_apply_activates_only_what_it_decided_on(loop_home, monkeypatch,  # type: ignore[no-untyped-def]
                                                         capsys) -> None:
    import json

    import online_learning.promotion as promotion
    from core.registry import ModelRegistry
    from online_learning.experiments import Arm, Experiment, read_config
    from serving.router import save_router_config
    from tests.helpers import run_cli

    home = loop_home()
    registry = ModelRegistry(home.models)
    promote = ("promote", "--experiment", "nb-test", "--apply", "--single-look")
    # the treatment arm was pointed at v3 since: no logged search is v3's
    save_router_config(home, Experiment(name="nb-test", arms={"control": Arm(ltr="v1"), "treatment": Arm(ltr="v3")}),
                       None)
    code, out, err = run_cli(capsys, *promote)
    assert code == 0 and json.loads(out)["decision"] == "continue", err  # before: v3 activated on v2's searches
    assert registry.active("ltr").version == "v1"
    # an operator starts the next experiment while promote reads the log: it is not overwritten
    logged = Experiment(name="nb-test", arms={"control": Arm(ltr="v1"), "treatment": Arm(ltr="v2")})
    following = Experiment(name="next", arms={"control": Arm(ltr="v1"), "treatment": Arm(ltr="v3")})
    save_router_config(home, logged, None)
    decide = promotion.decide_experiment

    def deciding(*args, **kwargs):  # type: ignore[no-untyped-def]
        save_router_config(home, following, "v3")
        return decide(*args, **kwargs)

    monkeypatch.setattr(promotion, "decide_experiment", deciding)
    code, out, err = run_cli(capsys, *promote)
    assert code == 2 and "changed while promote decided" in err and "nothing was activated" in err
    assert registry.active("ltr").version == "v1" and read_config(home.experiment_config) == (following, "v3")
    monkeypatch.setattr(promotion, "decide_experiment", decide)
    save_router_config(home, logged, "v3")
    code, out, err = run_cli(capsys, *promote)
    assert code == 0 and json.loads(out)["activated"] == {"ltr": "v2"}, err
    assert registry.active("ltr").version == "v2" and read_config(home.experiment_config) == (None, "v3")


def test_promote_apply_refuses_a_winner_that_does_not_load(loop_home, capsys) -> None:  # type: ignore[no-untyped-def]
    from core.registry import ModelRegistry
    from online_learning.experiments import Arm, Experiment, read_config
    from serving.router import save_router_config
    from tests.helpers import run_cli

    home = loop_home(broken=(1,))  # v2, the treatment the log's searches name
    experiment = Experiment(name="nb-test", arms={"control": Arm(ltr="v1"), "treatment": Arm(ltr="v2")})
    save_router_config(home, experiment, None)
    code, out, err = run_cli(capsys, "promote", "--experiment", "nb-test", "--apply", "--single-look")
    assert code == 2 and "ltr v2 does not load" in err, err  # before: activated, and no server could load it
    assert ModelRegistry(home.models).active("ltr").version == "v1"
    assert read_config(home.experiment_config) == (experiment, None)


def test_a_nightly_promote_apply_passes_the_nights_after_its_promotion(loop_home,  # type: ignore[no-untyped-def]
                                                                       capsys) -> None:
    """Before: the night after `promote --apply` promoted and stopped the experiment, and every night after until the
    next one started, the same cron line failed (exit 2, "is not the running one (none running)")."""
    import json

    from core.registry import ModelRegistry
    from online_learning.experiments import Arm, Experiment, read_config
    from serving.router import save_router_config
    from tests.helpers import run_cli

    home = loop_home()
    registry = ModelRegistry(home.models)
    save_router_config(home, Experiment(name="nb-test", arms={"control": Arm(ltr="v1"), "treatment": Arm(ltr="v2")}),
                       None)
    nightly = ("promote", "--experiment", "nb-test", "--apply", "--single-look")
    code, out, err = run_cli(capsys, *nightly)
    assert code == 0 and json.loads(out)["activated"] == {"ltr": "v2"}, err
    for _ in range(2):  # the nights after: nothing to decide on, nothing changed, not a failure
        code, out, err = run_cli(capsys, *nightly)
        decided = json.loads(out)
        assert code == 0 and decided["decision"] == "none running" and decided["experiment"] == "nb-test", err
        assert "no experiment is running" in decided["reasons"][0] and "activated" not in decided
        assert registry.active("ltr").version == "v2" and read_config(home.experiment_config) == (None, None)
    # another experiment running than the one the job names is still the job's error
    save_router_config(home, Experiment(name="next", arms={"control": Arm(ltr="v2"), "treatment": Arm(ltr="v3")}),
                       None)
    code, out, err = run_cli(capsys, *nightly)
    assert code == 2 and "experiment 'nb-test' is not the running one ('next' is)" in err and not out
    assert registry.active("ltr").version == "v2"


def test_interleaving_judges_a_shoppers_volume_one_utc_day_at_a_time(tmp_path: Path) -> None:
    """A loyal shopper: 30 interleaved searches a day for 5 days, against max_searches 100. Before, the experiment's
    150 were judged together and every one dropped as `anomalous:volume` (their votes lost), while the A/B path
    judges a day at a time; a bot's 120 in one day still goes."""
    from online_learning.analysis import interleaved_searches
    from online_learning.traffic_filter import FilterConfig

    log_daily_searches(tmp_path / "log", [("loyal", day, 30) for day in range(5)] + [("bot", 2, 120)],
                       experiment="il")
    rankings, clicks = interleaved_searches(tmp_path / "log", "il", FilterConfig(max_searches=100))
    kept = rankings.drop_duplicates("request_id").groupby("user_id").size()
    assert kept.get("loyal") == 150 and "bot" not in kept
    assert clicks["request_id"].str.startswith("loyal").sum() == 50  # each of their clicked searches' click
