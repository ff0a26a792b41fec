"""The HTTP API in-process (TestClient) over the real demo index and encoder."""

from __future__ import annotations

import json
import os
import time

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings
from serving.loading import Served, served_precision
from tests.helpers import app_on, ready_client


@pytest.fixture(scope="module")
def client(settings: Settings, real_index, real_encoder):  # type: ignore[no-untyped-def]
    app = app_on(settings, real_index, real_encoder)
    with ready_client(app) as client:
        yield client


def test_search_returns_hybrid_results_with_request_id(client: TestClient) -> None:
    response = client.post("/v1/search", json={"query": "  cordless drill ", "k": 5, "user_id": "u1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "cordless drill" and body["k"] == 5 and len(body["items"]) == 5
    assert len(body["request_id"]) == 32 and response.headers["x-request-id"] == body["request_id"]
    top = body["items"][0]
    assert "drill" in top["title"].lower()
    assert set(top["scores"]) >= {"rrf"} and top["ranks"]["rrf"] == 1
    assert [i["rank"] for i in body["items"]] == [1, 2, 3, 4, 5]
    assert body["index"]["products"] == 300


def test_get_search_and_given_request_id(client: TestClient) -> None:
    response = client.get("/v1/search", params={"q": "garden hose", "k": 3}, headers={"x-request-id": "abc-1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "abc-1" and response.json()["request_id"].startswith("abc-1.")
    assert any("hose" in i["title"].lower() for i in response.json()["items"])
    # one X-Request-ID on several searches (a page's trace id): each logged search keeps an id of its own
    again = client.get("/v1/search", params={"q": "garden hose", "k": 3}, headers={"x-request-id": "abc-1"})
    assert again.json()["request_id"].startswith("abc-1.") and again.json()["request_id"] != response.json()[
        "request_id"]


@pytest.mark.parametrize(("path", "raw", "named"), [
    ("/v1/search", '{"query": "drill", "filters": {"min_price": NaN}}', "filters.min_price: Input should be a finite"),
    ("/v1/browse", '{"filters": {"max_price": Infinity}}', "filters.max_price: Input should be a finite number"),
    ("/v1/browse", '{"k": NaN}', "k: Input should be a valid integer (got nan)"),  # a count: an integer
    ("/v1/search", '{"query": "drill \\ud800"}', "\\ud800 at byte 17 is half of a UTF-16 surrogate pair"),
    ("/v1/search", '{"query": "drill", "sort": "\\udc00"}', "half of a UTF-16 surrogate pair"),
    ("/v1/events", '[{"type": "purchase", "event_id": "e", "request_id": "r", "product_id": "P1", "revenue": NaN}]',
     "0.revenue: Input should be a finite number (got nan)"),
    ("/v1/events", '[{"type": "click", "event_id": "e", "request_id": "r", "product_id": "P1", '
                   '"timestamp": "0001-01-01T00:00:00+14:00"}]', "0001-01-01T00:00:00+14:00 is out of range"),
    ("/v1/search", '{"query": "drill", "k": 5,}', "body: not valid JSON at character 26: Expecting property name"),
    # an escaped backslash, then the text "ud800": no escape (before: it hid the lone \udc00 after it, a 500)
    ("/v1/search", r'{"query": "drill \\ud800\udc00"}', "\\udc00 at byte 24 is half of a UTF-16 surrogate pair"),
    ("/v1/events", r'[{"type": "click", "event_id": "e", "request_id": "r", "product_id": "P1", "user_id": '
                   r'"u\\ud800\udc00"}]', "\\udc00 at byte 95 is half"),
    # bodies the JSON reader gives up on (before: a 400 "There was an error parsing the body")
    ("/v1/search", b'{"query": "dr\xffill"}', "body: byte 13 (0xff) is not valid UTF-8 (invalid start byte)"),
    # after a byte-order mark the reader counts from the mark's end: the byte named is still the body's own
    ("/v1/search", b'\xef\xbb\xbf{"query": "dr\xffill"}', "body: byte 16 (0xff) is not valid UTF-8"),
    ("/v1/events", b'[{"type": "click", "event_id": "e", "request_id": "r", "product_id": "P\xc3"}]',
     "body: byte 71 (0xc3) is not valid UTF-8"),
    ("/v1/search", b'{"query": "drill", "k": ' + b"9" * 5000 + b"}",
     "body: the integer at byte 24 (the value of 'k') has 5000 digits; a number in a request has at most 4300"),
    ("/v1/search", b'{"query": "drill", "filters": {"category": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
     "body: arrays and objects nested 5002 deep (from byte 5042) are more than the JSON reader takes"),
])
def test_values_json_cannot_carry_are_422_naming_them(client: TestClient, path: str, raw: str | bytes,
                                                      named: str) -> None:
    content = raw if isinstance(raw, bytes) else raw.encode()
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422 and named in response.json()["message"], response.text
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(("body", "headers", "named"), [
    ('{"query": "drill \\ud800", "k": 1}'.encode(), {"content-type": "application/JSON"}, "half of a UTF-16"),
    ('{"query": "drill \\ud800", "k": 1}'.encode(), {"content-type": "Application/Json; charset=utf-8"},
     "half of a UTF-16"),
    ('{"query": "drill \\ud800", "k": 1}'.encode(), {}, "Content-Type: application/json"),  # no type: not JSON
    ('{"query": "drill", "k": 1}'.encode("utf-16"), {"content-type": "application/json"}, "JSON in UTF-16"),
    ('{"query": "drill \\ud800", "k": 1}'.encode("utf-32-le"), {"content-type": "application/json"},
     "JSON in UTF-32-LE"),
])
def test_a_json_body_the_checks_of_its_bytes_cannot_read_is_422(client: TestClient, body: bytes,
                                                               headers: dict[str, str], named: str) -> None:
    """Before: a media type spelt in capitals, or a body in UTF-16 or UTF-32 (which the JSON reader takes), passed
    the check of escaped half surrogate pairs; the search then failed logging its query: a 500."""
    sent = client.post("/v1/search", content=body, headers=headers)
    assert sent.status_code == 422 and named in sent.json()["message"], sent.text
    assert client.post("/v1/search", content=b'{"query": "drill", "k": 1}',
                       headers={"content-type": "application/JSON"}).status_code == 200


def test_a_body_not_sent_as_json_is_told_the_content_type(client: TestClient) -> None:
    sent = client.post("/v1/search", content=b'{"query": "drill"}', headers={"content-type": "text/plain"})
    assert sent.status_code == 422 and "Content-Type: application/json" in sent.json()["message"]
    not_utf8 = client.post("/v1/search", content=b'{"query": "dr\xffill"}', headers={"content-type": "text/plain"})
    assert not_utf8.status_code == 422 and "Content-Type: application/json" in not_utf8.json()["message"]  # not a 500
    assert client.get("/v1/search", params={"q": "drill", "max_price": "inf"}).status_code == 422
    # a batch of events is a list: told the same, and a long body is not echoed back
    click = {"type": "click", "event_id": "e", "request_id": "r", "product_id": "P1"}
    events = client.post("/v1/events", content=json.dumps([click] * 500).encode(),
                         headers={"content-type": "text/plain"})
    assert events.status_code == 422 and "Content-Type: application/json" in events.json()["message"]
    assert len(events.content) < 2000, len(events.content)


@pytest.mark.parametrize(
    ("payload", "field", "allowed"),
    [
        ({"query": "drill", "k": 0}, "k", "greater than or equal to 1"),
        ({"query": "drill", "k": 101}, "k", "less than or equal to 100"),
        ({"query": "drill", "k": "ten"}, "k", "valid integer"),
        ({"query": "   ", "k": 5}, "query", "1..256 characters after trimming"),
        ({"query": "x" * 257}, "query", "1..256 characters"),
        ({"k": 5}, "query", "Field required"),
        ({"query": "drill", "color": "red"}, "color", "Extra inputs are not permitted"),
        ({"query": "drill", "user_id": "u" * 129}, "user_id", "at most 128 characters"),  # blank: none (no 422)
        ({"query": "?!/ $"}, "query", "'?!/ $' has no letter or digit"),
    ],
)
def test_invalid_input_is_422_naming_field_and_range(client: TestClient, payload: dict, field: str,
                                                     allowed: str) -> None:
    response = client.post("/v1/search", json=payload)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["message"].startswith(f"{field}:") and allowed in body["message"]


def test_words_of_any_script_are_a_query(client: TestClient) -> None:
    for query in ("дрель", "ドリル 電動", "taladro eléctrico"):  # before, only a-z and 0-9 were letters or digits
        response = client.post("/v1/search", json={"query": query, "k": 3})
        assert response.status_code == 200, response.text
    assert client.post("/v1/search", json={"query": "taladro eléctrico"}).json()["query_rewrite"]["text"].startswith(
        "taladro electric")


def test_get_validation_names_the_parameter(client: TestClient) -> None:
    response = client.get("/v1/search", params={"q": "drill", "k": 1000})
    assert response.status_code == 422 and response.json()["message"].startswith("k:")
    long = client.get("/v1/search", params={"q": "d" * 300})
    assert long.status_code == 422 and long.json()["message"].startswith("q:")  # not the body's name, query
    empty = client.get("/v1/search?q=drill&category=")
    assert empty.status_code == 422 and empty.json()["message"].startswith("category.0:")
    assert "constrained-str" not in empty.json()["message"] and ";" not in empty.json()["message"]
    assert client.get("/v1/search", params={"q": "drill", "min_price": -1}).json()["message"].startswith("min_price")
    crossed = client.get("/v1/search", params={"q": "drill", "min_price": 5, "max_price": 1}).json()["message"]
    assert crossed.startswith("min_price, max_price:"), crossed


def test_get_search_names_the_rules_the_post_body_names(client: TestClient) -> None:
    """q is 1..256 characters after trimming, as the body's query (no other limit before trimming), and a price
    that is not a finite number is told so, as in the body's filters (not that it should be >= 0)."""
    padded = client.get("/v1/search", params={"q": "drill" + " " * 1100, "k": 1})
    assert padded.status_code == 200 and padded.json()["query"] == "drill"
    long = client.get("/v1/search", params={"q": "d" * 1100}).json()["message"]
    assert long.startswith("q: query must be 1..256 characters after trimming whitespace, got 1100"), long
    posted = client.post("/v1/search", content=b'{"query": "drill", "filters": {"min_price": NaN}}',
                         headers={"content-type": "application/json"}).json()["message"]
    assert "Input should be a finite number" in posted, posted
    text = client.post("/v1/search", json={"query": "drill", "filters": {"min_price": "12"}}).json()["message"]
    assert "filters.min_price: Input should be a valid number (got '12')" in text  # a JSON number, not a string
    for name in ("min_price", "max_price"):
        for value in ("nan", "NaN", "inf"):
            message = client.get("/v1/search", params={"q": "drill", name: value}).json()["message"]
            assert message.startswith(f"{name}: Input should be a finite number"), message
    for name in ("user_id", "session_id"):  # a blank id is none, however long, as in the body
        assert client.get("/v1/search", params={"q": "drill", name: " " * 200}).status_code == 200
        message = client.get("/v1/search", params={"q": "drill", name: "u" * 129}).json()["message"]
        assert name in message and "128" in message, message


def test_probes_and_openapi(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["pid"] == os.getpid() and health["cpu"]["cores"] >= 1
    assert health["cpu"]["int8_path"] in ("amx", "vnni", "avx2", "generic")
    assert health["cpu"]["cross_encoder_precision"] == served_precision(client.app.state.settings)  # type: ignore[attr-defined]
    server = health["server"]  # the cores divided among the server processes
    assert server["processes"] >= 1 and server["onnx_threads"] == max(1, server["usable_cores"] // server["processes"])
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["pid"] == os.getpid() and ready["versions"]["encoder"]
    spec = client.get("/openapi.json").json()
    assert "/v1/search" in spec["paths"]
    get_params = {p["name"]: p["schema"] for p in spec["paths"]["/v1/search"]["get"]["parameters"]}
    assert get_params["user_id"]["maxLength"] == get_params["session_id"]["maxLength"] == 128
    # a client generated from the spec sends what the server takes (before: sort and facets were any text)
    given = {p["name"]: p["schema"] for p in spec["paths"]["/v1/search"]["get"]["parameters"]}
    assert given["sort"]["enum"] == ["relevance", "price_asc", "price_desc"]
    assert given["facets"]["anyOf"][0]["maxItems"] == 3 and given["category"]["anyOf"][0]["maxItems"] == 100
    assert "404" in spec["paths"]["/v1/stores/{store}/search"]["get"]["responses"]  # a store not served here


def test_openapi_lists_every_status_a_route_answers(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    ids = [operation["operationId"] for path in paths.values() for operation in path.values()]
    assert len(ids) == len(set(ids))  # one id per operation: clients are generated from them
    assert client.head("/healthz").status_code == 200 and client.head("/readyz").status_code in (200, 503)
    events = {"/v1/events", "/v1/stores/{store}/events"}
    for path in events:  # a failing spool disk, an unknown store, an unreadable body, a rate limit
        assert {"404", "422", "429", "503"} <= set(paths[path]["post"]["responses"]), path
        assert "Retry-After" in paths[path]["post"]["responses"]["503"]["description"]
    admin = [(path, method) for path in paths if "/admin/" in path for method in paths[path]]
    assert len(admin) > 20
    for path, method in admin:  # rate limits on admin keys, and the 503 of a store still loading
        assert {"422", "429", "503"} <= set(paths[path][method]["responses"]), (path, method)
    for path in [p for p in paths if p.startswith("/v1/")]:
        for method, operation in paths[path].items():
            invalid = operation["responses"]["422"]
            assert invalid["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody"), (path, method)
            assert "not UTF-8" in invalid["description"], (path, method)
            assert "413" in operation["responses"], (path, method)  # a body over api.max_body_bytes


def test_a_body_refused_before_routing_is_counted_under_its_route(client: TestClient) -> None:
    sent = client.post("/v1/stores/default/search", content=b'{"query": "drill \\ud800"}',
                       headers={"content-type": "application/json"})
    assert sent.status_code == 422
    metrics = client.get("/metrics").text
    assert 'shoprank_request_seconds_count{route="/v1/stores/{store}/search",status="422"}' in metrics
    assert 'route="unmatched",status="422"' not in metrics  # before: every such 422 was "unmatched"


def test_not_ready_is_503_with_reason(settings: Settings) -> None:
    def broken(_: Settings, previous: Served | None) -> Served:
        raise RuntimeError("index folder is empty")

    with TestClient(create_app(settings, loader=broken)) as client:
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["detail"] == "loading index and models" and time.monotonic() < deadline:
            time.sleep(0.02)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "index folder is empty" in ready.json()["detail"]
        assert ready.headers["Retry-After"] == "2" and client.head("/readyz").status_code == 503
        assert client.head("/healthz").status_code == 200  # a load balancer's check may send HEAD
        search = client.post("/v1/search", json={"query": "drill"})
        assert search.status_code == 503 and search.json()["error"] == "not_ready"
        assert "index folder is empty" in search.json()["message"]


def test_the_response_says_what_the_analyzer_searched(client: TestClient) -> None:
    typed = client.post("/v1/search", json={"query": "cordles Drills 18V", "k": 3}).json()
    rewrite = typed["query_rewrite"]
    assert rewrite["text"] == "cordless drills 18 volt" and rewrite["numbers"] == ["18 volt"]
    assert rewrite["rewrites"] == [{"original": "cordles", "replacement": "cordless", "reason": "spelling"}]
    assert any("drill" in i["title"].lower() for i in typed["items"])
    as_typed = client.get("/v1/search", params={"q": "cordles Drills 18V", "k": 3, "rewrite": "false"}).json()
    assert as_typed["query_rewrite"]["text"] == "cordles drills 18 volt" and as_typed["query_rewrite"]["rewrites"] == []


def test_a_store_synonym_is_searched_said_and_read_again_on_reload(settings: Settings, real_index, real_encoder,  # type: ignore[no-untyped-def]
                                                                     tmp_path) -> None:
    from core.service_settings import ApiSettings
    from retrieval.index import ProductIndex

    rules = tmp_path / "synonyms.txt"
    many = "".join(f"k{i}, alpha{i} bravo{i} charlie{i}, delta{i} echo{i} foxtrot{i}\n" for i in range(40))
    rules.write_text("taladro => drill\n" + many)
    retrieval = settings.retrieval.model_copy(update={"synonyms": str(rules)})
    index = ProductIndex.load(real_index.path, retrieval)
    admin = settings.model_copy(update={"api": ApiSettings(admin_token="s3cret"), "retrieval": retrieval})
    with ready_client(app_on(admin, index, real_encoder)) as client:
        body = client.post("/v1/search", json={"query": "taladro", "k": 3}).json()
        assert body["query_rewrite"]["rewrites"] == [{"original": "taladro", "replacement": "drill",
                                                      "reason": "synonym"}]
        assert body["query_rewrite"]["text"] == "drill" and "drill" in body["items"][0]["title"].lower()
        as_typed = client.get("/v1/search", params={"q": "taladro", "k": 3, "rewrite": "false"}).json()
        assert as_typed["query_rewrite"]["rewrites"] == []
        long = client.post("/v1/search", json={"query": " ".join(f"k{i}" for i in range(40)), "k": 3})  # 149 typed
        assert long.status_code == 200 and len(long.json()["query_rewrite"]["text"]) > 1024  # logged: its first 1,024
        rules.write_text("taladro => garden hose\n")  # a merchandiser edits the file: a reload reads it
        assert client.post("/v1/admin/reload", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        again = client.post("/v1/search", json={"query": "taladro", "k": 3}).json()
        assert again["query_rewrite"]["text"] == "garden hose" and "hose" in again["items"][0]["title"].lower()
        rules.write_text("taladro => => drill\n")  # a broken edit: the reload says why, the old rules serve on
        failed = client.post("/v1/admin/reload", headers={"Authorization": "Bearer s3cret"})
        assert failed.status_code == 422 and "line 1" in failed.json()["message"]
        assert client.post("/v1/search", json={"query": "taladro", "k": 3}).json()["query_rewrite"]["text"] == \
            "garden hose"
        deadline = time.monotonic() + 20  # the process's own poll of the shared state finds the edit too
        while not client.get("/readyz").json().get("reload_errors") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "line 1" in client.get("/readyz").json()["reload_errors"]["default"]
        rules.write_text("taladro => drill\n")  # fixed: read again by the poll, no reload asked for
        while client.get("/readyz").json().get("reload_errors") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.post("/v1/search", json={"query": "taladro", "k": 3}).json()["query_rewrite"]["text"] == "drill"


def test_filters_hold_on_every_page_and_a_narrow_one_still_fills_it(  # type: ignore[no-untyped-def]
        client: TestClient, demo_products) -> None:
    facts = demo_products.set_index("product_id")

    def search(filters: dict, k: int = 10, offset: int = 0) -> list[str]:
        response = client.post("/v1/search", json={"query": "cordless drill", "k": k, "offset": offset,
                                                   "filters": filters})
        assert response.status_code == 200, response.text
        return [item["product_id"] for item in response.json()["items"]]

    brushes = set(facts.index[facts["category"] == "Paint > Brushes"])
    assert not brushes & set(search({}, k=50))  # the unfiltered best hold none of them
    first, second = search({"category": "Paint > Brushes"}), search({"category": "Paint > Brushes"}, offset=10)
    assert len(first) == 10 and set(first + second) == brushes  # every brush, and nothing else, over two pages
    found = search({"category": ["Paint > Brushes", "Tools > Drills"], "brand": "DeWalt", "in_stock": True,
                    "max_price": 150}, k=100)
    assert found and all(facts.at[p, "category"] in ("Paint > Brushes", "Tools > Drills") and
                         facts.at[p, "brand"] == "DeWalt" and facts.at[p, "in_stock"] and
                         facts.at[p, "price"] <= 150 for p in found)
    expected = facts[facts["category"].isin(["Paint > Brushes", "Tools > Drills"]) & (facts["brand"] == "DeWalt")
                     & facts["in_stock"].astype(bool) & (facts["price"] <= 150)]
    assert set(found) == set(expected.index)
    assert search({"category": "No Such Category"}) == []
    assert search({"category": "C" * 1000}) == []  # as long as a catalog's category may be: filterable
    # a row's place does not depend on the page asked for: ten pages of 13 are one list of 130
    for filters in ({}, {"in_stock": True}):
        paged = [p for offset in range(0, 130, 13) for p in search(filters, k=13, offset=offset)]
        assert paged == search(filters, k=100) + search(filters, k=30, offset=100) and len(set(paged)) == len(paged)


@pytest.mark.parametrize(("filters", "allowed"), [
    ({"category": []}, "give 1..100 values, got 0"),
    ({"brand": ""}, "at least 1 character"),
    ({"category": ["x"] * 101}, "give 1..100 values, got 101"),
    ({"color": "red"}, "Extra inputs are not permitted"),
    ({"category": "C" * 1001}, "at most 1000 characters"),  # a catalog's category has at most 1000
])
def test_bad_filters_are_422_naming_the_filter(client: TestClient, filters: dict, allowed: str) -> None:
    response = client.post("/v1/search", json={"query": "drill", "filters": filters})
    assert response.status_code == 422 and allowed in response.text and next(iter(filters)) in response.text


def test_facets_count_every_product_found_after_the_filters(  # type: ignore[no-untyped-def]
        client: TestClient, demo_products) -> None:
    facts = demo_products.set_index("product_id")
    body = client.post("/v1/search", json={"query": "paint", "k": 5, "facets": ["category", "brand", "price"]}).json()
    facets = body["facets"]
    found = [i["product_id"] for offset in range(0, 900, 100)
             for i in client.post("/v1/search", json={"query": "paint", "k": 100, "offset": offset}).json()["items"]]
    assert facets["counted"] == len(found) and len(body["items"]) == 5  # the whole list, not the page
    deep = client.post("/v1/search", json={"query": "paint", "k": 50, "offset": 200, "facets": ["category", "brand",
                                                                                                 "price"]}).json()
    assert deep["facets"] == facets  # the same counts on every page
    counts = facts.loc[found, "category"].value_counts()
    assert {c["value"]: c["count"] for c in facets["category"]} == counts.to_dict()
    assert [c["count"] for c in facets["category"]] == sorted(counts.to_list(), reverse=True)
    assert len(facets["brand"]) == min(20, facts.loc[found, "brand"].nunique())
    assert facets["price"]["min"] == pytest.approx(facts.loc[found, "price"].min())
    narrowed = client.post("/v1/search", json={"query": "paint", "facets": ["brand"],
                                               "filters": {"category": "Paint > Brushes"}}).json()["facets"]
    brushes = facts[facts["category"] == "Paint > Brushes"]
    assert narrowed["counted"] == len(brushes) and narrowed["category"] is None and narrowed["price"] is None
    assert {b["value"]: b["count"] for b in narrowed["brand"]} == brushes["brand"].value_counts().to_dict()
    # a facet whose own filter is set counts the list found without it: the other values stay choosable
    chosen = client.post("/v1/search", json={"query": "paint", "facets": ["category", "brand"],
                                             "filters": {"category": "Paint > Brushes"}}).json()["facets"]
    assert chosen["category"] == facets["category"] and chosen["brand"] == narrowed["brand"]
    assert client.post("/v1/search", json={"query": "paint"}).json()["facets"] is None
    bad = client.post("/v1/search", json={"query": "paint", "facets": ["color"]})
    assert bad.status_code == 422 and "facets" in bad.text and "'category', 'brand' or 'price'" in bad.text


def test_suggestions_as_the_shopper_types(client: TestClient, settings: Settings) -> None:
    body = client.get("/v1/suggest", params={"q": "Cordl", "k": 5}).json()
    assert body["query"] == "Cordl" and 1 <= len(body["suggestions"]) <= 5 and body["took_ms"] >= 0
    assert body["suggestions"][0]["text"].startswith("cordless") and body["suggestions"][0]["source"] == "catalog"
    assert client.get("/v1/suggest", params={"q": "?!"}).json()["suggestions"] == []
    for params, field in (({"q": ""}, "q"), ({"q": "drill", "k": 21}, "k"), ({}, "q")):
        response = client.get("/v1/suggest", params=params)
        assert response.status_code == 422 and field in response.text
    from serving.suggestions import write_searched

    path = settings.paths.suggestions
    try:
        write_searched(path, {"cordless leaf blower": 12})  # what `shoprank suggestions` writes nightly
        deadline = time.monotonic() + 10  # read again in the background; the suggestions in use answer meanwhile
        while (first := client.get("/v1/suggest", params={"q": "cordl"}).json()["suggestions"][0])["source"] != \
                "searches":
            assert time.monotonic() < deadline, first
            time.sleep(0.02)
        assert first == {"text": "cordless leaf blower", "source": "searches", "weight": 12.0}
    finally:
        path.unlink()


def test_suggestions_leave_out_what_only_products_out_of_stock_hold_when_the_rules_hide_them(  # type: ignore
        tmp_path) -> None:
    """``out_of_stock: hide`` hides them from every search: their phrases are no suggestion either (before: only
    the rules' hide list was left out, and 'acme' offered phrases whose search found none of its products)."""
    import pandas as pd

    from core.service_settings import ApiSettings
    from retrieval.catalog import read_catalog
    from retrieval.embedding_cache import EmbeddingCache
    from retrieval.index import ProductIndex
    from tests.fakes import HashingEncoder

    rows = [{"product_id": f"A{i:02d}", "title": f"Acme Turbo Widget {i}", "brand": "Acme", "in_stock": False}
            for i in range(6)]
    rows += [{"product_id": f"B{i:02d}", "title": f"Bosco Plain Widget {i}", "brand": "Bosco", "in_stock": True}
             for i in range(6)]
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    products, _ = read_catalog(tmp_path / "c.csv")
    home = Settings(home=tmp_path / "home", progress=False, api=ApiSettings(admin_token="s3cret"))
    encoder = HashingEncoder()
    index = ProductIndex.build(tmp_path / "index", products, encoder, home.retrieval,
                               EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim), progress=False)
    admin = {"Authorization": "Bearer s3cret"}
    with ready_client(app_on(home, index, encoder)) as client:
        def offered(typed: str) -> list[str]:
            return [s["text"] for s in client.get("/v1/suggest", params={"q": typed}).json()["suggestions"]]

        def eventually(typed: str, done) -> list[str]:  # type: ignore[no-untyped-def]
            deadline = time.monotonic() + 20  # the suggester in use answers while the next one is made
            while not done(found := offered(typed)) and time.monotonic() < deadline:
                time.sleep(0.05)
            return found

        assert "acme turbo widget" in eventually("acm", lambda f: "acme turbo widget" in f)
        assert client.put("/v1/admin/rules", json={"out_of_stock": "hide"}, headers=admin).status_code == 200
        assert eventually("acm", lambda f: not f) == []
        assert "widget" in offered("wid") and "turbo widget" not in offered("tur")  # in stock: still offered
        assert client.put("/v1/admin/rules", json={"out_of_stock": "demote"}, headers=admin).status_code == 200
        assert "acme turbo widget" in eventually("acm", lambda f: "acme turbo widget" in f)


def test_a_query_string_not_utf8_is_422_naming_the_parameter_and_the_byte(client: TestClient) -> None:
    """Not read as U+FFFD (a search for another text): a 422 naming the parameter and the byte, as a JSON body's bad
    byte is named (before: 200, for the text with U+FFFD)."""
    for url, message in (("/v1/suggest?q=dri%FF", "q: byte 3 (0xff) is not valid UTF-8 (invalid start byte)"),
                         ("/v1/suggest?q=dri%ED%A0%80", "q: byte 3 (0xed) is not valid UTF-8"),  # half a pair
                         ("/v1/search?q=dri%FFll&k=1", "q: byte 3 (0xff) is not valid UTF-8"),
                         ("/v1/search?q=drill&category=%C3", "category: byte 0 (0xc3) is not valid UTF-8"),
                         ("/v1/suggest?q=dri&%FF=1", r"\xff: the name: byte 0 (0xff) is not valid UTF-8")):
        refused = client.get(url)
        assert refused.status_code == 422 and refused.json()["message"].startswith(message), (url, refused.text)
    assert client.get("/v1/suggest", params={"q": "caf\u00e9 dr"}).json()["query"] == "caf\u00e9 dr"
    assert client.get("/v1/suggest?q=dri&utm_source=%FF").status_code == 200  # a campaign's tags: not ours


def test_a_parameter_of_one_value_given_twice_is_422_a_list_parameter_is_given_once_a_value(
        client: TestClient) -> None:
    """Not the last of the values, silently (before: q=dri&q=cor suggested for 'cor')."""
    for url, message in (("/v1/suggest?q=dri&q=cor", "q: given 2 times; it takes one value: send q once"),
                         ("/v1/search?q=drill&sort=price_asc&sort=relevance", "sort: given 2 times")):
        refused = client.get(url)
        assert refused.status_code == 422 and refused.json()["message"].startswith(message), (url, refused.text)
    listed = client.get("/v1/search", params=[("q", "drill"), ("category", "Tools > Drills"),
                                              ("category", "Tools > Saws"), ("facets", "brand"), ("facets", "price")])
    assert listed.status_code == 200, listed.text
    assert client.get("/v1/suggest?q=dri&_=1&_=2").status_code == 200  # a cache-buster: not ours


def test_get_search_takes_the_same_filters_and_facets(client: TestClient) -> None:
    posted = client.post("/v1/search", json={"query": "drill", "k": 5, "facets": ["brand", "price"], "filters": {
        "category": ["Tools > Drills", "Tools > Saws"], "max_price": 200, "in_stock": True}}).json()
    got = client.get("/v1/search", params=[("q", "drill"), ("k", 5), ("category", "Tools > Drills"),
                                           ("category", "Tools > Saws"), ("max_price", 200), ("in_stock", "true"),
                                           ("facets", "brand"), ("facets", "price")]).json()
    assert [i["product_id"] for i in got["items"]] == [i["product_id"] for i in posted["items"]]
    assert got["facets"] == posted["facets"] and got["facets"]["brand"]
    bad = client.get("/v1/search", params={"q": "drill", "facets": "color"})
    assert bad.status_code == 422 and "facets" in bad.text
    second = client.get("/v1/search", params={"q": "drill", "k": 5, "offset": 5, "explain": "true"}).json()
    both = client.post("/v1/search", json={"query": "drill", "k": 10}).json()
    assert [i["product_id"] for i in second["items"]] == [i["product_id"] for i in both["items"][5:]]
    assert second["items"][0]["rank"] == 6 and second["items"][0]["explanation"] is not None


def test_browse_lists_every_product_of_a_filter_in_the_order_asked(  # type: ignore[no-untyped-def]
        client: TestClient, settings: Settings, demo_products) -> None:
    facts = demo_products.set_index("product_id")
    drills = facts[facts["category"] == "Tools > Drills"]

    def browse(**body) -> dict:  # type: ignore[no-untyped-def]
        response = client.post("/v1/browse", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    cheapest = browse(filters={"category": "Tools > Drills"}, sort="price_asc", k=5, facets=["brand", "price"])
    assert cheapest["total"] == len(drills) and [i["rank"] for i in cheapest["items"]] == [1, 2, 3, 4, 5]
    expected = drills.sort_values("price", kind="stable").index[:5].tolist()
    assert [i["product_id"] for i in cheapest["items"]] == expected
    first = cheapest["items"][0]
    assert (first["category"], first["brand"], first["price"]) == ("Tools > Drills", drills.at[expected[0], "brand"],
                                                                  pytest.approx(drills["price"].min()))
    assert cheapest["facets"]["counted"] == len(drills) and cheapest["facets"]["price"]["max"] == pytest.approx(
        drills["price"].max())
    dearest = browse(filters={"category": "Tools > Drills"}, sort="price_desc", k=100)["items"]
    by_price = drills.sort_values("price", ascending=False, kind="stable").index.tolist()
    assert [i["product_id"] for i in dearest] == by_price
    # most popular first (no popularity in this store: catalog order), with the rules: out of stock last
    popular = browse(filters={"category": "Tools > Drills"}, k=100)["items"]
    stocked = [i["in_stock"] for i in popular]
    assert sorted(i["product_id"] for i in popular) == sorted(drills.index) and stocked == sorted(stocked, reverse=True)
    assert all("out_of_stock_demoted" in i["rules"] for i in popular if not i["in_stock"])
    paged = [i["product_id"] for o in range(0, 20, 7) for i in browse(filters={"category": "Tools > Drills"},
                                                                        k=7, offset=o)["items"]]
    assert paged == [i["product_id"] for i in popular]
    assert browse()["total"] == len(facts)  # no filter: the whole catalog
    # a category page's category facet counts the listing without its own filter (multi-select, as a search)
    menu = browse(filters={"category": "Tools > Drills", "max_price": 100}, facets=["category", "brand"])["facets"]
    cheap = facts[facts["price"] <= 100]
    assert {c["value"]: c["count"] for c in menu["category"]} == cheap["category"].value_counts().head(20).to_dict()
    assert {b["value"]: b["count"] for b in menu["brand"]} == cheap[cheap["category"] == "Tools > Drills"][
        "brand"].value_counts().head(20).to_dict()
    page = browse(filters={"category": "Tools > Drills"}, k=3, user_id="u3")
    logged = spooled(settings, page["request_id"])
    assert (logged["pipeline"], logged["query"], logged["user_id"], logged["sort"]) == ("browse", "", "u3", "popular")
    assert [i["product_id"] for i in logged["items"]] == [i["product_id"] for i in page["items"]]
    bad = client.post("/v1/browse", json={"sort": "newest"})
    assert bad.status_code == 422 and "sort" in bad.text and "popular" in bad.text


def test_a_search_sorted_by_price_sorts_its_most_relevant_products(  # type: ignore[no-untyped-def]
        client: TestClient, demo_products) -> None:
    price = demo_products.set_index("product_id")["price"]

    def ids(sort: str, k: int = 100, offset: int = 0) -> list[str]:
        response = client.post("/v1/search", json={"query": "cordless drill", "k": k, "offset": offset, "sort": sort})
        assert response.status_code == 200, response.text
        return [i["product_id"] for i in response.json()["items"]]

    relevant = ids("relevance")
    cheapest = ids("price_asc")
    assert sorted(cheapest) == sorted(relevant)  # the same 100 (serving.sort_depth), by price
    assert [price[p] for p in cheapest] == sorted(price[p] for p in relevant)
    assert [price[p] for p in ids("price_desc", k=10)] == sorted((price[p] for p in relevant), reverse=True)[:10]
    assert ids("price_asc", k=10, offset=10) == cheapest[10:20] and ids("price_asc", k=10, offset=100) == []
    bad = client.post("/v1/search", json={"query": "drill", "sort": "newest"})
    assert bad.status_code == 422 and "sort" in bad.text and "price_asc" in bad.text
    got = client.get("/v1/search", params={"q": "cordless drill", "k": 10, "sort": "price_asc"}).json()["items"]
    assert [i["product_id"] for i in got] == cheapest[:10]


def spooled(settings: Settings, request_id: str) -> dict:
    """The ranking event the server appended to its event spool for ``request_id``."""
    for path in sorted(settings.paths.event_spool.rglob("segment-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["value"].get("request_id") == request_id and record["value"]["type"] == "ranking":
                return record["value"]
    raise AssertionError(f"no ranking event for {request_id}")


def test_recommendations_for_a_product_page_a_cart_and_a_shopper(  # type: ignore[no-untyped-def]
        client: TestClient, settings: Settings, demo_products) -> None:
    from online_learning.cooccurrence import Neighbour, write_together

    facts = demo_products.set_index("product_id")
    seed = facts[(facts["category"] == "Tools > Drills") & facts["in_stock"]].index[0]

    def recommend(**body) -> dict:  # type: ignore[no-untyped-def]
        response = client.post("/v1/recommend", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    similar = recommend(product_ids=[seed], k=10, user_id="u7", session_id="s7")
    ids = [i["product_id"] for i in similar["items"]]
    logged = spooled(settings, similar["request_id"])  # the shelf's impression, so its clicks are credited
    assert (logged["pipeline"], logged["query"], logged["user_id"], logged["session_id"]) == (
        "recommend:similar", "", "u7", "s7")
    assert [i["product_id"] for i in logged["items"]] == ids and logged["items"][0]["scores"].keys() == {"similar"}
    assert len(set(ids)) == 10 and seed not in ids and similar["seeds"] == [seed] and not similar["cached"]
    again = recommend(product_ids=[seed], k=10)  # the same product page: the results cache
    assert again["cached"] and [i["product_id"] for i in again["items"]] == ids
    assert again["request_id"] != similar["request_id"]  # still its own impression
    assert {i["source"] for i in similar["items"]} == {"similar"}
    assert sum(facts.at[p, "category"] == "Tools > Drills" for p in ids) >= 5  # nearest by meaning: drills
    stocked = [i["in_stock"] for i in similar["items"]]
    assert stocked == sorted(stocked, reverse=True)  # the business rules: out of stock last
    wide = recommend(product_ids=[seed], k=60)["items"]  # the rules order the same rows whatever the shelf's k
    assert [i["product_id"] for i in wide[:10]] == ids  # before: an in-stock product below 2k rows never moved up
    brand = facts.at[ids[0], "brand"]
    narrow = recommend(product_ids=[seed], k=5, filters={"brand": brand}, exclude=[ids[0]])["items"]
    assert narrow and all(i["brand"] == brand for i in narrow) and ids[0] not in {i["product_id"] for i in narrow}

    others = facts[(facts["category"] == "Paint > Exterior Stain") & facts["in_stock"]].index[:3].tolist()
    path = settings.paths.recommendations
    write_together(path, {"bought": {seed: [Neighbour(others[0], 0.9, 4), Neighbour(others[1], 0.5, 2)],
                                     others[2]: [Neighbour(others[1], 0.6, 3)]}, "viewed": {}})
    try:
        shelf = recommend(kind="bought_together", product_ids=[seed], k=6)["items"]
        assert [i["product_id"] for i in shelf[:2]] == others[:2] and shelf[0]["score"] == pytest.approx(0.9)
        assert [i["source"] for i in shelf] == ["bought_together"] * 2 + ["similar"] * 4  # filled
        only = recommend(kind="bought_together", product_ids=[seed], k=6, fill=False)["items"]
        assert [i["product_id"] for i in only] == others[:2]
        cart = recommend(kind="bought_together", product_ids=[seed, others[2]], k=2, fill=False)["items"]
        assert [(i["product_id"], i["score"]) for i in cart] == [(others[1], pytest.approx(1.1)),
                                                                  (others[0], pytest.approx(0.9))]
        assert recommend(kind="viewed_together", product_ids=[seed], k=3, fill=False)["items"] == []
        mine = recommend(kind="for_you", user_id="nobody", product_ids=[seed], k=3)
        assert [i["source"] for i in mine["items"]] == ["bought_together"] * 2 + ["similar"]
        assert not recommend(kind="for_you", user_id="nobody", product_ids=[seed], k=3)["cached"]  # a shopper's own
    finally:
        path.unlink()
    for damaged in ('{"neighb', '{"neighbours": {"bought": {"%s": [["P1", 0.5]]}}}' % seed, "[]"):
        path.write_text(damaged)  # a file cut short, or one another version wrote: the shelves fill without it
        try:
            for kind in ("bought_together", "for_you"):
                shelf = recommend(kind=kind, user_id="nobody", product_ids=[seed], k=3)["items"]
                assert [i["source"] for i in shelf] == ["similar"] * 3, (damaged, kind)
        finally:
            path.unlink()
    cart = recommend(product_ids=[seed, "P-deleted"], exclude=["P-gone"], k=3)  # a cart older than the catalog
    assert cart["seeds"] == [seed] and cart["unknown"] == ["P-deleted", "P-gone"] and len(cart["items"]) == 3
    twice = recommend(product_ids=[seed, "P-deleted", seed, "P-deleted"], exclude=["P-deleted", "P-gone", "P-gone"],
                      k=3)  # an id given twice is one (before: "unknown" named P-deleted three times)
    assert twice["unknown"] == ["P-deleted", "P-gone"] and twice["seeds"] == [seed]
    assert [i["product_id"] for i in twice["items"]] == [i["product_id"] for i in cart["items"]]
    popular = recommend(kind="for_you", user_id="nobody", k=5)  # no history, no seed: the most popular
    assert popular["seeds"] == [] and {i["source"] for i in popular["items"]} == {"popular"}
    gone = recommend(kind="for_you", user_id="nobody", product_ids=["P-deleted"], k=5)  # before: 404, not the shelf
    assert [i["product_id"] for i in gone["items"]] == [i["product_id"] for i in popular["items"]]
    assert gone["seeds"] == [] and gone["unknown"] == ["P-deleted"]
    for body, status, named in (({"kind": "similar"}, 422, "product_ids"), ({"product_ids": ["P-none"]}, 404, "P-none"),
                                ({"kind": "trending", "product_ids": [seed]}, 422, "kind"),
                                ({"kind": "for_you"}, 422, "user_id"),
                                ({"product_ids": ["P-none", "P-gone"]}, 404, "P-gone")):
        response = client.post("/v1/recommend", json=body)
        assert response.status_code == status and named in response.text, (body, response.text)



def test_merchandising_rules_set_through_the_admin_api_serve_at_once_and_a_file_edit_by_the_poll(  # type: ignore
        settings: Settings, real_index, real_encoder, demo_products, tmp_path) -> None:
    from core.service_settings import ApiSettings, ServingSettings
    from ranking.rules import RulesConfig

    home = settings.model_copy(update={"home": tmp_path, "api": ApiSettings(admin_token="s3cret"),
                                       "serving": ServingSettings(reload_poll_s=0.2)})
    admin = {"Authorization": "Bearer s3cret"}
    with ready_client(app_on(home, real_index, real_encoder)) as client:
        def search(query: str = "cordless drill", k: int = 100) -> dict:
            response = client.post("/v1/search", json={"query": query, "k": k, "explain": True})
            assert response.status_code == 200, response.text
            return response.json()

        before = [i["product_id"] for i in search()["items"]]  # cached: a rules change must not serve it again
        counted = client.post("/v1/search", json={"query": "cordless drill", "facets": ["brand"]}).json()["facets"][
            "counted"]
        assert client.get("/v1/admin/rules", headers=admin).json()["rules"]["queries"] == {}
        assert client.get("/v1/admin/rules").status_code in (401, 403)
        pinned, top, gone = before[40], before[0], str(demo_products["product_id"].iloc[-1])
        rules = {"hide": [gone, "no-such-product"],
                 "queries": {"Cordless  Drill!": {"pin": [pinned], "hide": [top], "redirect": "/drills"}}}
        checked = client.put("/v1/admin/rules", params={"dry_run": "true"}, json={
            **rules, "queries": {**rules["queries"], "saw": {"boost": {"brand": ["dewalt"]}}}}, headers=admin)
        assert checked.status_code == 200 and checked.json()["unknown"] == ["no-such-product"]
        assert checked.json()["unmatched"] == ["brand 'dewalt'"]  # brands are exact values: DeWalt
        assert not (tmp_path / "rules" / "rules.yaml").exists()  # a dry run saves nothing
        put = client.put("/v1/admin/rules", json=rules, headers=admin)
        assert put.status_code == 200, put.text
        assert put.json()["unknown"] == ["no-such-product"] and put.json()["path"] == str(tmp_path / "rules/rules.yaml")
        assert RulesConfig.from_file(tmp_path / "rules" / "rules.yaml").hide == [gone, "no-such-product"]
        body = search("CORDLESS drill")  # matched as the analyzer normalizes it
        ids = [i["product_id"] for i in body["items"]]
        assert ids[0] == pinned and body["items"][0]["explanation"]["rules"] == ["pinned(1)"]
        assert top not in ids and gone not in ids and body["redirect"] == "/drills" and not body["cached"]
        facets = client.post("/v1/search", json={"query": "cordless drill", "facets": ["brand"]}).json()["facets"]
        assert facets["counted"] == counted - 2  # neither the query's hidden product nor the one hidden everywhere
        assert client.get("/v1/search", params={"q": "cordless drill"}).json()["redirect"] == "/drills"
        scraped = client.get("/metrics").text  # how often the rules changed a page, by rule
        assert 'shoprank_rules_applied_total{rule="pinned"}' in scraped
        assert 'shoprank_rules_applied_total{rule="redirect"}' in scraped
        assert search("drill bits")["redirect"] is None
        pages = [client.post("/v1/browse", json={"k": 100, "offset": o}).json()
                 for o in range(0, len(demo_products), 100)]
        assert pages[0]["total"] == len(demo_products) - 1
        assert gone not in {i["product_id"] for page in pages for i in page["items"]}
        bad = client.put("/v1/admin/rules", json={"queries": {"drill": {"pinn": ["a"]}}}, headers=admin)
        assert bad.status_code == 422 and "pinn" in bad.text
        same = client.put("/v1/admin/rules", json={"queries": {"Drill": {}, "drill": {}}}, headers=admin)
        assert same.status_code == 422 and "'Drill' and 'drill' are the same query" in same.text
        assert search()["redirect"] == "/drills"  # the rejected changes left the rules as they were
        # another process (or an operator) writes the file: this one serves it after its next poll
        RulesConfig.model_validate({"queries": {"cordless drill": {"redirect": "/tools"}}}).save(
            tmp_path / "rules" / "rules.yaml")
        deadline = time.monotonic() + 20
        while search()["redirect"] != "/tools" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert search()["redirect"] == "/tools"
        # hidden everywhere: a brand's products give the suggestions no catalog phrase either
        brand = demo_products["brand"].value_counts().index[0]
        word = brand.lower().split()[0]

        def offered() -> list[str]:
            return [s["text"] for s in client.get("/v1/suggest", params={"q": word}).json()["suggestions"]]

        assert any(t.startswith(word) for t in offered())
        theirs = demo_products.loc[demo_products["brand"] == brand, "product_id"].tolist()
        assert client.put("/v1/admin/rules", json={"hide": theirs}, headers=admin).status_code == 200
        deadline = time.monotonic() + 20
        while any(t.startswith(word) for t in offered()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(t.startswith(word) for t in offered())
        ended = {"queries": {"cordless drill": {"redirect": "/old", "end": "2020-01-01T00:00:00Z"}}}
        assert client.put("/v1/admin/rules", json=ended, headers=admin).status_code == 200
        assert search()["redirect"] is None  # a rule past its end no longer holds
        assert client.put("/v1/admin/rules", json={}, headers=admin).status_code == 200
        assert [i["product_id"] for i in search()["items"]] == before


def test_synonyms_set_through_the_admin_api_are_searched_at_once(  # type: ignore[no-untyped-def]
        settings: Settings, real_index, real_encoder, tmp_path) -> None:
    from core.service_settings import ApiSettings
    from retrieval.index import ProductIndex

    # no poll of the shared state: what a call leaves is what the test reads (a poll's reload would mend it)
    serving = settings.serving.model_copy(update={"reload_poll_s": 0})
    home = settings.model_copy(update={"home": tmp_path, "api": ApiSettings(admin_token="s3cret"), "serving": serving})
    admin = {"Authorization": "Bearer s3cret"}
    index = ProductIndex.load(real_index.path, home.retrieval)  # its own analyzer: the synonyms change it
    with ready_client(app_on(home, index, real_encoder)) as client:
        def searched(query: str) -> str:
            return client.post("/v1/search", json={"query": query, "k": 3}).json()["query_rewrite"]["text"]

        def suggested(typed: str) -> list[str]:
            return [s["text"] for s in client.get("/v1/suggest", params={"q": typed}).json()["suggestions"]]

        assert searched("taladro") == "taladro"
        plain = suggested("taladro d")
        empty = client.get("/v1/admin/synonyms", headers=admin).json()
        assert empty == {"rules": [], "path": str(tmp_path / "rules" / "synonyms.txt"), "entries": 0}
        put = client.put("/v1/admin/synonyms", json={"rules": ["# from the reformulations report",
                                                               "taladro => drill", "tv, television"]}, headers=admin)
        assert put.status_code == 200 and put.json()["entries"] == 3, put.text
        assert searched("taladro") == "drill" and (tmp_path / "rules" / "synonyms.txt").read_text().startswith("#")
        assert suggested("taladro d") != plain  # suggestions read the typed words as the search does
        bad = client.put("/v1/admin/synonyms", json={"rules": ["taladro => drill", "hose =>"]}, headers=admin)
        assert bad.status_code == 422 and "rules line 2: 'hose =>'" in bad.json()["message"]
        assert searched("taladro") == "drill"  # the rejected change left the synonyms as they were
        assert client.put("/v1/admin/synonyms", json={"rules": []}, headers=admin).status_code == 200
        assert searched("taladro") == "taladro"
        # another shared file is broken: the call fails naming it and changes nothing
        (tmp_path / "rules").mkdir(exist_ok=True)
        (tmp_path / "rules" / "rules.yaml").write_text("queries: [1]\n")
        written = (tmp_path / "rules" / "synonyms.txt").stat().st_mtime_ns
        refused = client.put("/v1/admin/synonyms", json={"rules": ["taladro => drill"]}, headers=admin)
        assert refused.status_code == 422 and "rules.yaml is not valid" in refused.json()["message"]
        assert (tmp_path / "rules" / "synonyms.txt").read_text() == "" and searched("taladro") == "taladro"
        # and nothing else read them: the index keeps the served rules (before: suggestions used the refused ones)
        assert suggested("taladro d") == plain and index.analyzer.analyze("taladro").text == "taladro"
        # put back as it was, its time too: no change of this replica's for the artifact store to keep
        assert (tmp_path / "rules" / "synonyms.txt").stat().st_mtime_ns == written
        stopped = client.put("/v1/admin/experiment", json={"experiment": None, "shadow": None}, headers=admin)
        assert stopped.status_code == 422 and not home.paths.experiment_config.exists()  # before: saved, published
        fixed = client.put("/v1/admin/rules", json={}, headers=admin)  # mends it: no reload error left
        assert fixed.status_code == 200 and not client.get("/readyz").json().get("reload_errors")
        assert client.put("/v1/admin/synonyms", json={"rules": ["a => b"]}).status_code in (401, 403)
        # one element is one line: a line break inside would save rules that were never checked
        split = client.put("/v1/admin/synonyms", json={"rules": ["# note\ntaladro => drill"]}, headers=admin)
        assert split.status_code == 422 and "rules[0]" in split.text and "line break" in split.text
        # files saved in another encoding: named in a 422, and the admin API replaces them
        (tmp_path / "rules" / "synonyms.txt").write_bytes("aspiradora, café => vacuum\n".encode("latin-1"))
        latin = client.get("/v1/admin/synonyms", headers=admin)
        assert latin.status_code == 422 and "synonyms.txt is not UTF-8" in latin.json()["message"]
        assert client.put("/v1/admin/synonyms", json={"rules": ["café => coffee"]}, headers=admin).status_code == 200
        assert client.get("/v1/admin/synonyms", headers=admin).json()["rules"] == ["café => coffee"]
        (tmp_path / "rules" / "rules.yaml").write_bytes("hide: [café]\n".encode("latin-1"))
        assert client.put("/v1/admin/rules", json={"hide": []}, headers=admin).status_code == 200


def test_an_experiment_change_waits_for_the_lock_promote_holds(  # type: ignore[no-untyped-def]
        settings: Settings, real_index, real_encoder, tmp_path) -> None:
    """`shoprank promote --apply` holds the experiment file's lock while it checks the file is the one it decided
    on, activates and writes: a change through the admin API waits for it (the server answering meanwhile)."""
    import threading

    from core.files import exclusive
    from core.service_settings import ApiSettings
    from online_learning.experiments import read_config
    from tests.helpers import register_ltr

    home = settings.model_copy(update={"home": tmp_path, "api": ApiSettings(admin_token="s3cret")})
    admin = {"Authorization": "Bearer s3cret"}
    register_ltr(home.paths.models, tmp_path / "trained", 2)
    with ready_client(app_on(home, real_index, real_encoder)) as client:
        answered = []
        change = threading.Thread(target=lambda: answered.append(
            client.put("/v1/admin/experiment", json={"shadow": "v2"}, headers=admin)))
        with exclusive(home.paths.experiment_config):
            change.start()
            time.sleep(2.0)
            assert change.is_alive() and not home.paths.experiment_config.exists()  # before: written at once
            assert client.get("/v1/admin/experiment", headers=admin).json()["shadow"] is None  # the loop answers
        change.join(timeout=60)
        assert answered[0].status_code == 200 and answered[0].json()["shadow"] == "v2", answered[0].text
        assert read_config(home.paths.experiment_config) == (None, "v2")


def test_pages_stay_full_and_agree_when_the_rules_leave_rows_out(  # type: ignore[no-untyped-def]
        settings: Settings, real_index, real_encoder, tmp_path) -> None:
    from core.service_settings import ApiSettings

    # a first stage of 20 rows, well below the catalog: pages past what the rules leave read deeper
    ranking = settings.ranking.model_copy(update={"first_stage_depth": 20})
    home = settings.model_copy(update={"home": tmp_path, "api": ApiSettings(admin_token="s3cret"), "ranking": ranking})
    admin = {"Authorization": "Bearer s3cret"}
    with ready_client(app_on(home, real_index, real_encoder)) as client:
        def page(k: int, offset: int) -> list[str]:
            body = client.post("/v1/search", json={"query": "garden hose", "k": k, "offset": offset}).json()
            return [i["product_id"] for i in body["items"]]

        first = page(100, 0)
        hidden = first[10:20]
        assert client.put("/v1/admin/rules", json={"hide": hidden, "out_of_stock": "hide"},
                          headers=admin).status_code == 200
        pages = [page(10, offset) for offset in range(0, 200, 10)]
        assert all(len(p) == 10 for p in pages)  # the pipeline's first 100 rows lose some: it reads deeper
        rows = [p for each in pages for p in each]
        assert len(set(rows)) == 200 and not set(rows) & set(hidden)
        assert page(50, 100) == rows[100:150]  # a row's place does not depend on the page size

        def by_price(k: int, offset: int) -> list[str]:
            body = client.post("/v1/search", json={"query": "garden hose", "k": k, "offset": offset,
                                                   "sort": "price_asc"}).json()
            return [i["product_id"] for i in body["items"]]

        cheapest = by_price(100, 0)  # every page sorts the same 100 shown rows (before: repeats and gaps)
        assert [p for offset in range(0, 100, 10) for p in by_price(10, offset)] == cheapest
        assert client.put("/v1/admin/rules", json={}, headers=admin).status_code == 200
        top = page(100, 0) + page(100, 100)  # the first 200 as ranked without rules: hidden, a block 10 reads deep
        assert client.put("/v1/admin/rules", json={"hide": top}, headers=admin).status_code == 200
        assert page(10, 0) == page(100, 0)[:10] != []  # before: page 1 empty, while later pages had rows
        import datetime as dt

        soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)).isoformat()
        assert client.put("/v1/admin/rules", json={"queries": {"garden hose": {"pin": [rows[150]], "end": soon}}},
                          headers=admin).status_code == 200
        assert page(10, 0)[0] == rows[150] and page(10, 0)[0] == rows[150]  # the second one from the cache
        time.sleep(2)
        assert page(10, 0)[0] != rows[150]  # before: the cached page kept the ended sale's pin for up to 60 s


def test_a_full_spool_disk_costs_searches_their_impression_and_events_a_503(client: TestClient,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    log = client.app.state.stores[client.app.state.default_store].event_log  # type: ignore[attr-defined]

    def full(events, durable: bool = True) -> None:  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(log, "append", full)
    searched = client.post("/v1/search", json={"query": "garden hose", "k": 3})
    assert searched.status_code == 200 and len(searched.json()["items"]) == 3  # answered, impression not logged
    assert 'shoprank_events_total{type="ranking_dropped"}' in client.get("/metrics").text
    sent = client.post("/v1/events", json=[{"event_id": "full-1", "request_id": "r", "type": "click",
                                            "product_id": "P1"}])
    assert sent.status_code == 503 and sent.headers["retry-after"] == "5" and "send it again" in sent.text
    assert sent.headers["connection"] == "close"  # the next try on a new connection, maybe to a ready peer


def test_events_a_failed_fsync_did_not_keep_are_not_in_the_spool(client: TestClient,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import online_learning.event_log as event_log

    log = client.app.state.stores[client.app.state.default_store].event_log  # type: ignore[attr-defined]
    appended = log.appended

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(event_log.os, "fsync", failing)
    sent = client.post("/v1/events", json=[{"event_id": "fsync-1", "request_id": "r", "type": "click",
                                            "product_id": "P1"}])
    monkeypatch.undo()
    assert sent.status_code == 503 and "nothing of this call was accepted" in sent.json()["message"]
    spooled = "".join(p.read_text() for p in log.folder.glob("segment-*.jsonl"))
    assert "fsync-1" not in spooled and log.appended == appended  # before: kept and counted, and shipped


def test_a_shelf_puts_out_of_stock_products_last_whatever_its_length(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    from retrieval.catalog import read_catalog
    from retrieval.embedding_cache import EmbeddingCache
    from retrieval.index import ProductIndex
    from tests.fakes import HashingEncoder

    rows = [{"product_id": f"D{i:03d}", "title": f"cordless drill model {i}", "category": "Tools > Drills",
             "price": 50.0 + i, "in_stock": i >= 40} for i in range(60)]  # the first 40 alike drills out of stock
    rows += [{"product_id": f"H{i:03d}", "title": f"garden hose {i}", "category": "Garden", "price": 20.0,
              "in_stock": True} for i in range(40)]
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    products, _ = read_catalog(tmp_path / "c.csv")
    home = Settings(home=tmp_path / "home", progress=False)
    encoder = HashingEncoder()
    index = ProductIndex.build(tmp_path / "index", products, encoder, home.retrieval,
                               EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim), progress=False)
    with ready_client(app_on(home, index, encoder)) as client:
        def shelf(k: int) -> list[dict]:
            return client.post("/v1/recommend", json={"kind": "similar", "product_ids": ["D059"], "k": k}).json()[
                "items"]

        short, long = shelf(10), shelf(40)
        assert all(i["in_stock"] for i in short)  # before: ten out-of-stock drills, 19 in-stock ones unseen
        assert [i["product_id"] for i in long[:10]] == [i["product_id"] for i in short]


def test_a_client_gone_before_its_body_arrived_is_answered_and_counted(client: TestClient) -> None:
    """The middleware reads every body: a disconnect while it reads is logged like any request, not raised."""
    import asyncio

    app, sent = client.app, []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "path": "/v1/events", "raw_path": b"/v1/events", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "scheme": "http"}
    parts = iter([{"type": "http.request", "body": b'[{"type"', "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> dict:
        return next(parts, {"type": "http.disconnect"})

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # before: starlette's ClientDisconnect out of the application
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
    assert 'route="/v1/events",status="499"' in client.get("/metrics").text


def test_a_search_budget_runs_from_its_arrival_not_from_when_a_thread_took_it(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A search that waited for a worker thread longer than serving.budget_ms reaches its route with its budget
    spent: it may wait for no admission slot (at max_in_flight it is refused at once), and its skippable stages
    are skipped."""
    class Arrived:  # the middleware's clock reads 10 s ago: the time a search queued for a thread
        @staticmethod
        def monotonic() -> float:
            return time.monotonic() - 10.0

        perf_counter = staticmethod(time.perf_counter)
        time = staticmethod(time.time)

    admission = client.app.state.admission  # type: ignore[attr-defined]
    waits: list[float] = []
    enter = admission.enter

    def recording(wait_s=None):  # type: ignore[no-untyped-def]
        waits.append(wait_s)
        return enter(wait_s)

    monkeypatch.setattr(admission, "enter", recording)
    state = client.app.state  # type: ignore[attr-defined]
    budget = state.stores[state.default_store].settings.serving.budget_ms / 1000
    assert client.post("/v1/search", json={"query": "cordless drill", "k": 5}).status_code == 200
    monkeypatch.setattr("api.main.time", Arrived)
    assert client.post("/v1/search", json={"query": "cordless drill hammer", "k": 5}).status_code == 200
    assert 0 < waits[0] <= budget and waits[1] <= budget - 9.0, waits


def test_a_parameter_a_route_does_not_take_and_a_value_of_another_type_are_refused(client: TestClient) -> None:
    """Not an unfiltered list as if the misspelled parameter were not there, nor true read as 1."""
    wrong = client.get("/v1/search", params={"q": "drill", "max-price": "20"})
    assert wrong.status_code == 422 and "max-price: not a parameter of /v1/search; it takes q, k, offset" in \
        wrong.json()["message"], wrong.text
    assert client.get("/v1/search", params={"q": "drill", "max_price": "20"}).status_code == 200
    assert client.get("/v1/search", params={"q": "drill", "_": "1733", "utm_source": "mail"}).status_code == 200
    nameless = client.get("/v1/search?q=drill&=5")  # before: named "body"
    assert nameless.status_code == 422 and nameless.json()["message"].startswith("'': not a parameter of /v1/search")
    assert "limit: not a parameter of /v1/suggest; it takes q, k" in \
        client.get("/v1/suggest", params={"q": "dri", "limit": "3"}).json()["message"]
    for body in ({"query": "drill", "k": True}, {"query": "drill", "k": "5"}, {"query": "drill", "explain": 1},
                 {"query": "drill", "filters": {"min_price": "12"}}, {"query": "drill", "filters": {"in_stock": 1}}):
        refused = client.post("/v1/search", json=body)
        assert refused.status_code == 422, (body, refused.text)
    assert client.post("/v1/search", json={"query": "drill", "k": 5, "filters": {"min_price": 12}}).status_code == 200


def test_an_anonymous_search_goes_by_itself_in_an_experiment_so_its_pages_agree() -> None:
    """Without a user or session id, a search's unit is the search (its text, filters, order), not its request: each
    page of it comes from the same arm and the same interleaving draft, so page 2 neither repeats nor skips."""
    from api.routes.search import _search_unit
    from api.schemas import SearchRequest

    first = SearchRequest(query="drill", k=3, filters={"brand": "Ryobi"})
    assert _search_unit(first) == _search_unit(SearchRequest(query="drill", k=5, offset=3, filters={"brand": "Ryobi"}))
    assert _search_unit(first) != _search_unit(SearchRequest(query="drill", k=3))
    assert _search_unit(first) != _search_unit(SearchRequest(query="drill", k=3, filters={"brand": "Ryobi"},
                                                             sort="price_asc"))


def test_a_filter_of_one_value_or_a_list_is_told_about_what_was_sent(client: TestClient) -> None:
    """Not pydantic's complaint for each of its two readings (a list is allowed, so "should be a valid string"
    for a list is wrong), nor its names for them (constrained-str, list[constrained-str])."""
    listed = client.post("/v1/search", json={"query": "drill", "filters": {"category": [""]}}).json()["message"]
    assert listed == "filters.category.0: String should have at least 1 character (got '')", listed
    number = client.post("/v1/search", json={"query": "drill", "filters": {"brand": 5}}).json()["message"]
    assert number == "filters.brand: Input should be a valid string (got 5)", number
    browse = client.post("/v1/browse", json={"filters": {"category": 5}})
    assert browse.status_code in (422, 503) and "constrained-str" not in browse.text
