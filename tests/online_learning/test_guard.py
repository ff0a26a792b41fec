"""Automatic rollback: `shoprank guard` compares the active LambdaMART's searches with the previous one's."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.registry import ModelRegistry
from core.settings import get_settings
from online_learning.analysis import searches
from online_learning.consumers.base import Delivered
from online_learning.consumers.log_sink import ParquetLogSink
from online_learning.events import (
    INTERACTIONS_TOPIC,
    RANKINGS_TOPIC,
    InteractionEvent,
    RankingEvent,
    ShownItem,
)
from online_learning.promotion import Policy, check_regression
from shoprank.cli import main
from simulation.simulator import compare_replays


def served_log(root: Path, rates: dict[str, float], per_version: int) -> None:
    """``per_version`` logged searches served by each LambdaMART version, bought with the given rate."""
    rng = random.Random(0)
    batch = []
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for v, (version, rate) in enumerate(rates.items()):
        for i in range(per_version):
            request = f"{version}-{i}"
            when = start + timedelta(days=v, minutes=i)
            batch.append(Delivered(RANKINGS_TOPIC, 0, len(batch), RankingEvent(
                event_id=request, request_id=request, timestamp=when, user_id=f"{version}-u{i}", query="drill",
                pipeline="full", latency_ms=30.0, models={"ltr": version},
                items=[ShownItem(product_id=f"p{j}", position=j + 1) for j in range(5)])))
            if rng.random() < rate:
                batch.append(Delivered(INTERACTIONS_TOPIC, 0, len(batch), InteractionEvent(
                    type="purchase", event_id=f"b-{request}", request_id=request, timestamp=when,
                    product_id="p0", position=1, revenue=10.0)))
    ParquetLogSink(root)(batch)


def test_check_regression_needs_a_significant_drop(tmp_path: Path) -> None:
    served_log(tmp_path / "worse", {"v1": 0.10, "v2": 0.03}, per_version=600)
    decision = check_regression(searches(tmp_path / "worse"), active="v2", previous="v1")
    assert decision.action == "rollback" and "purchase_rate of v2" in decision.reasons[0]
    served_log(tmp_path / "same", {"v1": 0.08, "v2": 0.08}, per_version=600)
    assert check_regression(searches(tmp_path / "same"), active="v2", previous="v1").action == "keep"
    # too little traffic on the new version to judge: keep it, and say so
    few = check_regression(searches(tmp_path / "worse"), "v2", "v1", Policy(min_searches=1000))
    assert few.action == "keep" and "too few searches" in few.reasons[0]


def spans_log(root: Path, spans: list[tuple[str, int, int, datetime, int]]) -> None:
    """Per (version, searches, one bought in every so many (0: none), first search, shoppers): that many searches
    served by the version ten minutes apart from the first, by that many shoppers in turn, each ``every``-th
    bought."""
    batch = []
    for s, (version, count, every, start, shoppers) in enumerate(spans):
        for i in range(count):
            request, when = f"{s}-{version}-{i}", start + timedelta(minutes=10 * i)
            batch.append(Delivered(RANKINGS_TOPIC, 0, len(batch), RankingEvent(
                event_id=request, request_id=request, timestamp=when, user_id=f"{s}-u{i % shoppers}", query="drill",
                pipeline="full", latency_ms=30.0, models={"ltr": version},
                items=[ShownItem(product_id=f"p{j}", position=j + 1) for j in range(5)])))
            if every and i % every == 0:
                batch.append(Delivered(INTERACTIONS_TOPIC, 0, len(batch), InteractionEvent(
                    type="purchase", event_id=f"b-{request}", request_id=request, timestamp=when,
                    product_id="p0", position=1, revenue=10.0)))
    ParquetLogSink(root)(batch)


def test_guard_compares_the_active_version_with_the_previous_one_s_last_searches(tmp_path: Path) -> None:
    """Last December v1 converted at 10%; in its last weeks, at 5%, as v2 does since: no regression."""
    spans_log(tmp_path / "log", [("v1", 3000, 10, datetime(2025, 12, 1, tzinfo=UTC), 3000),
                                 ("v1", 800, 20, datetime(2026, 6, 1, tzinfo=UTC), 800),
                                 ("v2", 800, 20, datetime(2026, 6, 10, tzinfo=UTC), 800)])
    decision = check_regression(searches(tmp_path / "log"), active="v2", previous="v1")
    assert decision.action == "keep" and decision.reasons == ["no significant regression (p=1)"]  # before: rollback
    assert decision.details["sizes"] == {"v1": 800, "v2": 800}  # v1's as long a time before v2 was activated
    assert decision.details["windows"]["v1"][0].startswith("2026-06-01")
    # v1 active again after v2's time: judged on its searches since, not on its first ones
    spans_log(tmp_path / "again", [("v1", 800, 20, datetime(2026, 6, 1, tzinfo=UTC), 800),
                                   ("v2", 800, 20, datetime(2026, 6, 10, tzinfo=UTC), 800),
                                   ("v1", 800, 50, datetime(2026, 6, 20, tzinfo=UTC), 800)])
    again = check_regression(searches(tmp_path / "again"), active="v1", previous="v2")
    assert again.action == "rollback" and again.details["sizes"] == {"v2": 800, "v1": 800}


def test_guard_keeps_a_version_only_a_few_shoppers_searched(tmp_path: Path) -> None:
    """Three shoppers who searched 300 times and bought nothing (the night after the activation, an uptime
    probe) tell little: the policy's 30 shoppers per side, as a promotion needs."""
    spans_log(tmp_path / "log", [("v1", 600, 10, datetime(2026, 6, 1, tzinfo=UTC), 600),
                                 ("v2", 600, 0, datetime(2026, 6, 10, tzinfo=UTC), 3)])
    table = searches(tmp_path / "log")
    decision = check_regression(table, active="v2", previous="v1")
    assert decision.action == "keep" and decision.reasons == [  # before: rollback
        "too few shoppers to judge (600 before, 3 after; need 30 each)"]
    assert check_regression(table, "v2", "v1", Policy(min_shoppers=3)).action == "rollback"


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path))
    get_settings.cache_clear()
    import numpy as np

    from ranking.lambdamart import LambdaMART, LambdaMARTConfig, RankingData

    registry = ModelRegistry(tmp_path / "models")
    x = np.random.default_rng(3).normal(size=(100, 2)).astype(np.float32)
    data = RankingData(x, (x[:, 0] > 0).astype(np.int32), [10] * 10, ["bm25", "dense"])
    for name in ("a", "b"):  # models that load: a rollback, as an activation, refuses one that does not
        folder = tmp_path / "trained" / name
        LambdaMART.fit(data, data, LambdaMARTConfig(max_grade=1, min_data_in_leaf=5, max_rounds=3)).save(folder)
        registry.register("ltr", folder, base_model="lightgbm", activate=True)  # v1, then v2 (history: v1)
    yield tmp_path
    get_settings.cache_clear()


def test_guard_rolls_back_a_regressed_model(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    served_log(home / "event_log", {"v1": 0.10, "v2": 0.02}, per_version=500)
    assert main(["guard"]) == 0  # without --apply: reports, changes nothing
    report = json.loads(capsys.readouterr().out)
    assert report["decision"] == "rollback" and ModelRegistry(home / "models").active("ltr").version == "v2"
    assert main(["guard", "--apply"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rolled_back_to"] == "v1" and ModelRegistry(home / "models").active("ltr").version == "v1"


def test_guard_keeps_a_model_that_holds_up(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    served_log(home / "event_log", {"v1": 0.06, "v2": 0.07}, per_version=500)
    assert main(["guard", "--apply"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["decision"] == "keep" and ModelRegistry(home / "models").active("ltr").version == "v2"


def replay(values: dict[int, float], bought: dict[int, int]) -> dict:
    return {"sessions_detail": {str(n): {"arm": "all", "true_ndcg@10": v, "purchased": bought[n], "clicked": 1}
                                for n, v in values.items()}}


def test_paired_replay_comparison() -> None:
    rng = random.Random(3)
    base = {n: rng.random() for n in range(400)}
    bought = {n: int(rng.random() < 0.1) for n in range(400)}
    better = {n: min(1.0, v + 0.03 + rng.gauss(0, 0.05)) for n, v in base.items()}
    result = compare_replays(replay(base, bought), replay(better, bought))
    ndcg = result["true_ndcg@10"]
    assert result["paired_sessions"] == 400 and ndcg["significant"] and 0 < ndcg["ci_low"] < 0.03 < ndcg["ci_high"]
    assert not result["purchased"]["significant"] and result["purchased"]["p_value"] == 1.0  # identical purchases
    # sessions are matched by number, not by order; unmatched ones are left out
    shuffled = dict(list(reversed(list(better.items())))[:300])
    assert compare_replays(replay(base, bought), replay(shuffled, bought))["paired_sessions"] == 300


def test_report_replay_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(5)
    base = {n: rng.random() for n in range(200)}
    bought = {n: int(rng.random() < 0.1) for n in range(200)}
    first, second, bad = tmp_path / "v1.json", tmp_path / "v2.json", tmp_path / "summary.json"
    first.write_text(json.dumps(replay(base, bought)))
    second.write_text(json.dumps(replay({n: min(1.0, v + 0.05) for n, v in base.items()}, bought)))
    bad.write_text(json.dumps({"overall": {}}))  # the printed summary, not the --out file
    assert main(["report", "replay", str(first), str(second)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["paired_sessions"] == 200 and out["true_ndcg@10"]["significant"]
    assert out["true_ndcg@10"]["treatment"] > out["true_ndcg@10"]["control"]
    assert main(["report", "replay", str(first), str(bad)]) == 2
    assert "sessions_detail" in capsys.readouterr().err
    # a hand-edited value, or a session number int() refuses: one line naming it (before: a traceback, or a CI of
    # null for a whole metric)
    for session, value, named in (("3", "x", "session 3's true_ndcg@10 is 'x'"), ("3", None, "session 3's"),
                                  ("3", [0.5], "session 3's"), ("²", 0.5, "'sessions_detail' is not")):
        edited = replay(base, bought)
        edited["sessions_detail"][session] = {**edited["sessions_detail"]["3"], "true_ndcg@10": value}
        bad.write_text(json.dumps(edited))
        assert main(["report", "replay", str(first), str(bad)]) == 2
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, err


def test_guard_apply_leaves_a_version_activated_while_it_judged(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """v2 regressed against v1; while the guard reads the log, a promotion activates v3. Before, the guard rolled
    v3 back onto v2, the version it had just judged to have regressed."""
    import online_learning.analysis

    registry = ModelRegistry(home / "models")
    v1 = registry.get("ltr", "v1").path  # a copy of it as v3: a model that loads
    registry.register("ltr", v1, base_model="lightgbm", move=False)  # type: ignore[arg-type]
    served_log(home / "event_log", {"v1": 0.10, "v2": 0.02}, per_version=500)
    read = online_learning.analysis.searches

    def searches_while_v3_is_promoted(*args, **kwargs):  # type: ignore[no-untyped-def]
        table = read(*args, **kwargs)
        registry.activate("ltr", "v3")
        return table

    monkeypatch.setattr(online_learning.analysis, "searches", searches_while_v3_is_promoted)
    assert main(["guard", "--apply"]) == 2
    err = capsys.readouterr().err
    assert "ltr v2 is no longer the active version: v3 was activated after v2 was judged" in err, err
    assert "run `shoprank guard` again" in err
    assert registry.state("ltr") == {"version": "v3", "history": ["v1", "v2"]}  # before: v2 active again
