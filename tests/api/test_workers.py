"""Several server processes (`shoprank serve --workers 2`): a swap through one reaches every one,
and /metrics, whichever answers, counts the searches of both and merges their live figures."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from core.registry import ModelRegistry
from core.settings import Settings
from online_learning.local_broker import free_port
from tests.api.test_operations import tiny_reranker
from tests.helpers import share_cache, start_serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "w0rkers"


def ready_states(base: str, wanted: int, seconds: float) -> dict[int, dict[str, str]]:
    """Served versions per process id, read through /readyz until ``wanted`` processes answered."""
    seen: dict[int, dict[str, str]] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(seen) < wanted:
        try:
            response = httpx.get(f"{base}/readyz", timeout=5)  # a new connection each time
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        if response.status_code == 200:
            body = response.json()
            seen[body["pid"]] = body["versions"]
        else:
            time.sleep(0.2)
    return seen


def test_a_swap_through_one_process_reaches_every_process(tmp_path: Path, settings: Settings, real_index) -> None:  # type: ignore[no-untyped-def]
    home = share_cache(tmp_path / "home", settings)
    registry = ModelRegistry(home / "models")
    for seed in (1, 2):
        registry.register("reranker", tiny_reranker(tmp_path / f"m{seed}", seed), base_model="minilm")
    registry.activate("reranker", "v1")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    process = start_serve(home, port, {"SHOPRANK_API__ADMIN_TOKEN": TOKEN, "SHOPRANK_SERVING__RELOAD_POLL_S": "0.5"},
                          ("--workers", "2"), stdout=log, stderr=subprocess.STDOUT)
    try:
        before = ready_states(base, 2, 240)
        assert len(before) == 2, f"expected 2 server processes, saw {before}; log: {tmp_path / 'serve.log'}"
        assert all(v.get("reranker") == "v1" for v in before.values())
        swapped = httpx.post(f"{base}/v1/admin/models/reranker/activate", json={"version": "v2"},
                             headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert swapped.status_code == 200 and swapped.json()["served"]["reranker"] == "v2"
        started = time.monotonic()
        while time.monotonic() - started < 10:
            after = ready_states(base, 2, 5)
            if len(after) == 2 and all(v.get("reranker") == "v2" for v in after.values()):
                break
            time.sleep(0.2)
        assert len(after) == 2 and all(v.get("reranker") == "v2" for v in after.values()), after
        searched = httpx.get(f"{base}/v1/search", params={"q": "cordless drill", "k": 5}, timeout=30)
        assert searched.status_code == 200 and searched.json()["versions"]["reranker"] == "v2"
        searches, pids = 1, set()
        while len(pids) < 2 and searches < 60:  # new connections until both processes answered one
            answer = httpx.get(f"{base}/v1/search", params={"q": "hammer", "k": 5}, timeout=30)
            assert answer.status_code == 200
            pids.add(answer.headers["x-served-by"].rsplit(":", 1)[1])
            assert answer.headers["x-served-by"].split(":")[-2] == base.rsplit(":", 1)[1]  # the port it serves
            searches += 1
        assert len(pids) == 2, f"every search went to one process: {pids}"
        for _ in range(3):
            text = httpx.get(f"{base}/metrics", timeout=10).text
            counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                          if line.startswith("shoprank_searches_total{"))
            assert counted == searches, f"/metrics counted {counted} searches of {searches}"
        deadline, merged = time.monotonic() + 10, {}
        while time.monotonic() < deadline:  # live figures: each process writes its own once a second
            lines = [line for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines()
                     if line and not line.startswith("#")]
            merged = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}
            lookups = sum(merged.get(f'shoprank_cache_lookups_total{{cache="results",result="{r}"}}', 0)
                          for r in ("hit", "miss"))
            if merged.get("shoprank_server_processes") == 2 and lookups == searches:
                break
            time.sleep(0.5)
        assert merged.get("shoprank_server_processes") == 2, merged
        assert lookups == searches, f"/metrics merged {lookups} results-cache lookups of {searches} searches"
        assert merged.get("shoprank_ready") == 1
        # a process that dies is started again; its peer serves the port while it loads: nobody gets a 503
        os.kill(int(pids.pop()), signal.SIGKILL)
        answers, fresh, deadline = [], set(), time.monotonic() + 60
        while time.monotonic() < deadline and not fresh - pids:
            answer = httpx.get(f"{base}/v1/search", params={"q": "hammer", "k": 5}, timeout=30)
            answers.append(answer.status_code)
            fresh.add(answer.headers["x-served-by"].rsplit(":", 1)[1])
        assert fresh - pids, f"no new process answered in 60 s: {fresh}"
        assert set(answers) == {200}, f"answers while the new process loaded: {sorted(set(answers))}"
        # a rolling restart (SIGHUP): each old process retired once its successor has loaded; nobody gets a 503
        serving = set(fresh)  # the processes answering now
        process.send_signal(signal.SIGHUP)
        answers, after, deadline = [], set(), time.monotonic() + 120
        while time.monotonic() < deadline and len(after - serving) < 2:
            answer = httpx.get(f"{base}/v1/search", params={"q": "hammer", "k": 5}, timeout=30)
            answers.append(answer.status_code)
            after.add(answer.headers["x-served-by"].rsplit(":", 1)[1])
        assert len(after - serving) == 2, f"the restart did not replace both processes: {after}"
        assert set(answers) == {200}, f"answers during the rolling restart: {sorted(set(answers))}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    spools = sorted(p.name for p in (home / "event_spool").iterdir() if p.is_dir())
    # one spool folder per process; a restart's successor takes a free one while its predecessor holds its own
    assert spools[:2] == ["slot-0", "slot-1"] and len(spools) <= 4
