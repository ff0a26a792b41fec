"""The pinned real-data runs of benchmarks/expected.yaml, started early at the lowest CPU priority.

Encoding the 54,667 Home Depot products with the bundled bi-encoder is the costliest work of
the suite (10-17 min of both cores on a 2-core machine without VNNI). The rest of the suite
leaves cores idle for long stretches (servers, brokers and clusters starting, network waits),
so when collection ends, :func:`start` runs the selected pinned commands one after the other
in a background thread, each as a ``shoprank`` child process under ``nice 19``: they take only
the cycles the other tests leave. ``tests/test_expected.py`` then waits for its run's output
and checks the figures. Nothing is faked: each command is the pinned command line, run as a
user runs it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = yaml.safe_load((ROOT / "benchmarks" / "expected.yaml").read_text())
TEST_FILE = "tests/test_expected.py"


def home() -> Path:
    """The artifact home the pinned runs use: ``SHOPRANK_HOME`` or the repository's ``artifacts/``."""
    return Path(os.environ.get("SHOPRANK_HOME", str(ROOT / "artifacts")))


def missing_models(run: dict, where: Path) -> list[str]:
    """The ``role:version`` models a run needs that the registry under ``where`` lacks."""
    def registered(model: str) -> bool:
        role, _, version = model.partition(":")
        return (where / "models" / role / version / "manifest.json").is_file()

    return [m for m in run.get("requires", []) if not registered(m)]


@dataclass
class Outcome:
    """What one pinned command did: exit status, stdout (the JSON figures), stderr, seconds."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    niced: bool

    def figures(self) -> dict[str, float]:
        if self.returncode != 0:
            raise AssertionError(f"exit status {self.returncode}; stderr ends:\n{self.stderr[-3000:]}")
        return json.loads(self.stdout)


def command(run: dict) -> list[str]:
    """The run's command line with the dataset path resolved and ``shoprank`` as this
    environment's entry point."""
    argv = shlex.split(run["command"].replace("../shared/data/homedepot", str(SHARED_DATA)))
    if argv[0] != "shoprank":
        raise ValueError(f"pinned command {run['command']!r} does not start with 'shoprank'")
    script = Path(sys.executable).with_name("shoprank")
    entry = [str(script)] if script.is_file() else [sys.executable, "-m", "shoprank.cli"]
    return entry + argv[1:]


def execute(run: dict, where: Path, niced: bool = False,
            on_start: Callable[[subprocess.Popen], None] | None = None) -> Outcome:
    """Run one pinned command in a child process against the home ``where``."""
    env = dict(os.environ, SHOPRANK_HOME=str(where), SHOPRANK_PROGRESS="false")
    env.update({name: str(value) for name, value in run.get("env", {}).items()})
    started = time.perf_counter()
    with subprocess.Popen(command(run), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=ROOT, preexec_fn=(lambda: os.nice(19)) if niced else None) as child:
        if on_start is not None:
            on_start(child)
        stdout, stderr = child.communicate()
    return Outcome(child.returncode, stdout, stderr, time.perf_counter() - started, niced)


@dataclass
class Background:
    """Pinned runs executing one after the other in a daemon thread (the first builds the
    evaluation index the next ones reuse)."""

    runs: list[dict]
    where: Path
    outcomes: dict[str, Outcome] = field(default_factory=dict, init=False)
    finished: dict[str, threading.Event] = field(init=False)
    child: subprocess.Popen | None = field(default=None, init=False)
    stopping: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.finished = {run["name"]: threading.Event() for run in self.runs}
        threading.Thread(target=self._work, name="pinned-runs", daemon=True).start()

    def _work(self) -> None:
        for run in self.runs:
            try:
                if self.stopping:
                    raise RuntimeError("the test session ended first")
                self.outcomes[run["name"]] = execute(run, self.where, niced=True, on_start=self._started)
            except Exception as error:  # noqa: BLE001 - reported by the test that waits for it
                self.outcomes[run["name"]] = Outcome(-1, "", repr(error), 0.0, True)
            finally:
                self.finished[run["name"]].set()

    def _started(self, child: subprocess.Popen) -> None:
        self.child = child
        if self.stopping:
            child.terminate()

    def stop(self) -> None:
        """End the run in progress and skip the rest (the session is over)."""
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()

    def wait(self, name: str, timeout: float) -> Outcome | None:
        """The run's outcome once it is done; None when it was not started here."""
        if name not in self.finished:
            return None
        if not self.finished[name].wait(timeout):
            raise TimeoutError(f"pinned run {name!r} still running after {timeout:.0f} s")
        return self.outcomes[name]


_background: Background | None = None


def start(selected: Iterable[dict]) -> Background | None:
    """Start the selected pinned runs that can run here (shared data present, models
    registered) in the background; called once collection knows which tests will run."""
    global _background
    where = home()
    runs = [run for run in selected if SHARED_DATA.is_dir() and not missing_models(run, where)]
    if runs and _background is None and os.environ.get("SHOPRANK_PINNED_BACKGROUND", "1") != "0":
        _background = Background(runs, where)
    return _background


def stop() -> None:
    """End what is still running in the background (called when the session finishes)."""
    if _background is not None:
        _background.stop()


def outcome(run: dict, timeout: float) -> Outcome:
    """The run's outcome: from the background when it was started there, else run now."""
    done = _background.wait(run["name"], timeout) if _background is not None else None
    return done if done is not None else execute(run, home())
