"""Analysis, promotion decisions and the HTML report on a generated experiment log."""

from __future__ import annotations

from pathlib import Path

from online_learning.analysis import compare_arms, searches, segments
from online_learning.promotion import Policy, decide_ab
from online_learning.report import render
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
