"""Helpers several test modules share: the CLI in-process, the app over the session's index,
a real `shoprank serve` process, and logged demo-store traffic."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from core.onnx_sessions import bf16_runs
from core.settings import Settings
from online_learning.consumers.base import Delivered
from online_learning.events import (
    INTERACTIONS_TOPIC,
    RANKINGS_TOPIC,
    InteractionEvent,
    RankingEvent,
    ShownItem,
)
from serving.engine import SearchEngine
from serving.loading import open_served
from shoprank.cli import main

DEMO_QUERIES = ["cordless drill", "garden hose", "ceiling fan", "interior paint", "toilet seat", "led light bulb"]

# the bf16 path runs ONNX models on OpenVINO's execution provider, which serves Intel CPUs only
needs_bf16_path = pytest.mark.skipif(not bf16_runs(), reason="the OpenVINO execution provider runs on no CPU here "
                                                             "(it serves Intel CPUs): the bf16 path cannot run")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``shoprank ARGV`` in-process: exit code (argparse's for a bad argument), stdout, stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse refused an argument (exit 2, the message on stderr)
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# a root process gives up its capabilities (Linux): files' modes then bind it as they bind another user
WITHOUT_PRIVILEGES = """
import ctypes, os
if os.geteuid() == 0:
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
    libc, header, data = ctypes.CDLL(None, use_errno=True), Header(0x20080522, 0), (Data * 2)()
    assert libc.capget(ctypes.byref(header), data) == 0
    data[0].effective = data[1].effective = 0
    assert libc.capset(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())
"""


def as_another_user(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Python ``code`` run with ``args`` (``sys.argv[1:]``) in a process that may read, but not write, a file
    or folder made read-only (``chmod 0444`` / ``0555``), as a service user may the files an operator's
    command made: one run by root first gives up its capabilities."""
    return subprocess.run([sys.executable, "-c", WITHOUT_PRIVILEGES + code, *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)


def share_cache(home: Path, settings: Settings) -> Path:
    """``home`` (created) with the session's cache: the exported ONNX encoder and embeddings are reused."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "cache").symlink_to(settings.paths.cache.resolve(), target_is_directory=True)
    return home


def app_on(settings: Settings, index, encoder) -> FastAPI:  # type: ignore[no-untyped-def]
    """The API app serving ``index`` with ``encoder`` (models and experiments from ``settings``' home)."""
    return create_app(settings, loader=lambda s, previous: open_served(s, previous, encoder, index))


@contextmanager
def ready_client(app: FastAPI, **kwargs: object) -> Iterator[TestClient]:
    """A TestClient of ``app`` once ``/readyz`` answers 200 (or 60 s have passed)."""
    with TestClient(app, **kwargs) as client:  # type: ignore[arg-type]
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield client


def start_serve(home: Path, port: int, env: dict[str, str] | None = None, args: tuple[str, ...] = (),
                base_env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen:
    """``python -m shoprank.cli serve`` on 127.0.0.1:``port`` with ``SHOPRANK_HOME=home``, the
    environment ``base_env`` (default: this process's) updated with ``env``."""
    environment = {**(os.environ if base_env is None else base_env), **(env or {}), "SHOPRANK_HOME": str(home),
                   "SHOPRANK_PROGRESS": "false"}
    popen = popen or {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    workers = () if "--workers" in args else ("--workers", "1")  # one process unless the test asks for more
    return subprocess.Popen([sys.executable, "-m", "shoprank.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), *workers, *args], env=environment, **popen)  # type: ignore[call-overload]


def wait_ready(base: str, process: subprocess.Popen, seconds: float = 240) -> httpx.Response:
    """Poll ``base/readyz`` until it answers 200; fails the test if the server exits first."""
    deadline = time.monotonic() + seconds
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
    return ready


def demo_traffic(engine: SearchEngine, searches: int = 300, users: int = 20) -> list[Delivered]:
    """Logged searches of the demo store (seeded): 10 of the hybrid top 30 shown in random order;
    shoppers click products whose title holds the query's last word, less often further down."""
    rng, batch = random.Random(1), []
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(searches):
        query = rng.choice(DEMO_QUERIES)
        shown = engine.hybrid.search(query, 30).product_ids
        rng.shuffle(shown)
        shown = shown[:10]
        request, when = f"r{i}", start + timedelta(minutes=i)
        batch.append(Delivered(RANKINGS_TOPIC, 0, len(batch), RankingEvent(
            event_id=request, request_id=request, timestamp=when, user_id=f"u{i % users}", query=query,
            pipeline="full", items=[ShownItem(product_id=p, position=j + 1) for j, p in enumerate(shown)])))
        for j, product in enumerate(shown):
            relevant = query.split()[-1] in engine.index.title(engine.index.doc_of(product)).lower()
            if relevant and rng.random() < 1.0 / (j + 1):
                batch.append(Delivered(INTERACTIONS_TOPIC, 0, len(batch), InteractionEvent(
                    type="click", event_id=f"c{i}-{j}", request_id=request, timestamp=when, product_id=product,
                    position=j + 1)))
    return batch


def log_daily_searches(root: Path, plan: list[tuple[str, int, int]], seconds_apart: int = 60,
                       experiment: str | None = None) -> None:
    """Logs to the Parquet event log at ``root``, per (shopper, day, searches): that many searches of "drill" by
    the shopper on that day of November 2026, ``seconds_apart``, every third one clicked. Each shows products a,
    b and c (the click on a); with ``experiment``, interleaved: p<n % 7> by the control, q<n % 7> by the
    treatment (the click on the treatment's)."""
    from online_learning.consumers.log_sink import ParquetLogSink

    t0, batch = datetime(2026, 11, 1, tzinfo=UTC), []
    for who, day, count in plan:
        for n in range(count):
            request, when = f"{who}-{day}-{n}", t0 + timedelta(days=day, seconds=seconds_apart * n)
            items = ([ShownItem(product_id=p, position=i + 1) for i, p in enumerate("abc")] if experiment is None
                     else [ShownItem(product_id=f"p{n % 7}", position=1, team="control"),
                           ShownItem(product_id=f"q{n % 7}", position=2, team="treatment")])
            batch.append(Delivered(RANKINGS_TOPIC, 0, len(batch), RankingEvent(
                event_id=request, request_id=request, timestamp=when, user_id=who, query="drill", pipeline="full",
                items=items, **({"experiment": experiment, "arm": "interleaved"} if experiment else {}))))
            if n % 3 == 0:
                clicked = items[-1] if experiment else items[0]
                batch.append(Delivered(INTERACTIONS_TOPIC, 0, len(batch), InteractionEvent(
                    type="click", event_id=f"c-{request}", request_id=request, timestamp=when, user_id=who,
                    product_id=clicked.product_id, position=clicked.position)))
    ParquetLogSink(root)(batch)


def register_ltr(root: Path, scratch: Path, count: int, broken: tuple[int, ...] = (),
                 params: dict[str, object] | None = None) -> list[str]:
    """``count`` tiny LambdaMART versions that load (on features this server fills: bm25, dense) registered in
    the registry at ``root``, the first one active; their versions. The ones at the places ``broken`` names
    (from 0) were broken before they were registered: their files are intact, and they do not load. ``params``:
    their registry entries' (what ``shoprank train ltr`` records)."""
    import numpy as np

    from core.registry import ModelRegistry
    from ranking.lambdamart import LambdaMART, LambdaMARTConfig, RankingData

    registry = ModelRegistry(root)
    x = np.random.default_rng(3).normal(size=(100, 2)).astype(np.float32)
    data = RankingData(x, (x[:, 0] > 0).astype(np.int32), [10] * 10, ["bm25", "dense"])
    versions = []
    for n in range(count):
        folder = scratch / f"ltr-{n}"
        LambdaMART.fit(data, data, LambdaMARTConfig(max_grade=1, min_data_in_leaf=5, max_rounds=3)).save(folder)
        if n in broken:
            (folder / "model.txt").write_text("not a LightGBM model")
        versions.append(registry.register("ltr", folder, base_model="lightgbm", params=params,
                                          activate=n == 0).version)
    return versions
