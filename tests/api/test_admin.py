"""The admin API in-process (TestClient) on the demo index with the hashing encoder (fast): changes made here
that the artifact store does not take, and experiments saved under earlier rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.routes import admin
from core.errors import Conflict, InvalidInput, ShopRankError
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


def test_a_change_the_artifact_store_refuses_answers_502_saying_it_is_made_here(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """502, not 503: the bundled HAProxy sends a 503 to another replica, which made the change again (a rollback
    went one more version back on each)."""
    def store_down(_: Settings) -> None:
        raise PermissionError("s3://bucket/shoprank: access denied")

    monkeypatch.setattr(admin, "push_state", store_down)
    activated = client.post("/v1/admin/models/ltr/activate", json={"version": "v2"}, headers=AUTH)
    assert activated.status_code == 502 and activated.json()["error"] == "not_published", activated.text
    message = activated.json()["message"]
    assert "ltr v2 is served here and active in the registry" in message and "access denied" in message
    assert "shoprank artifacts push --state-only" in message
    assert "Retry-After" not in activated.headers  # made: a repeated rollback would go one further back
    assert client.get("/v1/admin/models", headers=AUTH).json()["served"]["ltr"] == "v2"
    assert 'shoprank_model_swaps_total{action="activate",role="ltr"} 1.0' in client.get("/metrics").text

    rules = client.put("/v1/admin/rules", json={"hide": ["P1"]}, headers=AUTH)
    assert rules.status_code == 502 and "rules.yaml is saved and served here" in rules.json()["message"]
    assert client.get("/v1/admin/rules", headers=AUTH).json()["rules"]["hide"] == ["P1"]
    synonyms = client.put("/v1/admin/synonyms", json={"rules": ["drill, driver"]}, headers=AUTH)
    assert synonyms.status_code == 502 and "synonyms.txt is saved and served here" in synonyms.json()["message"]
    shadow = client.put("/v1/admin/experiment", json={"shadow": "v1"}, headers=AUTH)
    assert shadow.status_code == 502 and "experiment configuration" in shadow.json()["message"]
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


@pytest.mark.parametrize(("refusal", "status"), [
    (Conflict("the store s3://bucket/shoprank already holds models/ltr/v2 with other files: delete this home's "
              "version, pull, then register this model again"), 409),
    (InvalidInput("artifact store URL 'nope://x' cannot be opened"), 422)])
def test_a_push_the_store_refuses_for_what_it_holds_answers_its_own_advice(
        client: TestClient, monkeypatch: pytest.MonkeyPatch, refusal: ShopRankError, status: int) -> None:
    """Before: any refusal read 503 "run `shoprank artifacts push --state-only`", which a version clash refuses the
    same way."""
    def refuse(_: Settings) -> None:
        raise refusal

    monkeypatch.setattr(admin, "push_state", refuse)
    activated = client.post("/v1/admin/models/ltr/activate", json={"version": "v2"}, headers=AUTH)
    assert activated.status_code == status, activated.text
    message = activated.json()["message"]
    assert message.startswith("ltr v2 is served here and active in the registry") and refusal.message in message
    assert "--state-only" not in message and "do not repeat the call" in message
    assert client.get("/v1/admin/models", headers=AUTH).json()["served"]["ltr"] == "v2"


def test_the_served_experiment_sent_back_unchanged_keeps_the_rules_it_was_saved_under(  # type: ignore[no-untyped-def]
        home: Settings, fake_index) -> None:
    """Before: GET showed it, and a PUT of the same experiment with only the shadow changed answered 422."""
    saved = {"name": "old", "mode": "ab", "control": "control",  # an arm name and a weight refused today
             "arms": {"control": {"ltr": "v1", "weight": 1.0}, "interleaved": {"ltr": "v2", "weight": 1e-7}}}
    home.paths.experiment_config.parent.mkdir(parents=True, exist_ok=True)
    home.paths.experiment_config.write_text(json.dumps({"experiment": saved, "shadow": None}))
    with ready_client(app_on(home, fake_index, HashingEncoder())) as client:
        shown = client.get("/v1/admin/experiment", headers=AUTH).json()["experiment"]
        kept = client.put("/v1/admin/experiment", json={"experiment": shown, "shadow": "v2"}, headers=AUTH)
        assert kept.status_code == 200, kept.text
        assert kept.json()["experiment"] == saved and kept.json()["shadow"] == "v2"
        assert json.loads(home.paths.experiment_config.read_text())["experiment"] == saved

        changed = client.put("/v1/admin/experiment", json={"experiment": {**shown, "name": "new"}}, headers=AUTH)
        assert changed.status_code == 422 and changed.json()["error"] == "invalid_request", changed.text
        assert changed.json()["message"].startswith("experiment.arms.interleaved.weight: weight 1e-07"), changed.text
        heavier = {**shown, "arms": {"control": {"ltr": "v1", "weight": 1.0}, "interleaved": {"ltr": "v2"}}}
        refused = client.put("/v1/admin/experiment", json={"experiment": heavier}, headers=AUTH)
        assert refused.status_code == 422 and "'interleaved' is reserved" in refused.json()["message"], refused.text
        # the same arms in another order move shoppers between them (assign() walks them in order): a new one
        swapped = {**shown, "arms": dict(reversed(list(shown["arms"].items())))}
        reordered = client.put("/v1/admin/experiment", json={"experiment": swapped}, headers=AUTH)
        assert reordered.status_code == 422, reordered.text
        assert client.get("/v1/admin/experiment", headers=AUTH).json() | {"shadow_scored": 0} == {
            "experiment": saved, "shadow": "v2", "shadow_scored": 0, "shadow_dropped": 0}
    spec = client.app.openapi()  # type: ignore[attr-defined]
    body = spec["paths"]["/v1/admin/experiment"]["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/ExperimentConfig")  # the body is documented as before


def test_a_lambdamart_trained_on_another_encoders_lists_is_served_with_a_warning(
        home: Settings, client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    served = client.get("/v1/admin/models", headers=AUTH).json()
    assert served["warnings"] == []  # v1 and v2 do not say what they were trained on
    encoder = served["served"]["encoder"]
    same, other = (register_ltr(home.paths.models, tmp_path / name, 1, params={"served_models": {"encoder": e}})[0]
                   for name, e in (("same", encoder), ("other", "biencoder:v9")))
    assert client.post("/v1/admin/models/ltr/activate", json={"version": same}, headers=AUTH).json()["warnings"] == []
    activated = client.post("/v1/admin/models/ltr/activate", json={"version": other}, headers=AUTH)
    assert activated.status_code == 200 and activated.json()["served"]["ltr"] == other  # it serves, with a warning
    assert activated.json()["warnings"] == [f"ltr {other} was trained with encoder biencoder:v9; this server serves "
                                            f"{encoder}"]
    assert f"ltr {other} was trained with encoder biencoder:v9" in caplog.text and "retrain it" in caplog.text


def test_an_experiment_keeps_its_split_under_its_name(client: TestClient) -> None:
    """A ramp from 9:1 to 1:1 under the same name moved a fifth of the shoppers into the other arm: the
    decision pooled the searches before and after, read a sample-ratio mismatch and never decided. Such a
    change is refused; a new name starts it anew, and what keeps every shopper in place goes through."""
    def arms(control: float, treatment: float, version: str = "v2") -> dict:
        return {"control": {"ltr": "v1", "weight": control}, "treatment": {"ltr": version, "weight": treatment}}

    def put(name: str, split: dict):  # type: ignore[no-untyped-def]
        return client.put("/v1/admin/experiment", json={"experiment": {"name": name, "arms": split}}, headers=AUTH)

    assert put("ramp", arms(9, 1)).status_code == 200
    ramped = put("ramp", arms(1, 1))
    assert ramped.status_code == 409 and "runs with the split control 0.9, treatment 0.1" in ramped.json()["message"]
    assert "start it under a new name (e.g. ramp-2)" in ramped.json()["message"]
    assert put("ramp", arms(18, 2)).status_code == 200  # the same shares
    assert put("ramp", arms(9, 1, "v1")).status_code == 200  # another version in an arm: nobody moves
    assert put("ramp-2", arms(1, 1)).status_code == 200
    assert client.get("/v1/admin/experiment", headers=AUTH).json()["experiment"]["name"] == "ramp-2"


def test_an_experiment_that_cannot_be_written_is_a_409_and_changes_nothing(client: TestClient,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import api.routes.admin as admin

    before = client.get("/v1/admin/experiment", headers=AUTH).json()

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(admin, "save_router_config", full)
    arms = {"control": {"ltr": "v1", "weight": 1}, "treatment": {"ltr": "v2", "weight": 1}}
    refused = client.put("/v1/admin/experiment", json={"experiment": {"name": "full-disk", "arms": arms}},
                         headers=AUTH)
    assert refused.status_code == 409 and "(No space left on device): the experiment is not changed" in \
        refused.json()["message"], refused.text
    assert client.get("/v1/admin/experiment", headers=AUTH).json() == before


def caller_gone_while_the_reload_fails(client: TestClient, call, undone) -> None:  # type: ignore[no-untyped-def]
    """Start the admin coroutine ``call(request, holder)``, cancel it (a client that hung up) while the served unit
    reloads, then let the reload fail; wait until ``undone()`` (at most 2 s)."""
    import asyncio
    import threading
    from types import SimpleNamespace

    holder = client.app.state.stores[client.app.state.default_store].holder  # type: ignore[attr-defined]
    release = threading.Event()

    def broken_reload():  # type: ignore[no-untyped-def]
        release.wait(5)
        raise RuntimeError("the new state does not load here")

    async def scenario() -> None:
        task = asyncio.ensure_future(call(SimpleNamespace(app=client.app), holder))
        await asyncio.sleep(0.1)
        task.cancel()  # the caller is gone
        release.set()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if undone():
                break

    real = holder.reload
    holder.reload = broken_reload
    try:
        asyncio.run(scenario())
    finally:
        holder.reload = real


def test_an_activation_whose_caller_is_gone_is_still_undone_when_it_cannot_be_served(
        client: TestClient, home: Settings) -> None:
    """The request cancelled while the served unit reloads: the reload goes on, and when it fails, the registry
    goes back, as if the caller had waited."""
    from core.registry import ModelRegistry

    registry = ModelRegistry(home.paths.models)
    before = registry.state("ltr")
    assert registry.active_version("ltr") == "v1"
    registry.activate("ltr", "v2")
    caller_gone_while_the_reload_fails(
        client, lambda request, holder: admin._swap_or_undo(request, holder, home, "ltr", before, "activate"),
        lambda: registry.active_version("ltr") == "v1")
    assert ModelRegistry(home.paths.models).active_version("ltr") == "v1"


def test_a_rules_change_whose_caller_is_gone_is_still_put_back_when_it_cannot_be_served(
        client: TestClient, home: Settings) -> None:
    path = home.paths.base / "rules.yaml"
    path.write_text("hide: [P1]\n")
    caller_gone_while_the_reload_fails(
        client, lambda request, holder: admin._replace_file(request, holder, home, path, "hide: [P2]\n"),
        lambda: path.read_text() == "hide: [P1]\n")
    assert path.read_text() == "hide: [P1]\n"  # put back: the call changed nothing


def test_the_rules_are_shown_as_saved_while_this_process_still_serves_the_earlier_ones(
        client: TestClient, home: Settings) -> None:
    from serving.engine import rules_path

    path = rules_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("hide: [P1]\n")  # as another server process's PUT saves them
    shown = client.get("/v1/admin/rules", headers=AUTH).json()
    assert shown["rules"]["hide"] == ["P1"] and shown["path"] == str(path)
    path.write_text("hide: [P1\n")  # a hand edit that is no YAML: the rules served, and why
    broken = client.get("/v1/admin/rules", headers=AUTH)
    assert broken.status_code == 200 and broken.json()["rules"]["hide"] == [], broken.text
    assert "not YAML" in broken.json()["file_error"] and str(path) in broken.json()["file_error"]
