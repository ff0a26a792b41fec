"""API keys: stored hashed, scopes and stores enforced, revocation, per-key rate limits (429)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from api.auth import RateLimiter
from core.errors import TooManyRequests
from core.keys import KeyStore
from core.service_settings import ApiSettings
from core.settings import Settings
from shoprank.cli import main
from tests.helpers import app_on, ready_client, share_cache


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, settings: Settings, real_index, real_encoder):  # type: ignore[no-untyped-def]
    home = share_cache(tmp_path_factory.mktemp("keyed"), settings)
    keyed = settings.model_copy(update={"home": home, "api": ApiSettings(keys_required=True, rate_limit_per_s=1.0,
                                                                         rate_burst=3)})
    store = KeyStore(keyed.paths.keys)
    keys = {"search": store.create("default", ["search"], "storefront")[1],
            "events": store.create("default", ["events"])[1],
            "admin": store.create("default", ["admin"])[1],
            "other": store.create("other-store", ["search", "events"])[1]}
    app = app_on(keyed, real_index, real_encoder)
    with ready_client(app) as client:
        yield client, keys, store


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_stored_hashed(keyed) -> None:  # type: ignore[no-untyped-def]
    _, keys, store = keyed
    text = store.path.read_text()
    assert all(key not in text for key in keys.values()) and store.path.stat().st_mode & 0o077 == 0
    assert len(store.keys()) == 4 and all(len(k.digest) == 64 for k in store.keys())


def test_missing_unknown_wrong_scope_other_store(keyed) -> None:  # type: ignore[no-untyped-def]
    client, keys, _ = keyed
    body = {"query": "drill", "k": 2}
    missing = client.post("/v1/search", json=body)
    assert missing.status_code == 401 and "needs a key" in missing.json()["message"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"  # the scheme to answer with, as every 401 names one
    forged = client.post("/v1/search", json=body, headers=auth(keys["search"][:-4] + "AAAA"))
    assert forged.status_code == 401 and "unknown or revoked" in forged.json()["message"]
    wrong_scope = client.post("/v1/search", json=body, headers=auth(keys["events"]))
    assert wrong_scope.status_code == 403 and "needs 'search'" in wrong_scope.json()["message"]
    other = client.post("/v1/search", json=body, headers={"X-API-Key": keys["other"]})
    assert other.status_code == 403 and "'other-store', not 'default'" in other.json()["message"]
    assert client.post("/v1/search", json=body, headers={"X-API-Key": keys["search"]}).status_code == 200
    lower = {"Authorization": f"bearer {keys['search']}"}  # HTTP's schemes are case-insensitive
    assert client.post("/v1/search", json=body, headers=lower).status_code == 200
    basic = client.post("/v1/search", json=body, headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert basic.status_code == 401 and "scheme 'Basic' is not supported" in basic.json()["message"]
    admin = client.get("/v1/admin/models", headers=auth(keys["admin"]))
    assert admin.status_code == 200 and client.get("/v1/admin/models", headers=auth(keys["search"])).status_code == 403
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200


def test_events_over_the_limit_are_refused_with_retry_after_and_revoked_keys_stop(keyed) -> None:  # type: ignore[no-untyped-def]
    client, keys, store = keyed
    event = {"type": "click", "event_id": "k-1", "request_id": "r-1", "product_id": "P1", "position": 1}
    answers = [client.post("/v1/events", json=[{**event, "event_id": f"k-{i}"}], headers=auth(keys["events"]))
               for i in range(6)]
    codes = [a.status_code for a in answers]
    assert codes[:3] == [202, 202, 202] and 429 in codes[3:]  # burst 3, then 1 per second
    refused = answers[codes.index(429)]
    assert int(refused.headers["Retry-After"]) >= 1 and "over its limit" in refused.json()["message"]
    key_id = next(k.id for k in store.keys() if k.name == "storefront")
    assert main(["--home", str(store.path.parent), "keys", "revoke", key_id]) == 0
    revoked = client.post("/v1/search", json={"query": "drill"}, headers=auth(keys["search"]))
    assert revoked.status_code == 401


def test_rate_limiter_refills_at_its_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=2)
    limiter.take("a", now=0.0)
    limiter.take("a", now=0.0)
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("a", now=0.1)
    assert refused.value.retry_after == pytest.approx(0.4)  # 0.2 tokens saved: 0.8 more at 2/s
    limiter.take("a", now=0.6)  # 0.2 + 0.5 s x 2/s = 1.2 tokens
    limiter.take("b", now=0.6)  # buckets are per key


def test_cli_creates_lists_and_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "keys", "create", "--scope", "search", "--scope", "events",
                 "--name", "web"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith("sr_") and created["scopes"] == ["search", "events"]
    assert KeyStore(tmp_path / "keys.json").verify(created["key"]).name == "web"
    assert main(["--home", str(tmp_path), "keys", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["id"] for k in listed] == [created["id"]] and "digest" not in listed[0] and "key" not in listed[0]
    assert main(["--home", str(tmp_path), "keys", "create", "--scope", "search", "--store", "no spaces"]) == 2
    assert "is not a valid store name" in capsys.readouterr().err
    assert main(["--home", str(tmp_path), "keys", "create", "--scope", "search", "--store", "gardn"]) == 2
    assert "'gardn' is not a store of this home; its stores are ['default']" in capsys.readouterr().err
    assert main(["--home", str(tmp_path), "--store", "default", "keys", "list"]) == 2  # the default store's name
    assert "is the default store's name" in capsys.readouterr().err
    assert main(["--home", str(tmp_path), "keys", "revoke", "nope"]) == 2


def test_cli_pushes_keys_made_or_revoked_to_the_artifact_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from core.artifacts import ArtifactStore
    from core.settings import get_settings

    def keys(*args: str, url: str = f"file://{tmp_path / 'store'}") -> int:
        monkeypatch.setenv("SHOPRANK_ARTIFACTS_URL", url)
        get_settings.cache_clear()
        try:
            return main(["--home", str(tmp_path / "ops"), "keys", *args])
        finally:
            get_settings.cache_clear()

    replica = tmp_path / "replica"
    replica.mkdir()
    assert keys("create", "--scope", "search") == 0
    created = json.loads(capsys.readouterr().out)
    ArtifactStore(f"file://{tmp_path / 'store'}", replica).pull()
    assert KeyStore(replica / "keys.json").verify(created["key"]) is not None
    assert keys("revoke", created["id"]) == 0
    ArtifactStore(f"file://{tmp_path / 'store'}", replica).pull()  # a replica's next poll
    assert KeyStore(replica / "keys.json").verify(created["key"]) is None
    (tmp_path / "not-a-folder").write_text("")  # a store that cannot be written: the CLI says the push failed
    assert keys("create", "--scope", "events", url=f"file://{tmp_path / 'not-a-folder'}") == 2
    assert "was created in" in capsys.readouterr().err and len(KeyStore(tmp_path / "ops" / "keys.json").keys()) == 2


def test_a_key_file_that_cannot_be_read_is_a_503_naming_it(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app

    def broken(settings: Settings, previous: object) -> object:  # events and keys need no index
        raise RuntimeError("no index here")

    served = Settings(home=tmp_path, progress=False, api=ApiSettings(keys_required=True))
    _, key = KeyStore(served.paths.keys).create("default", ["events"])
    good = served.paths.keys.read_text()
    event = [{"type": "click", "event_id": "f-1", "request_id": "r-1", "product_id": "P1"}]
    with TestClient(create_app(served, loader=broken)) as client:
        for text, what in [(good[:-5], "it is not JSON"), ("", "it is empty"), ('{"keys": []}', "not a list of keys"),
                           ('[{"id": "abc"}]', "entry 0 lacks ['name', 'store'")]:
            served.paths.keys.write_text(text)
            answer = client.post("/v1/events", json=event, headers=auth(key))  # before: a 500
            message = answer.json()["message"]
            assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1, (text, message)
            assert str(served.paths.keys) in message and what in message, message
        served.paths.keys.unlink()
        served.paths.keys.symlink_to(served.paths.keys)  # a file no read gets through (as root's 0600 is to others)
        answer = client.post("/v1/events", json=event, headers=auth(key))  # before: a 500
        assert answer.status_code == 503 and str(served.paths.keys) in answer.json()["message"], answer.text
        served.paths.keys.unlink()
        served.paths.keys.mkdir()  # what a container mounts where its file is missing
        answer = client.post("/v1/events", json=event, headers=auth(key))  # before: 401, "unknown or revoked"
        assert answer.status_code == 503 and str(served.paths.keys) in answer.json()["message"], answer.text
        served.paths.keys.rmdir()
        newer = [{**record, "expires": None} for record in json.loads(good)]  # a field a newer version added
        served.paths.keys.write_text(json.dumps(newer))
        assert client.post("/v1/events", json=event, headers=auth(key)).status_code == 202
    served.paths.keys.write_text("[")
    assert main(["--home", str(tmp_path), "keys", "list"]) == 2  # before: a traceback
    error = capsys.readouterr().err
    assert error.startswith("error: the key file") and error.count("\n") == 1


def test_events_and_impressions_carry_the_key_that_sent_them(keyed) -> None:  # type: ignore[no-untyped-def]
    client, keys, store = keyed
    time.sleep(1.1)  # refill the events key's bucket
    forged = {"type": "click", "event_id": "kid-1", "request_id": "r-1", "product_id": "P1", "key_id": "someone"}
    assert client.post("/v1/events", json=[forged], headers=auth(keys["events"])).status_code == 202
    time.sleep(1.1)
    valued = client.post("/v1/events", json=[{**forged, "event_id": "kid-2", "revenue": 5},
                                             {**forged, "event_id": "kid-3", "type": "add_to_cart", "revenue": 2},
                                             {**forged, "event_id": "kid-4", "position": 0, "revenue": 1}],
                         headers=auth(keys["events"]))
    message = valued.json()["message"]  # every bad event named at once (before: the first revenue alone)
    assert valued.status_code == 422 and "0.revenue: 5.0 is a purchase's value; a click has none" in message
    assert "1.revenue: 2.0 is a purchase's value; a add_to_cart has none" in message and "2.position" in message
    assert "2.revenue" in message  # with another bad field of the same event
    events_id = next(k.id for k in store.keys() if k.scopes == ("events",))
    home = store.path.parent
    logged = [json.loads(line)["value"] for p in sorted((home / "event_spool").rglob("segment-*.jsonl"))
              for line in p.read_text().splitlines()]
    mine = [e for e in logged if e.get("event_id") == "kid-1"]
    assert mine and all(e["key_id"] == events_id for e in mine)  # the sent value is replaced
    assert any(e.get("type") == "ranking" and e.get("key_id") for e in logged)
