"""Property-based fuzzing of the OpenAPI spec (schemathesis): never a 5xx, and every
4xx body names what was wrong."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

from core.keys import KeyStore
from core.service_settings import ApiSettings
from core.settings import Settings
from tests.helpers import app_on, ready_client, share_cache

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=[False, True], ids=["open", "keys-required"])
def fuzz_client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, settings: Settings,  # type: ignore[no-untyped-def]
                real_index, real_encoder):
    """The API as `make run` serves it, and with API keys required (a valid key sent unless a
    fuzzed case sends its own credentials)."""
    home = share_cache(tmp_path_factory.mktemp("fuzz"), settings)
    fuzz_settings = settings.model_copy(update={"home": home, "api": ApiSettings(admin_token="t",
                                                                                 keys_required=request.param)})
    headers = {}
    if request.param:
        headers["X-API-Key"] = KeyStore(fuzz_settings.paths.keys).create("default", ["search", "events", "admin"])[1]
    app = app_on(fuzz_settings, real_index, real_encoder)
    with ready_client(app, raise_server_exceptions=False, headers=headers) as client:
        yield client


def test_no_server_errors_and_clear_client_errors(fuzz_client: TestClient) -> None:
    """Every operation of the OpenAPI spec, fuzzed with schema-valid and invalid inputs."""
    schema = schemathesis.openapi.from_dict(fuzz_client.get("/openapi.json").json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    seen: dict[int, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:  # type: ignore[no-untyped-def]
            kwargs = case.as_transport_kwargs(base_url="http://testserver")
            response = fuzz_client.request(**{k: v for k, v in kwargs.items()
                                              if k in ("method", "url", "headers", "params", "json", "content")})
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
            if 400 <= response.status_code < 500 and "json" in response.headers.get("content-type", ""):
                body = response.json()
                assert body.get("message") or body.get("detail"), body

        check()
    assert sum(seen.values()) > 100 and any(400 <= code < 500 for code in seen)


def test_oversize_empty_and_wrong_type_inputs(fuzz_client: TestClient) -> None:
    cases = [
        ({"query": "x" * 5000}, "query"), ({"query": ""}, "query"), ({"query": 42}, "query"),
        ({"query": "drill", "k": "many"}, "k"), ({"query": "drill", "offset": -1}, "offset"),
        ({"query": "drill", "filters": {"min_price": 10, "max_price": 1}}, "filters"),
        ({"query": "drill", "user_id": "u" * 500}, "user_id"),
    ]
    for payload, field in cases:
        response = fuzz_client.post("/v1/search", json=payload)
        assert response.status_code == 422, payload
        assert response.json()["message"].startswith(field), response.json()["message"]
    assert fuzz_client.post("/v1/search", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert fuzz_client.post("/v1/events", json=[{"event_id": "e", "request_id": "r", "type": "click"}]).status_code == 422
    too_many = [{"event_id": f"e{i}", "request_id": "r", "type": "click", "product_id": "p"} for i in range(1001)]
    assert fuzz_client.post("/v1/events", json=too_many).status_code == 422
    lost = fuzz_client.get("/v1/nothing")  # a path or a method no route takes: the same JSON shape as every error
    assert lost.status_code == 404 and lost.json()["error"] == "not_found" and "/v1/nothing" in lost.json()["message"]
    wrong = fuzz_client.delete("/v1/search")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
    assert "it takes GET, POST" in wrong.json()["message"] and wrong.headers["allow"] == "GET, POST"
