"""The admin API in-process (TestClient) on the demo index with the hashing encoder (fast): changes made here
that the artifact store does not take, and experiments saved under earlier rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.routes import admin
from core.service_settings import ApiSettings
from core.settings import Settings
from tests.fakes import HashingEncoder
from tests.helpers import app_on, ready_client, register_ltr

AUTH = {"Authorization": "Bearer s3cret"}


@pytest.fixture()
def home(settings: Settings, tmp_path: Path) -> Settings:
    """A home of the test's own with the admin API on and two LambdaMART versions, v1 active."""
    home = settings.model_copy(update={"home": tmp_path / "home", "api": ApiSettings(admin_token="s3cret")})
    register_ltr(home.paths.models, tmp_path / "trained", 2)
    return home


@pytest.fixture()
def client(home: Settings, fake_index) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with ready_client(app_on(home, fake_index, HashingEncoder())) as client:
        yield client


def test_a_change_the_artifact_store_refuses_answers_503_saying_it_is_made_here(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def store_down(_: Settings) -> None:
        raise PermissionError("s3://bucket/shoprank: access denied")

    monkeypatch.setattr(admin, "push_state", store_down)
    activated = client.post("/v1/admin/models/ltr/activate", json={"version": "v2"}, headers=AUTH)
    assert activated.status_code == 503 and activated.json()["error"] == "not_published", activated.text
    message = activated.json()["message"]
    assert "ltr v2 is served here and active in the registry" in message and "access denied" in message
    assert "shoprank artifacts push --state-only" in message
    assert "Retry-After" not in activated.headers  # made: a repeated rollback would go one further back
    assert client.get("/v1/admin/models", headers=AUTH).json()["served"]["ltr"] == "v2"
    assert 'shoprank_model_swaps_total{action="activate",role="ltr"} 1.0' in client.get("/metrics").text

    rules = client.put("/v1/admin/rules", json={"hide": ["P1"]}, headers=AUTH)
    assert rules.status_code == 503 and "rules.yaml is saved and served here" in rules.json()["message"]
    assert client.get("/v1/admin/rules", headers=AUTH).json()["rules"]["hide"] == ["P1"]
    synonyms = client.put("/v1/admin/synonyms", json={"rules": ["drill, driver"]}, headers=AUTH)
    assert synonyms.status_code == 503 and "synonyms.txt is saved and served here" in synonyms.json()["message"]
    shadow = client.put("/v1/admin/experiment", json={"shadow": "v1"}, headers=AUTH)
    assert shadow.status_code == 503 and "experiment configuration" in shadow.json()["message"]
    assert client.get("/v1/admin/experiment", headers=AUTH).json()["shadow"] == "v1"


def test_an_experiment_saved_under_earlier_rules_is_shown_as_it_is_served(  # type: ignore[no-untyped-def]
        home: Settings, fake_index) -> None:
    saved = {"name": "old", "mode": "ab", "control": "control",  # an arm name and a weight refused today
             "arms": {"control": {"ltr": "v1", "weight": 1.0}, "new arm": {"ltr": "v2", "weight": 2e6}}}
    home.paths.experiment_config.parent.mkdir(parents=True, exist_ok=True)
    home.paths.experiment_config.write_text(json.dumps({"experiment": saved, "shadow": None}))
    with ready_client(app_on(home, fake_index, HashingEncoder())) as client:
        assert client.post("/v1/search", json={"query": "drill", "k": 3, "user_id": "u1"}).json()["arm"] == "new arm"
        shown = client.get("/v1/admin/experiment", headers=AUTH)
        assert shown.status_code == 200, shown.text
        assert shown.json()["experiment"] == saved


def test_an_arm_version_no_registry_can_hold_is_refused_naming_the_rule(client: TestClient) -> None:
    arms = {"control": {"ltr": "v1"}, "b": {"ltr": "v1234567"}}
    refused = client.put("/v1/admin/experiment", json={"experiment": {"name": "x", "arms": arms}}, headers=AUTH)
    assert refused.status_code == 422 and "{1,6}" in refused.json()["message"], refused.text
