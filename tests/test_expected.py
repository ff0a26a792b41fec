"""Re-run the pinned evaluation commands of benchmarks/expected.yaml on the real data.

Slow (the first run encodes 54,667 products, ~5-7 min on 2 cores) and skipped
when ../shared/data is absent. Each figure must match within the file's
tolerance and reach its target, so a regression or a stale pin both fail.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import yaml

from core.settings import get_settings
from shoprank.cli import main
from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = yaml.safe_load((ROOT / "benchmarks" / "expected.yaml").read_text())

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2400),  # the first run encodes the whole catalog (5-7 min alone, far more when shared)
    pytest.mark.shared_data,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data/homedepot is absent"),
]


@pytest.mark.parametrize("run", [r for r in EXPECTED["runs"] if r.get("test")], ids=lambda r: r["name"])
def test_pinned_figures(run: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    argv = shlex.split(run["command"].replace("../shared/data/homedepot", str(SHARED_DATA)))
    assert argv[0] == "shoprank"
    home = Path(os.environ.get("SHOPRANK_HOME", str(ROOT / "artifacts")))
    missing = [m for m in run.get("requires", []) if not _registered(home, m)]
    if missing:
        pytest.skip(f"needs trained model(s) {missing} in {home}/models (built by `shoprank train ...`, see docs/models.md)")
    monkeypatch.setenv("SHOPRANK_HOME", str(home))
    for name, value in run.get("env", {}).items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("SHOPRANK_PROGRESS", "false")
    get_settings.cache_clear()
    try:
        assert main(argv[1:]) == 0
    finally:
        get_settings.cache_clear()
    result = json.loads(capsys.readouterr().out)
    tolerance = run.get("tolerance", EXPECTED["tolerance"])
    for metric, expected in run["expected"].items():
        assert result[metric] == pytest.approx(expected, abs=tolerance), f"{metric}: {result[metric]} vs pinned {expected}"
    for metric, target in run.get("targets", {}).items():
        assert result[metric] >= target, f"{metric}={result[metric]} misses the target {target}"


def _registered(home: Path, model: str) -> bool:
    """``role:version`` (e.g. ``reranker:v1``) is in the model registry under ``home``."""
    role, _, version = model.partition(":")
    return (home / "models" / role / version / "manifest.json").is_file()
