"""Analysis, promotion decisions and the HTML report on a generated experiment log."""

from __future__ import annotations

from pathlib import Path

from online_learning.analysis import compare_arms, searches
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
    assert page.count("data:image/png;base64") == 3 and "purchase_rate" in page and "searches per arm" in page.lower()
