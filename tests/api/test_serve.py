"""`shoprank serve` as users start it: a real uvicorn process on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from online_learning.local_broker import free_port

pytestmark = pytest.mark.integration


def test_serve_builds_the_demo_index_and_answers(tmp_path: Path, settings: Settings, real_index) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    # share the session's exported ONNX encoder and embedding cache; the demo index is built fresh
    (home / "cache").symlink_to(settings.paths.cache.resolve(), target_is_directory=True)
    env = {**os.environ, "SHOPRANK_HOME": str(home), "SHOPRANK_PROGRESS": "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "shoprank.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        ready = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"server exited: {process.stdout.read() if process.stdout else ''}")
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert ready is not None and ready.status_code == 200, ready.text if ready else "no answer"
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
