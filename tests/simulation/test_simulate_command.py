"""`shoprank simulate` from the shell: a bad --base-url, a run in which no search succeeded and attack
options without a product end in one error line and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from simulation.world import WorldConfig, build_world
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, demo_products: pd.DataFrame) -> Path:
    """An artifact home with a SIMULATED world of the demo store."""
    folder = tmp_path_factory.mktemp("simulate_home")
    vectors = np.random.default_rng(0).normal(size=(len(demo_products), 16)).astype(np.float32)
    build_world(demo_products, vectors, WorldConfig(categories=6, departments=2, users=20)).save(folder / "world")
    return folder


def simulate(capsys: pytest.CaptureFixture[str], home: Path, demo_dir: Path, *argv: str) -> tuple[int, str, str]:
    return run_cli(capsys, "--home", str(home), "--no-progress", "simulate", "--dataset", str(demo_dir), *argv)


def test_a_base_url_without_its_scheme_is_refused(home: Path, demo_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for url in ("localhost:8000", "127.0.0.1:8000", "ftp://shop", "http://"):
        code, out, err = simulate(capsys, home, demo_dir, "--base-url", url)
        assert code == 2 and out == "", (url, out)
        assert f"--base-url {url!r} is not an http:// or https:// URL" in err and "Traceback" not in err, err


def test_a_run_in_which_no_search_succeeded_fails(home: Path, demo_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A server out of reach: every search fails (before: exit 0, a report of 0 searches)."""
    code, out, err = simulate(capsys, home, demo_dir, "--base-url", "http://127.0.0.1:9", "--sessions", "3")
    assert code == 2 and out == ""
    assert "none of the 3 simulated searches succeeded at --base-url http://127.0.0.1:9" in err
    assert "ConnectError" in err and "Traceback" not in err


def test_attack_options_need_the_attacked_product(home: Path, demo_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Before: --attack-query/--attack-bots/--attack-searches without --attack-product ran no attack, silently."""
    for argv, named in [(["--attack-query", "garden hose"], "--attack-query"),
                        (["--attack-bots", "5"], "--attack-bots"),
                        (["--attack-searches", "0"], "--attack-searches"),
                        (["--attack-query", "x", "--attack-bots", "1"], "--attack-query, --attack-bots")]:
        code, out, err = simulate(capsys, home, demo_dir, *argv)
        assert code == 2 and f"{named} without --attack-product" in err and "Traceback" not in err, (argv, err)
    code, _, err = simulate(capsys, home, demo_dir, "--attack-product", "P1")
    assert code == 2 and "--attack-product needs at least one --attack-query" in err


def test_an_attack_runs_with_its_default_size(home: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Options left out: one bot and 300 searches, beside the honest sessions."""
    import simulation.simulator

    requests = iter(range(10**6))

    def shop(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events":
            return httpx.Response(202, json={})
        return httpx.Response(200, json={"request_id": f"r{next(requests)}", "items": [{"product_id": "P100001"}]})

    real = httpx.Client
    monkeypatch.setattr(simulation.simulator.httpx, "Client",
                        lambda **kw: real(transport=httpx.MockTransport(shop), **kw))
    code, out, err = simulate(capsys, home, demo_dir, "--sessions", "4", "--attack-product", "P100001",
                              "--attack-query", "garden hose")
    assert code == 0, err
    report = json.loads(out)
    assert report["overall"]["searches"] == 4
    assert report["attack"]["bots"] == 1 and report["attack"]["searches"] == 300
