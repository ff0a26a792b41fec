"""`shoprank serve` as users start it: a real uvicorn process on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from online_learning.local_broker import free_port
from tests.helpers import share_cache, start_serve, wait_ready

pytestmark = pytest.mark.integration


def test_serve_builds_the_demo_index_and_answers(tmp_path: Path, settings: Settings, real_index) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    # share the session's exported ONNX encoder and embedding cache; the demo index is built fresh
    home = share_cache(tmp_path / "home", settings)
    process = start_serve(home, port)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, process)
        response = httpx.post(f"{base}/v1/search", json={"query": "ceiling fan", "k": 3}, timeout=10)
        assert response.status_code == 200
        assert len(response.json()["items"]) == 3
        assert response.json()["index"]["products"] == 2000  # the generated demo store
        assert (home / "demo" / "products.csv").is_file()
        assert len(list((home / "indexes" / "default").glob("*/manifest.json"))) == 1
        bad = httpx.post(f"{base}/v1/search", json={"query": "fan", "k": 500}, timeout=10)
        assert bad.status_code == 422 and "k:" in bad.json()["message"]
    finally:
        process.terminate()
        process.wait(timeout=30)
