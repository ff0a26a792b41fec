"""Re-run the pinned evaluation commands of benchmarks/expected.yaml on the real data.

Slow (the first run encodes 54,667 products: 5-17 min of both cores on a 2-core machine)
and skipped when ../shared/data is absent. The commands start in the background when
collection ends, at the lowest CPU priority (tests/pinned_runs.py), so most of that work is
done in the time the rest of the suite leaves the cores idle; each test here waits for its
command's output. Each figure must match within the file's tolerance and reach its target,
so a regression or a stale pin both fail.
"""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_DATA
from tests.pinned_runs import EXPECTED, home, missing_models, outcome

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2400),  # the first run encodes the whole catalog (5-17 min alone, more when shared)
    pytest.mark.shared_data,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data/homedepot is absent"),
]


@pytest.mark.parametrize("run", [r for r in EXPECTED["runs"] if r.get("test")], ids=lambda r: r["name"])
def test_pinned_figures(run: dict) -> None:
    missing = missing_models(run, home())
    if missing:
        pytest.skip(f"needs trained model(s) {missing} in {home()}/models (built by `shoprank train ...`, see docs/models.md)")
    done = outcome(run, timeout=2300)
    result = done.figures()
    tolerance = run.get("tolerance", EXPECTED["tolerance"])
    for metric, expected in run["expected"].items():
        assert result[metric] == pytest.approx(expected, abs=tolerance), f"{metric}: {result[metric]} vs pinned {expected}"
    for metric, target in run.get("targets", {}).items():
        assert result[metric] >= target, f"{metric}={result[metric]} misses the target {target}"
