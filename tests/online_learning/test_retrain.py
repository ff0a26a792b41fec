"""Retraining from logged traffic: registers once, idempotent, one run at a time, crash-safe."""

from __future__ import annotations

import fcntl
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from core.errors import InvalidInput
from core.registry import ModelRegistry, ServedModel
from core.settings import Settings
from online_learning.consumers.log_sink import ParquetLogSink
from online_learning.forget_list import ForgetList
from online_learning.retrain import RetrainConfig, retrain
from ranking.lambdamart import LambdaMART, LambdaMARTConfig, RankingData
from serving.engine import assemble
from tests.helpers import demo_traffic, log_daily_searches

pytestmark = pytest.mark.slow


@pytest.fixture()
def setup(tmp_path: Path, settings: Settings, real_index, real_encoder):  # type: ignore[no-untyped-def]
    home_settings = settings.model_copy(update={"home": tmp_path})
    engine = assemble(real_index, real_encoder, home_settings)
    ParquetLogSink(home_settings.paths.event_log)(demo_traffic(engine))
    return home_settings, engine


def served_retrain(settings: Settings, engine, **config) -> dict:  # type: ignore[no-untyped-def]
    """Retrain as ``shoprank retrain`` does: the served featurizer, active model and first stage."""
    config.setdefault("min_searches", 100)
    return retrain(settings, engine.featurizer([]), engine.ltr, RetrainConfig(**config), engine.hybrid)


def test_retrain_registers_once_then_is_up_to_date(setup) -> None:  # type: ignore[no-untyped-def]
    settings, engine = setup
    first = served_retrain(settings, engine)
    assert first["status"] == "registered" and first["version"] == "v1"
    assert first["propensities"][0] == 1.0 and len(first["propensities"]) == 10
    entry = ModelRegistry(settings.paths.models).get("ltr", "v1")
    assert entry.params["data_window"]["until"] and entry.metrics["searches"] == 300
    assert entry.metrics["valid_ips_dcg@10"] > 0
    assert served_retrain(settings, engine)["status"] == "up to date"
    assert [v.version for v in ModelRegistry(settings.paths.models).versions("ltr")] == ["v1"]
    ModelRegistry(settings.paths.models).delete("ltr", "v1")  # an experiment rejected it
    # its window was learnt: the next run does not learn it again (before: v2, from the log's start)
    again = served_retrain(settings, engine)
    assert again["status"] == "up to date"


def test_a_crash_registers_nothing_and_the_rerun_completes(setup, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    settings, engine = setup
    real_fit = LambdaMART.fit_unbiased

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise MemoryError("killed mid-training")

    monkeypatch.setattr(LambdaMART, "fit_unbiased", crash)
    with pytest.raises(MemoryError):
        served_retrain(settings, engine)
    assert ModelRegistry(settings.paths.models).versions("ltr") == []
    monkeypatch.setattr(LambdaMART, "fit_unbiased", real_fit)
    assert served_retrain(settings, engine)["version"] == "v1"


def test_a_candidate_saved_and_never_registered_is_removed_by_the_next_run(  # type: ignore[no-untyped-def]
        setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed after saving its candidate and before registering it (which moves the folder into the
    registry). Before, its `training/retrain-<hash>` folder stayed for good once the next run's window differed
    (more searches logged meanwhile): a crash left it behind."""
    import pandas as pd

    settings, engine = setup  # 300 searches, a minute apart from 2026-11-01 00:00 UTC
    training = settings.paths.training("retrain").parent

    def killed(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise SystemExit(137)  # as `kill -9` leaves it: the folder saved, nothing registered

    monkeypatch.setattr(ModelRegistry, "register", killed)
    halfway = pd.Timestamp("2026-11-01T02:29:30+00:00")
    with pytest.raises(SystemExit):
        served_retrain(settings, engine, settle_minutes=(pd.Timestamp.now(tz="UTC") - halfway).total_seconds() / 60)
    left = [p.name for p in training.glob("retrain-*")]
    assert len(left) == 1 and ModelRegistry(settings.paths.models).versions("ltr") == []
    monkeypatch.undo()
    again = served_retrain(settings, engine)  # the whole log now: another window, another folder name
    assert again["status"] == "registered" and again["metrics"]["searches"] == 300
    assert list(training.glob("retrain-*")) == [], left  # before: the killed run's folder was still there


def test_one_run_at_a_time(setup) -> None:  # type: ignore[no-untyped-def]
    settings, engine = setup
    with open(settings.home / "retrain.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = served_retrain(settings, engine)
    assert result == {"status": "skipped", "reason": "another retrain is running"}


def test_the_last_searches_wait_for_the_next_run_to_settle(setup) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    settings, engine = setup  # 300 searches, a minute apart from 2026-11-01 00:00 UTC
    halfway = pd.Timestamp("2026-11-01T02:29:30+00:00")
    settle = (pd.Timestamp.now(tz="UTC") - halfway).total_seconds() / 60
    first = served_retrain(settings, engine, settle_minutes=settle)
    assert first["status"] == "registered" and first["metrics"]["searches"] == 150  # those before 02:29:30
    assert pd.Timestamp(first["window"]["until"]) < halfway
    second = served_retrain(settings, engine)
    assert second["status"] == "registered" and second["metrics"]["searches"] == 150  # the rest, once settled


def test_a_search_stamped_ahead_of_the_clock_does_not_end_the_window_in_the_future(  # type: ignore[no-untyped-def]
        setup) -> None:
    """Events may be stamped up to 24 hours ahead of the clock (online_learning.events.MAX_AHEAD). Before, with
    --settle-minutes 0 the window ended at the last logged search, such a one: tomorrow was recorded as the window's
    end, and every search logged before then was skipped as learnt ("up to date")."""
    from datetime import timedelta

    import pandas as pd

    from online_learning.consumers.base import Delivered
    from online_learning.events import RANKINGS_TOPIC, RankingEvent, ShownItem

    settings, engine = setup  # 300 searches, a minute apart from 2026-11-01 00:00 UTC
    now = datetime.now(UTC)
    shown = [ShownItem(product_id=engine.index.product_id(d), position=d + 1) for d in range(3)]
    ParquetLogSink(settings.paths.event_log)([Delivered(RANKINGS_TOPIC, 1, 0, RankingEvent(
        event_id="ahead", request_id="ahead", timestamp=now + timedelta(hours=12), user_id="u1", query="drill",
        pipeline="full", items=shown))])
    first = served_retrain(settings, engine, settle_minutes=0)
    assert first["status"] == "registered" and first["metrics"]["searches"] == 300  # not the one ahead
    assert pd.Timestamp(first["window"]["until"]) <= pd.Timestamp(now)  # before: 12 hours from now
    # the day's traffic, logged after that run, stamped before now: the next run learns it
    day = now - timedelta(days=1) - datetime(2026, 11, 1, tzinfo=UTC)
    later = []
    for delivered in demo_traffic(engine):
        event = delivered.event
        later.append(Delivered(delivered.topic, 2, delivered.offset, event.model_copy(update={
            "event_id": f"d-{event.event_id}", "request_id": f"d-{event.request_id}",
            "timestamp": event.timestamp + day})))
    ParquetLogSink(settings.paths.event_log)(later)
    second = served_retrain(settings, engine, settle_minutes=0)
    assert second["status"] == "registered" and second["metrics"]["searches"] == 300, second  # before: "up to date"


def test_a_window_recorded_as_ending_after_its_registration_ends_there(  # type: ignore[no-untyped-def]
        tmp_path) -> None:
    """A model registered by a run from before the window was kept from ending after now recorded tomorrow as its
    end: the next runs read from its registration instead (before: "up to date" until tomorrow)."""
    import pandas as pd

    from core.registry import ModelRegistry
    from online_learning.retrain import _last_window_end

    registry = ModelRegistry(tmp_path / "models")
    for name, until in (("v1", "2026-11-01T10:00:00+00:00"), ("v2", "2099-01-01T00:00:00+00:00")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.txt").write_text(name)
        registry.register("ltr", folder, base_model="lightgbm", params={"data_window": {"until": until}})
    created = pd.Timestamp(registry.get("ltr", "v2").created)
    assert _last_window_end(registry) == created  # before: 2099
    registry.delete("ltr", "v2")  # a rejected candidate's window counts as well, its registration too
    assert _last_window_end(registry) == created


def test_logged_queries_are_featurized_as_searched(fake_index) -> None:  # type: ignore[no-untyped-def]
    import json

    import numpy as np
    import pandas as pd

    from online_learning.retrain import logged_ranking_data
    from ranking.features import BASE_FEATURES, LtrFeaturizer

    embedded: list[str] = []

    def embed(text: str) -> np.ndarray:
        embedded.append(text)
        return np.ones(fake_index.dense.vectors.shape[1], dtype=np.float32)

    word = next(w for w in fake_index.title(0).split() if w.isalpha() and len(w) > 3).lower()
    typed = f"  {word.upper()}!! "  # a search read as `word`: case folded, symbols dropped
    ids = [fake_index.product_id(d) for d in range(3)]
    shown = pd.DataFrame({"request_id": "r1", "query": typed, "user_id": "u1", "product_id": ids,
                          "position": [1, 2, 3], "scores": json.dumps({}), "engagement": [1, 0, 0]})
    featurizer = LtrFeaturizer(fake_index, embed, None, list(BASE_FEATURES))
    data, _ = logged_ranking_data(featurizer, shown, None)
    assert data.groups == [3] and embedded == [word]  # before: the text as typed, which no search reads


class EveryPositionSeen:
    """A position model under which every shown product was examined (propensity 1)."""

    theta = np.ones(10)

    def propensity(self, positions: np.ndarray) -> np.ndarray:
        return np.ones(len(positions))


def falling_with_bm25(searches: int, seed: int = 0) -> tuple[RankingData, np.ndarray]:
    """Logged searches whose engagement falls as "bm25" rises, ten shown products each."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(searches * 10, 2)).astype(np.float32)
    labels = (x[:, 0] < -0.5).astype(np.int32)
    data = RankingData(x, labels, [10] * searches, ["bm25", "price"], [f"r{i}" for i in range(searches)])
    return data, np.tile(np.arange(1, 11), searches)


def test_a_candidate_keeps_its_parents_monotone_features() -> None:
    from online_learning.retrain import _fit_candidate

    data, positions = falling_with_bm25(300)
    judged, _ = falling_with_bm25(100, seed=1)
    parent = LambdaMART.fit(judged, judged, LambdaMARTConfig(max_grade=3, min_data_in_leaf=5, max_rounds=20,
                                                             monotone=("bm25",)))
    candidate, config, _ = _fit_candidate(data, positions, EveryPositionSeen(), ServedModel("ltr", "v1", parent),
                                          RetrainConfig())
    assert config.monotone == ("bm25",)
    grid = np.column_stack([np.linspace(-2, 2, 41), np.zeros(41)]).astype(np.float32)
    assert np.all(np.diff(candidate.predict(grid)) >= -1e-9)  # before: the new trees learnt the fall


def test_logged_searches_get_their_first_stage_ranks_again(fake_index) -> None:  # type: ignore[no-untyped-def]
    """The impression log keeps no first-stage rank: the served first stage ranks the shown products again."""
    import json

    import pandas as pd

    from online_learning.retrain import logged_ranking_data
    from ranking.features import LtrFeaturizer, feature_names
    from retrieval.hybrid import BM25Retriever, DenseRetriever, HybridRetriever
    from tests.fakes import HashingEncoder

    encoder = HashingEncoder()
    first_stage = HybridRetriever(BM25Retriever(fake_index), DenseRetriever(fake_index, encoder), depth=50)
    word = next(w for w in fake_index.title(0).split() if w.isalpha() and len(w) > 3).lower()
    served = first_stage.search(word, 3)
    shown_order = [2, 0, 1]  # LambdaMART showed the first stage's third product first
    shown = pd.DataFrame({"request_id": "r1", "query": word, "user_id": "u1",
                          "product_id": [served.product_ids[i] for i in shown_order], "position": [1, 2, 3],
                          "scores": json.dumps({}), "engagement": [1, 0, 0]})
    names = feature_names(["base", "ranks"])
    featurizer = LtrFeaturizer(fake_index, lambda text: encoder.encode([text])[0], None, names)
    data, _ = logged_ranking_data(featurizer, shown, None, first_stage=first_stage)
    for run in ("bm25", "dense", "rrf"):
        expected = np.asarray(served.ranks[run], dtype=np.float32)[shown_order]
        expected = np.where(expected > 0, expected, np.nan)
        assert np.array_equal(data.features[:, names.index(f"rank_{run}")], expected, equal_nan=True), run
    assert data.features[:, names.index("rank_rrf")].tolist() == [3, 1, 2]  # before: NaN on every row


def test_a_model_reading_ranks_is_not_retrained_without_the_first_stage(  # type: ignore[no-untyped-def]
        tmp_path: Path, settings: Settings, fake_index) -> None:
    from types import SimpleNamespace

    from ranking.features import LtrFeaturizer, feature_names

    names = feature_names(["base", "ranks"])
    home = settings.model_copy(update={"home": tmp_path})
    active = ServedModel("ltr", "v3", SimpleNamespace(names=names))
    result = retrain(home, LtrFeaturizer(fake_index, lambda text: np.ones(64), None, names), active, RetrainConfig())
    assert result["status"] == "skipped" and "rank_rrf" in result["reason"] and "v3" in result["reason"]


def test_a_window_without_engagement_registers_nothing_and_stays_for_the_next_run(  # type: ignore[no-untyped-def]
        tmp_path: Path, settings: Settings, fake_index) -> None:
    """Before: a candidate was registered from searches nobody clicked, and its window was never read again."""
    from datetime import UTC, datetime, timedelta

    from online_learning.consumers.base import Delivered
    from online_learning.events import RANKINGS_TOPIC, RankingEvent, ShownItem
    from ranking.features import LtrFeaturizer

    home = settings.model_copy(update={"home": tmp_path})
    start = datetime(2026, 11, 1, tzinfo=UTC)
    shown = [ShownItem(product_id=fake_index.product_id(d), position=d + 1) for d in range(10)]
    ParquetLogSink(home.paths.event_log)([Delivered(RANKINGS_TOPIC, 0, i, RankingEvent(
        event_id=f"r{i}", request_id=f"r{i}", timestamp=start + timedelta(minutes=i), user_id=f"u{i % 5}",
        query="drill", pipeline="full", items=shown)) for i in range(20)])
    featurizer = LtrFeaturizer(fake_index, lambda text: np.ones(64), None, [])
    result = retrain(home, featurizer, None, RetrainConfig(min_searches=10, filter_traffic=False))
    assert result["status"] == "no engagement" and result["new_searches"] == 20
    assert ModelRegistry(home.paths.models).versions("ltr") == []


def test_a_home_without_an_event_log_is_told_and_fails_the_command(  # type: ignore[no-untyped-def]
        cli_home: Path, fake_index, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: "up to date" and exit 0 every night, so a wrong SHOPRANK_HOME or a sink that never ran went unseen."""
    import json
    from types import SimpleNamespace

    import serving.loading
    from core.settings import get_settings
    from ranking.features import LtrFeaturizer
    from tests.helpers import run_cli

    home = get_settings()
    featurizer = LtrFeaturizer(fake_index, lambda text: np.ones(64), None, [])
    result = retrain(home, featurizer, None, RetrainConfig())
    assert result["status"] == "no event log" and str(home.paths.event_log) in result["reason"]
    (home.paths.event_log / "rankings" / "date=2026-11-01").mkdir(parents=True)  # folders, no file: the same
    assert retrain(home, featurizer, None, RetrainConfig())["status"] == "no event log"
    engine = SimpleNamespace(featurizer=lambda extra: featurizer, ltr=None, hybrid=None)  # the served one
    monkeypatch.setattr(serving.loading, "open_engine", lambda settings, batch=False: engine)
    code, out, _ = run_cli(capsys, "retrain")
    assert code == 1 and json.loads(out)["status"] == "no event log"
    # a bad window is the command's error (2) whatever the log holds: before, "no event log" (1) hid it
    with pytest.raises(InvalidInput, match="is not before until"):
        retrain(home, featurizer, None, RetrainConfig(since="2026-12-01", until="2026-11-01"))
    code, _, err = run_cli(capsys, "retrain", "--since", "2026-12-01", "--until", "2026-11-01")
    assert code == 2 and "is not before until" in err


def test_a_home_without_an_event_log_is_told_before_the_engine_is_opened(  # type: ignore[no-untyped-def]
        cli_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `shoprank retrain` opened the served engine first, which in a home without an index (a mistyped
    SHOPRANK_HOME) builds a demo store and its index (about 100 MB), then said "no event log"."""
    import serving.loading
    from core.settings import get_settings
    from tests.helpers import run_cli

    opened: list[object] = []

    def open_engine(settings, batch=False):  # type: ignore[no-untyped-def]
        opened.append(settings.home)
        raise AssertionError("the engine was opened for a home without an event log")

    monkeypatch.setattr(serving.loading, "open_engine", open_engine)
    code, out, err = run_cli(capsys, "retrain")
    assert code == 1 and json.loads(out)["status"] == "no event log", err
    paths = get_settings().paths
    assert opened == [] and not paths.demo.exists() and not paths.indexes.exists()
    # a bad window is still the command's error (2), told before the log is
    code, _, err = run_cli(capsys, "retrain", "--since", "2026-12-01", "--until", "2026-11-01")
    assert code == 2 and "is not before until" in err and opened == []


@pytest.mark.parametrize(("retrain_exit", "warm_exit", "fails"), [(1, 0, True), (2, 0, True), (0, 1, True),
                                                                (0, 0, False)])
def test_the_documented_cron_line_fails_when_retrain_fails(tmp_path: Path, retrain_exit: int, warm_exit: int,
                                                           fails: bool) -> None:
    """docs/learning_loop.md's nightly line, run by sh as cron runs it, with a `shoprank` that exits as given. Before,
    `retrain; warm-scores` exited with warm-scores' status alone: a retrain's "no event log" (1) went unreported."""
    import re
    import subprocess

    docs = (Path(__file__).resolve().parents[2] / "docs" / "learning_loop.md").read_text()
    lines = [m.group(1) for m in re.finditer(r"^(?:\S+\s+){5}(cd .*shoprank retrain.*)$", docs, re.MULTILINE)]
    assert len(lines) == 1, lines
    fake = tmp_path / "srv" / ".venv" / "bin" / "shoprank"
    fake.parent.mkdir(parents=True)
    fake.write_text(f"""#!/bin/sh
echo "$*" >> {tmp_path}/ran
case " $* " in *" retrain "*) exit {retrain_exit};; *" warm-scores "*) exit {warm_exit};; esac
exit 3
""")
    fake.chmod(0o755)
    line = lines[0].replace("/srv/shoprank/artifacts", str(tmp_path / "home")).replace("/srv/shoprank",
                                                                                       str(tmp_path / "srv"))
    code = subprocess.run(["/bin/sh", "-c", line], timeout=30).returncode
    assert (code != 0) is fails, (line, code)
    ran = (tmp_path / "ran").read_text().splitlines()
    assert len(ran) == 2 and ran[0].startswith("retrain") and "warm-scores" in ran[1]  # warm-scores runs whatever


def test_searches_whose_products_left_the_index_are_counted_as_unusable(  # type: ignore[no-untyped-def]
        tmp_path: Path, settings: Settings, fake_index) -> None:
    """Before: the raw searches passed --min-searches, LightGBM got 0 rows, and the error blamed the traffic volume
    "since None"."""
    from datetime import UTC, datetime, timedelta

    from online_learning.consumers.base import Delivered
    from online_learning.events import (
        INTERACTIONS_TOPIC,
        RANKINGS_TOPIC,
        InteractionEvent,
        RankingEvent,
        ShownItem,
    )
    from ranking.features import LtrFeaturizer

    home = settings.model_copy(update={"home": tmp_path})
    start = datetime(2026, 11, 1, tzinfo=UTC)
    batch = []
    for i in range(30):  # one product still indexed in the first 10 searches, none in the others
        ids = [fake_index.product_id(i)] * (i < 10) + [f"GONE{d}" for d in range(9)]
        shown = [ShownItem(product_id=p, position=j + 1) for j, p in enumerate(ids)]
        batch.append(Delivered(RANKINGS_TOPIC, 0, len(batch), RankingEvent(
            event_id=f"r{i}", request_id=f"r{i}", timestamp=start + timedelta(minutes=i), user_id=f"u{i % 7}",
            query="drill", pipeline="full", items=shown)))
        batch.append(Delivered(INTERACTIONS_TOPIC, 0, len(batch), InteractionEvent(
            type="click", event_id=f"c{i}", request_id=f"r{i}", timestamp=start + timedelta(minutes=i, seconds=5),
            product_id=ids[0], position=1, user_id=f"u{i % 7}")))
    ParquetLogSink(home.paths.event_log)(batch)
    featurizer = LtrFeaturizer(fake_index, lambda text: np.ones(64), None, [])
    result = retrain(home, featurizer, None, RetrainConfig(min_searches=10, filter_traffic=False))
    assert result["status"] == "too few usable searches", result
    assert (result["usable_searches"], result["new_searches"]) == (0, 30)
    assert "0 of 30 logged searches show 2 or more products still in the index" in result["reason"]
    assert ModelRegistry(home.paths.models).versions("ltr") == []


def test_the_candidate_is_compared_on_searches_neither_its_training_nor_its_early_stopping_saw(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from online_learning.retrain import _fit_candidate
    from ranking.unbiased import ips_dcg

    rng = np.random.default_rng(0)
    x = rng.normal(size=(250, 2)).astype(np.float32)
    data = RankingData(x, (x[:, 0] > 0).astype(np.int32), [5] * 50, ["bm25", "dense"], [f"q{i}" for i in range(50)])
    shown: dict[str, list[str]] = {}
    fit = LambdaMART.fit_unbiased

    def spy(train: RankingData, valid: RankingData, *args, **kwargs):  # type: ignore[no-untyped-def]
        shown["train"], shown["valid"] = list(train.query_ids), list(valid.query_ids)
        return fit(train, valid, *args, **kwargs)

    monkeypatch.setattr(LambdaMART, "fit_unbiased", spy)
    even = SimpleNamespace(propensity=lambda positions: np.ones(len(positions)))
    active = ServedModel("ltr", "v1", LambdaMART.fit(data, data, LambdaMARTConfig(max_grade=1, max_rounds=3)))
    candidate, _, metrics = _fit_candidate(data, np.tile(np.arange(1, 6), 50), even, active, RetrainConfig())
    assert shown["train"] == data.query_ids[:32] and shown["valid"] == data.query_ids[32:40]  # in time order
    held = x[200:]  # the latest 10 searches: the comparison, which neither saw
    assert metrics["held_out_searches"] == 10 and metrics["train_searches"] == 32 and metrics["valid_searches"] == 8
    for key, model in (("held_out_ips_dcg@10", candidate), ("active_held_out_ips_dcg@10", active.model)):
        expected = ips_dcg([5] * 10, data.labels[200:], np.ones(50), model.predict(held))  # type: ignore[attr-defined]
        assert metrics[key] == round(expected, 4)


def test_the_filter_report_counts_only_the_windows_clicks_without_an_impression(tmp_path: Path) -> None:
    """Before, every click of the whole log outside the window, and every click on a sorted list or a listing,
    was reported as `no_impression` (a click on no logged list), a count that grew every night."""
    from datetime import UTC, datetime, timedelta

    import pandas as pd

    from online_learning.consumers.base import Delivered
    from online_learning.events import (
        INTERACTIONS_TOPIC,
        RANKINGS_TOPIC,
        InteractionEvent,
        RankingEvent,
        ShownItem,
    )
    from online_learning.retrain import impressions

    t0, batch = datetime(2026, 11, 1, tzinfo=UTC), []

    def click(request: str, when: datetime, n: int) -> None:
        batch.append(Delivered(INTERACTIONS_TOPIC, 0, len(batch), InteractionEvent(
            type="click", event_id=f"c-{request}", request_id=request, timestamp=when, user_id=f"u{n}",
            product_id="a", position=1)))

    def search(n: int, day: int, sort: str | None = None, pipeline: str = "full") -> None:
        request, when = f"r{day}-{n}", t0 + timedelta(days=day, minutes=n)
        batch.append(Delivered(RANKINGS_TOPIC, 0, len(batch), RankingEvent(
            event_id=request, request_id=request, timestamp=when, user_id=f"u{n}",
            query="drill" if pipeline == "full" else "", pipeline=pipeline, sort=sort,
            items=[ShownItem(product_id=p, position=i + 1) for i, p in enumerate("abc")])))
        click(request, when, n)

    for n in range(20):
        search(n, 0)  # last night's window, learnt then
    for n in range(20, 30):
        search(n, 1)  # tonight's
    for n in range(30, 35):
        search(n, 1, sort="price_asc")
    for n in range(35, 40):
        search(n, 1, pipeline="browse")
    click("r-none", t0 + timedelta(days=1, hours=2), 99)  # tonight, on a search no log holds
    ParquetLogSink(tmp_path / "log")(batch)
    shown, report = impressions(tmp_path / "log", pd.Timestamp(t0 + timedelta(days=1)) - pd.Timedelta(seconds=1),
                                None)
    assert shown["request_id"].nunique() == 10 and int(shown["clicked"].sum()) == 10
    assert report["excluded_interactions"] == {"no_impression": 1}, report


def test_the_retrain_judges_a_shoppers_volume_one_utc_day_at_a_time(tmp_path: Path) -> None:
    """A loyal shopper: 30 searches a day for 5 days, against max_searches 100. Before, a window of all five days
    (a first run, a catch-up, a --since backfill) judged the 150 together and dropped every one as
    `anomalous:volume`, while promote and guard kept them; a bot's 120 in one day still goes."""
    from online_learning.retrain import impressions
    from online_learning.traffic_filter import FilterConfig

    log_daily_searches(tmp_path / "log", [("loyal", day, 30) for day in range(5)] + [("bot", 2, 120)])
    shown, report = impressions(tmp_path / "log", None, None, FilterConfig(max_searches=100))
    kept = shown.drop_duplicates("request_id").groupby("user_id").size()
    assert kept.get("loyal") == 150 and "bot" not in kept, report
    assert report["anomalous_by_reason"] == {"volume": 1} and report["excluded_searches"] == 120
    assert report["anomalous"] == {}  # named by no one's id unless a keyed hash is given


def test_a_window_that_ends_within_a_day_judges_its_shoppers_on_the_whole_day(tmp_path: Path) -> None:
    """A bot's 120 searches on one day, a minute apart, against max_searches 100, read by two windows split at
    00:59:30: before, each window saw 60 and kept them all, while promote and guard (whole days) drop all 120."""
    import pandas as pd

    from online_learning.retrain import impressions
    from online_learning.traffic_filter import FilterConfig

    log_daily_searches(tmp_path / "log", [("bot", 0, 120), ("loyal", 0, 30)])
    split = pd.Timestamp("2026-11-01T00:59:30", tz="UTC")
    for since, until in ((None, split), (split, None)):
        shown, report = impressions(tmp_path / "log", since, until, FilterConfig(max_searches=100))
        kept = shown.drop_duplicates("request_id").groupby("user_id").size()
        assert "bot" not in kept and report["anomalous_by_reason"] == {"volume": 1}, (since, report)
        assert report["excluded_searches"] == 60  # the window's own: 60 of the bot's searches fall in each
    assert kept.get("loyal", 0) == 0 and len(impressions(tmp_path / "log", None, split, None)[0]) == 90 * 3


def test_a_window_the_filters_empty_says_so_with_their_report(tmp_path: Path, settings: Settings) -> None:
    """A storefront that sends one user id ("guest") for every visitor: 2,010 searches in a day, one anomalous
    shopper. Before: "up to date" with new_searches 0 and no filter report, as if nothing had been logged.
    The report (kept in a registered model's metrics, where an erasure does not reach) names the shopper by a
    keyed hash only; before, by its id in clear."""
    home = settings.model_copy(update={"home": tmp_path})
    log_daily_searches(home.paths.event_log, [("guest", 0, 2010)], seconds_apart=30)
    featurizer = None  # never read: each run ends before featurizing
    result = retrain(home, featurizer, None, RetrainConfig(min_searches=200))  # type: ignore[arg-type]
    assert result["status"] == "too few searches after the filters", result
    assert (result["new_searches"], result["logged_searches"]) == (0, 2010)
    assert result["filtered"]["anomalous_by_reason"] == {"volume": 1} and result["filtered"]["anomalous"] == {}
    assert result["filtered"]["excluded_searches"] == 2010 and "guest" not in json.dumps(result)
    erasures = ForgetList(home.paths.forgotten)
    erasures.add(["someone-else"], [], datetime.now(UTC))  # the list's key now exists
    named = retrain(home, featurizer, None, RetrainConfig(min_searches=200))  # type: ignore[arg-type]
    assert named["filtered"]["anomalous"] == {erasures.pseudonym("guest"): "volume"}, named
    assert "guest" not in json.dumps(named) and erasures.pseudonym("guest").startswith("shopper:")
    assert "traffic filters dropped 2010 of the window's 2010 logged searches" in result["reason"]
    # fewer logged than --min-searches: too few whatever the filters do, with what they dropped all the same
    few = retrain(home, featurizer, None, RetrainConfig(min_searches=3000))  # type: ignore[arg-type]
    assert few["status"] == "too few new searches" and few["logged_searches"] == 2010
    assert few["filtered"]["excluded_searches"] == 2010
    assert ModelRegistry(home.paths.models).versions("ltr") == []


def test_times_pandas_cannot_read_are_the_runs_error(tmp_path: Path, settings: Settings) -> None:
    """Before: a ValueError (an ISO week date, which Python reads) and an OutOfBoundsTimedelta, not InvalidInput."""
    home = settings.model_copy(update={"home": tmp_path})
    log_daily_searches(home.paths.event_log, [("u1", 0, 3)])
    with pytest.raises(InvalidInput, match="since '2026-W44-1' is not an ISO 8601 time"):
        retrain(home, None, None, RetrainConfig(since="2026-W44-1"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="settle_minutes=1000000000.0 .* at most 525600"):
        retrain(home, None, None, RetrainConfig(settle_minutes=1e9))  # type: ignore[arg-type]


def test_store_features_go_to_their_rows_when_a_searchs_rows_are_apart(  # type: ignore[no-untyped-def]
        fake_index) -> None:
    """One search logged as two ranking events (pages 1 and 2) with another search between them, in the time
    order impressions() returns. Before, the store features were sliced by a running offset, as if each search's
    rows were next to each other, and six of the nine rows got another product's."""
    import json

    import pandas as pd

    from online_learning.retrain import logged_ranking_data
    from ranking.features import LtrFeaturizer

    p = [fake_index.product_id(d) for d in range(9)]
    t0, rows = pd.Timestamp("2026-11-01T00:00:00Z"), []
    for request, minute, products, first in (("r1", 0, p[0:3], 1), ("r2", 1, p[3:6], 1), ("r1", 2, p[6:9], 4)):
        for j, product in enumerate(products):
            rows.append({"request_id": request, "timestamp": t0 + pd.Timedelta(minutes=minute), "query": "drill",
                         "user_id": "u1", "product_id": product, "position": first + j, "scores": json.dumps({}),
                         "engagement": int(j == 0)})
    shown = pd.DataFrame(rows)
    store = pd.DataFrame({"product_number": [float(p.index(row["product_id"])) for row in rows]})  # row by row
    featurizer = LtrFeaturizer(fake_index, lambda text: np.ones(64, dtype=np.float32), None, ["product_number"])
    data, _ = logged_ranking_data(featurizer, shown, store)
    assert data.query_ids == ["r1", "r2"] and data.groups == [6, 3]
    assert data.features[:, 0].tolist() == [0, 1, 2, 6, 7, 8, 3, 4, 5]  # each row its own product's
