"""Helpers shared by the benchmark scripts: timing summaries, memory, hardware line, a server's engine."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil

from core.hardware import describe

if TYPE_CHECKING:
    import pandas as pd

    from core.settings import Settings
    from serving.engine import SearchEngine


def hardware() -> str:
    """CPU (model, cores, fast-path flags, int8 path) and memory, for every benchmark's output."""
    mem = psutil.virtual_memory().total / 2**30
    return f"{describe()}, {mem:.0f} GiB RAM"


def command() -> str:
    """The command that produced a benchmark's figures, for its output beside :func:`hardware`."""
    return " ".join(["python", *sys.argv])


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {f"p{p}": round(float(np.percentile(ms, p)), 2) for p in (50, 95, 99)} | {
        "mean": round(float(ms.mean()), 2)}


def time_each(items: Sequence, fn: Callable, warmup: int = 10,
              before: Callable[[], object] | None = None) -> list[float]:
    """Seconds of ``fn(item)`` for every item, after ``fn`` ran on the first ``warmup`` items untimed.
    ``before``: run before each call, outside the timer; pass one that empties whatever ``fn`` keeps
    (e.g. :func:`empty_caches`), or the warm-up's items are timed as cache hits."""
    for item in items[:warmup]:
        fn(item)
    out = []
    for item in items:
        if before is not None:
            before()
        started = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - started)
    return out


def empty_caches(engine: SearchEngine) -> None:
    """Forget the results, first-stage lists, cross-encoder scores and query vectors ``engine`` keeps in
    memory, so that its next search is cold (a query no search has seen: it is encoded again). Call it
    outside the timer; an engine with a score store (``serving.score_store``) still reads the store."""
    engine.clear_caches()
    if engine.caches.query_vectors is not None:
        engine.caches.query_vectors.clear()


def rss_gib() -> float:
    return round(psutil.Process().memory_info().rss / 2**30, 2)


def peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def wait_ready(base: str, timeout: float = 900) -> None:
    """Wait until the API at ``base`` answers /readyz with 200 (a cold start encodes the catalog), then until
    every one of its processes is ready (``shoprank_ready 1`` in /metrics): /readyz answers for the process
    that takes the call, and a search sent to a process still loading gets a 503."""
    import httpx

    from shoprank.layout import wait_ready as until_ready

    started = time.monotonic()
    until_ready(base, timeout, what=f"the API at {base}", poll=1.0)
    while time.monotonic() - started < timeout:
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        if any(line.split()[-1] in ("1", "1.0") for line in metrics.splitlines() if line.startswith("shoprank_ready")):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the API at {base} had not every process ready after {timeout:.0f} s")


class ShoprankProcess:
    """A ``shoprank`` CLI command run as a child process (a server or a consumer), its output in ``log``;
    ``sample()`` tracks its peak RSS."""

    def __init__(self, name: str, args: list[str], env: dict, log: Path) -> None:
        self.name = name
        self.handle = open(log, "ab")  # noqa: SIM115
        self.popen = subprocess.Popen([sys.executable, "-m", "shoprank.cli", "--no-progress", *args], env=env,
                                      stdout=self.handle, stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.popen.pid)
        self.peak_rss = 0

    def sample(self) -> None:
        try:
            self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)
        except psutil.Error:
            pass

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
        self.handle.close()


def served_engine(settings: Settings, products: pd.DataFrame) -> SearchEngine:
    """The engine over ``products`` as a server has it once started: every product's store rows read
    (a server reads them in the background; here before anything is timed) and the facts built."""
    from serving.loading import open_engine, warm_store_features

    engine = open_engine(settings, products, warm_features=False)
    if engine.models.features is not None:
        warm_store_features(engine)
    return engine

