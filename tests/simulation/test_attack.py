"""The SIMULATED click attack through the real API (in-process): bots search, page and click."""

from __future__ import annotations

import itertools
import json

import httpx

from core.settings import Settings
from simulation.attack import ClickAttack
from tests.helpers import app_on, ready_client, share_cache


def test_bots_click_the_product_where_it_shows(tmp_path, settings: Settings, real_index, real_encoder) -> None:  # type: ignore[no-untyped-def]
    home = settings.model_copy(update={"home": share_cache(tmp_path, settings)})
    app = app_on(home, real_index, real_encoder)
    with ready_client(app) as client:
        listed = client.post("/v1/search", json={"query": "garden hose", "k": 100}).json()["items"]
        target = listed[40]["product_id"]
        attack = ClickAttack(target, ["garden hose"], bots=2, searches=6)
        for number in range(attack.searches):
            attack.search(client, "http://testserver", number)
    report = attack.report()
    assert report["searches"] == 6 and report["shown_share"] == 1.0 and report["median_rank_when_shown"] == 41
    logged = [json.loads(line)["value"] for p in (tmp_path / "event_spool").rglob("segment-*.jsonl")
              for line in p.read_text().splitlines()]
    clicks = [e for e in logged if e.get("type") == "click"]
    assert len(clicks) == 6 and {c["user_id"] for c in clicks} == {"bot-0", "bot-1"}
    assert all(c["product_id"] == target and c["position"] == 41 for c in clicks)


def test_another_run_clicks_under_new_event_ids() -> None:
    """Each click's event id names its search, so a second attack run (a second day) is not taken for retries
    of the first by the event log's de-duplication (before: `attack-{number}` in every run)."""
    posted: list[dict] = []  # type: ignore[type-arg]
    requests = itertools.count()

    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events":
            posted.extend(json.loads(request.content))
            return httpx.Response(202, json={})
        return httpx.Response(200, json={"request_id": f"req-{next(requests)}", "items": [{"product_id": "P1"}]})

    with httpx.Client(transport=httpx.MockTransport(serve)) as client:
        for _ in range(2):
            attack = ClickAttack("P1", ["garden hose"], bots=3, searches=5)
            for number in range(attack.searches):
                attack.search(client, "http://shop", number)
    assert len(posted) == 10 and len({click["event_id"] for click in posted}) == 10
    assert all(click["request_id"] in click["event_id"] for click in posted)
