"""A replica whose home is empty serves what the artifact store holds, and follows its swaps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.registry import ModelRegistry
from core.settings import Settings
from online_learning.local_broker import free_port
from ranking.rules import QueryRule, RulesConfig
from serving.indexing import build_index_in_child
from tests.api.test_operations import tiny_reranker
from tests.helpers import share_cache, start_serve, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def shoprank(home: Path, *argv: str) -> None:
    env = {**os.environ, "SHOPRANK_HOME": str(home), "SHOPRANK_PROGRESS": "false", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "shoprank.cli", *argv], env=env, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_replica_serves_from_the_store_and_follows_its_swaps(tmp_path: Path, settings: Settings, real_index) -> None:  # type: ignore[no-untyped-def]
    url = f"file://{tmp_path / 'store'}"
    source = share_cache(tmp_path / "source", settings)  # where the index is built and models trained
    registry = ModelRegistry(source / "models")
    for seed in (1, 2):
        registry.register("reranker", tiny_reranker(tmp_path / f"m{seed}", seed), base_model="minilm")
    registry.activate("reranker", "v1")
    build_index_in_child({**os.environ, "SHOPRANK_HOME": str(source), "SHOPRANK_PROGRESS": "false"})
    shoprank(source, "artifacts", "push", "--url", url)
    replica = share_cache(tmp_path / "replica", settings)  # the exported encoder only: no index, no models
    port = free_port()
    process = start_serve(replica, port, {"SHOPRANK_ARTIFACTS_URL": url, "SHOPRANK_SERVING__RELOAD_POLL_S": "0.5"})
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_ready(base, process).json()["versions"]["reranker"] == "v1"
        body = httpx.get(f"{base}/v1/search", params={"q": "cordless drill"}, timeout=30).json()
        built = json.loads(next((source / "indexes" / "default").glob("*/manifest.json")).read_text())
        assert body["index"]["catalog_hash"] == built["catalog_hash"] and body["versions"]["reranker"] == "v1"
        assert not (replica / "demo").exists()  # it built nothing: no catalog was generated or indexed
        shoprank(source, "models", "activate", "reranker", "v2")
        published = time.monotonic()  # the push's own start-up (a CLI process) counts in the figure
        shoprank(source, "artifacts", "push", "--url", url, "--state-only")
        while time.monotonic() - published < 10:
            if httpx.get(f"{base}/readyz", timeout=5).json()["versions"].get("reranker") == "v2":
                break
            time.sleep(0.2)
        seconds = time.monotonic() - published
        assert httpx.get(f"{base}/readyz", timeout=5).json()["versions"]["reranker"] == "v2", "no swap within 10 s"
        print(f"replica on v2 {seconds:.1f}s after `shoprank artifacts push` started")
        # business rules saved on the source (as PUT /v1/admin/rules saves them) travel with the state
        RulesConfig(queries={"cordless drill": QueryRule(redirect="/drills")}).save(source / "rules" / "rules.yaml")
        shoprank(source, "artifacts", "push", "--url", url, "--state-only")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and httpx.get(f"{base}/v1/search", params={"q": "Cordless Drill"},
                                                        timeout=30).json()["redirect"] is None:
            time.sleep(0.2)
        assert httpx.get(f"{base}/v1/search", params={"q": "cordless drill"}, timeout=30).json()["redirect"] == \
            "/drills"
    finally:
        process.terminate()
        process.wait(timeout=30)
