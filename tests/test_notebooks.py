"""The analyst notebook runs top to bottom on a generated experiment log (slow)."""

from __future__ import annotations

import os
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from online_learning.consumers.base import Delivered
from online_learning.consumers.log_sink import ParquetLogSink
from online_learning.events import (
    INTERACTIONS_TOPIC,
    RANKINGS_TOPIC,
    InteractionEvent,
    RankingEvent,
    ShownItem,
)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def write_experiment_log(root: Path, searches: int = 800, earlier: int = 0) -> None:
    """``searches`` searches, half each arm; the treatment's first ``earlier`` ones served by v9, the rest by v2."""
    rng = random.Random(0)
    sink = ParquetLogSink(root)
    batch = []
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(searches):
        arm = "treatment" if i % 2 else "control"
        when = start + timedelta(minutes=i)
        request = f"r{i}"
        batch.append(Delivered(RANKINGS_TOPIC, 0, len(batch), RankingEvent(
            event_id=request, request_id=request, timestamp=when, user_id=f"u{i}", query="drill",
            pipeline="full", experiment="nb-test", arm=arm, latency_ms=rng.uniform(20, 40),
            models={"ltr": ("v9" if i < earlier else "v2") if arm == "treatment" else "v1"},
            items=[ShownItem(product_id=f"p{j}", position=j + 1) for j in range(5)])))
        if rng.random() < (0.3 if arm == "treatment" else 0.2):
            batch.append(Delivered(INTERACTIONS_TOPIC, 0, len(batch), InteractionEvent(
                type="click", event_id=f"c{i}", request_id=request, timestamp=when, product_id="p0", position=1)))
            if rng.random() < 0.4:
                batch.append(Delivered(INTERACTIONS_TOPIC, 0, len(batch), InteractionEvent(
                    type="purchase", event_id=f"b{i}", request_id=request, timestamp=when, product_id="p0",
                    position=1, revenue=20.0)))
    sink(batch)


def test_ab_review_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_experiment_log(tmp_path / "log")
    monkeypatch.setenv("SHOPRANK_LOG_ROOT", str(tmp_path / "log"))
    monkeypatch.setenv("SHOPRANK_EXPERIMENT", "nb-test")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notebook = nbformat.read(ROOT / "notebooks" / "ab_review.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "800 searches" in outputs
    # the treatment served by v9 before v2: only the searches since its last one count, as in `shoprank promote`
    write_experiment_log(tmp_path / "log2", earlier=200)
    monkeypatch.setenv("SHOPRANK_LOG_ROOT", str(tmp_path / "log2"))
    monkeypatch.setenv("SHOPRANK_VERSIONS", '{"control": "v1", "treatment": "v2"}')
    notebook = nbformat.read(ROOT / "notebooks" / "ab_review.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "600 searches" in outputs  # those after v9's last (search 199), both arms
    assert any(word in outputs for word in ("promote", "continue", "reject"))


def test_the_notebook_names_the_test_the_package_runs() -> None:
    """online_learning.stats.clustered_means is Student's t on the smaller arm's shoppers less one, not a z-test."""
    notebook = nbformat.read(ROOT / "notebooks" / "ab_review.ipynb", as_version=4)
    text = " ".join(c.source for c in notebook.cells if c.cell_type == "markdown").replace("\n", " ")
    assert "z-test" not in text and "Student's t-test" in text and "smaller arm's shoppers less one" in text


def _run_until_searches(monkeypatch: pytest.MonkeyPatch, **environ: str) -> dict:  # type: ignore[type-arg]
    """The notebook's first two code cells (settings, then the searches), in this process: its namespace."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(ROOT / "notebooks" / "ab_review.ipynb", as_version=4)
    namespace: dict = {}  # type: ignore[type-arg]
    for source in [c.source for c in notebook.cells if c.cell_type == "code"][:2]:
        exec(compile(source, "ab_review.ipynb", "exec"), namespace)
    return namespace


def test_the_notebook_stops_on_a_log_without_the_experiment_or_arm(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A mistyped experiment or arm stops at the searches with an error naming it (before: a KeyError cells
    later, or figures of an arm no search has); by default the notebook reads the artifact home's log."""
    from core.errors import InvalidInput
    from core.settings import get_settings

    write_experiment_log(tmp_path / "log", searches=40)
    log = {"SHOPRANK_LOG_ROOT": str(tmp_path / "log")}
    assert len(_run_until_searches(monkeypatch, **log, SHOPRANK_EXPERIMENT="nb-test")["table"]) == 40
    with pytest.raises(InvalidInput, match=r"TREATMENT 'treatmnet' is not an arm of experiment 'nb-test'; its "
                                           r"logged arms are \['control', 'treatment'\]"):
        _run_until_searches(monkeypatch, **log, SHOPRANK_TREATMENT="treatmnet")
    monkeypatch.delenv("SHOPRANK_TREATMENT")
    with pytest.raises(InvalidInput, match="no logged searches of experiment 'nb-tset' in .*log"):
        _run_until_searches(monkeypatch, **log, SHOPRANK_EXPERIMENT="nb-tset")
    monkeypatch.delenv("SHOPRANK_LOG_ROOT")
    monkeypatch.delenv("SHOPRANK_STORE", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(InvalidInput, match=f"in {re.escape(str((tmp_path / 'home' / 'event_log').resolve()))}:"):
            _run_until_searches(monkeypatch, SHOPRANK_HOME=str(tmp_path / "home"), SHOPRANK_EXPERIMENT="nb-test")
    finally:
        monkeypatch.delenv("SHOPRANK_HOME")
        get_settings.cache_clear()
