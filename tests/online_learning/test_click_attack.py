"""A click attack end to end at a small size: a bot, then a swarm of 50, click an irrelevant
product for a query; the nightly retrain learns it without the traffic filters and not with them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from core.query import Query
from core.settings import Settings
from online_learning.consumers.base import Delivered
from online_learning.consumers.log_sink import ParquetLogSink
from online_learning.events import (
    INTERACTIONS_TOPIC,
    RANKINGS_TOPIC,
    InteractionEvent,
    RankingEvent,
    ShownItem,
)
from online_learning.retrain import RetrainConfig, retrain
from ranking.features import feature_names
from ranking.lambdamart import LambdaMART
from serving.engine import SearchEngine, assemble
from tests.helpers import demo_traffic

pytestmark = pytest.mark.slow
ATTACKED = "garden hose"


def logged(engine: SearchEngine, target: str, bots: int, searches: int = 600, attack: int = 300) -> list[Delivered]:
    """Honest demo-store traffic (one search per shopper), then bots clicking ``target``."""
    out = demo_traffic(engine, searches, users=searches)
    start = datetime(2026, 11, 1, tzinfo=UTC)

    def add(event: RankingEvent | InteractionEvent) -> None:
        out.append(Delivered(RANKINGS_TOPIC if isinstance(event, RankingEvent) else INTERACTIONS_TOPIC, 0, len(out),
                             event))

    for b in range(bots):
        for i in range(attack // bots):
            shown = [*engine.hybrid.search(ATTACKED, 9).product_ids, target]  # paged until the target shows
            request, when = f"b{b}-{i}", start + timedelta(minutes=i, seconds=b)
            add(RankingEvent(event_id=request, request_id=request, timestamp=when, user_id=f"bot{b}", query=ATTACKED,
                             pipeline="full", items=[ShownItem(product_id=p, position=j + 1) for j, p in enumerate(shown)]))
            add(InteractionEvent(type="click", event_id=f"bc{b}-{i}", request_id=request, timestamp=when,
                                 user_id=f"bot{b}", product_id=target, position=10))
    return out


def rank_under(settings: Settings, engine: SearchEngine, version: str, target: str) -> int:
    model = LambdaMART.load(settings.paths.models / "ltr" / version)
    first = engine.pipeline("hybrid")
    candidates = first.search(ATTACKED, 100)
    scores = model.predict(engine.featurizer(model.names)(first.analyze(Query(ATTACKED)), candidates))
    return [candidates.product_ids[i] for i in np.argsort(-scores, kind="stable")].index(target) + 1


@pytest.mark.parametrize("bots", [1, 50], ids=["one-bot", "swarm-of-50"])
def test_filters_keep_an_attacked_product_where_it_was(bots: int, tmp_path: Path, settings: Settings,  # type: ignore[no-untyped-def]
                                                       real_index, real_encoder) -> None:
    home = settings.model_copy(update={"home": tmp_path})
    engine = assemble(real_index, real_encoder, home)
    listed = engine.pipeline("hybrid").search(ATTACKED, 100).product_ids
    target = next(p for p in listed[50:] if "hose" not in real_index.title(real_index.doc_of(p)).lower())
    ParquetLogSink(home.paths.event_log)(logged(engine, target, bots))
    base = engine.featurizer(feature_names(["base"]))
    poisoned = retrain(home, base, None, RetrainConfig(min_searches=100, filter_traffic=False))
    cleaned = retrain(home, base, None, RetrainConfig(min_searches=100, since="2026-01-01T00:00:00+00:00"))
    assert rank_under(home, engine, poisoned["version"], target) <= 10  # the attack works without the filters
    assert rank_under(home, engine, cleaned["version"], target) > 40  # and not with them
    reasons = cleaned["filtered"]["excluded_interactions"]
    assert reasons.get("repeat", 0) + reasons.get("anomalous:pair", 0) >= 150


def test_the_benchmark_retrains_with_the_served_first_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/click_attack.py retrains as ``shoprank retrain`` does: a model reading the first
    stage's ranks is retrained on ranks rebuilt by the served first stage (without it: 'skipped')."""
    from types import SimpleNamespace

    import benchmarks.click_attack as click_attack
    from core.registry import ServedModel

    names = feature_names(["base", "ranks", "relevance"])
    engine = SimpleNamespace(featurizer=lambda extra: SimpleNamespace(names=names), hybrid=object(),
                             ltr=ServedModel("ltr", "v1", SimpleNamespace(names=names)))
    given = []

    def fake_retrain(settings, featurizer, active, config, first_stage=None):  # type: ignore[no-untyped-def]
        given.append(first_stage)
        return {"status": "registered"}

    monkeypatch.setattr(click_attack, "retrain", fake_retrain)
    for folder in ("models", "features"):
        (tmp_path / "base" / folder).mkdir(parents=True)
    click_attack.retrain_on("one_bot", [], tmp_path, SimpleNamespace(dataset=tmp_path), engine, [True])
    assert given == [engine.hybrid]
