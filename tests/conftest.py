"""Shared fixtures: settings in a temporary home, the generated demo store, indexes.

Nothing here reads ../shared: tests run on data the project generates.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.settings import Settings, get_settings  # noqa: E402
from retrieval.catalog import read_catalog  # noqa: E402
from retrieval.embedding_cache import EmbeddingCache  # noqa: E402
from retrieval.index import ProductIndex  # noqa: E402
from simulation.demo import write_demo  # noqa: E402
from tests.fakes import HashingEncoder  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "homedepot"


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifacts home for the session, so the real encoder is exported once."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def settings(session_home: Path) -> Settings:
    return Settings(home=session_home, progress=False)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated demo store: 300 products, 60 judged queries."""
    return write_demo(tmp_path_factory.mktemp("demo"), n_products=300, n_queries=60)


@pytest.fixture(scope="session")
def demo_products(demo_dir: Path) -> pd.DataFrame:
    products, _ = read_catalog(demo_dir / "products.csv")
    return products


@pytest.fixture()
def fake_index(tmp_path: Path, demo_products: pd.DataFrame, settings: Settings) -> ProductIndex:
    """A demo index built with the hashing encoder (fast; for index logic)."""
    encoder = HashingEncoder()
    cache = EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim)
    return ProductIndex.build(tmp_path / "index", demo_products, encoder, settings.retrieval, cache, progress=False)


@pytest.fixture(scope="session")
def real_encoder(settings: Settings):  # type: ignore[no-untyped-def]
    """The bundled MiniLM bi-encoder on ONNX Runtime (what `shoprank serve` uses)."""
    from serving import indexing

    return indexing.open_encoder(settings)


@pytest.fixture(scope="session")
def real_index(settings: Settings, demo_products: pd.DataFrame, real_encoder) -> ProductIndex:  # type: ignore[no-untyped-def]
    from serving import indexing

    return indexing.ensure_index(settings, demo_products, indexing.index_path(settings, real_encoder, "demo"), real_encoder)


@pytest.fixture()
def env_home(monkeypatch: pytest.MonkeyPatch, settings: Settings, real_encoder) -> Path:  # type: ignore[no-untyped-def]
    """The session's home as the CLI sees it (``SHOPRANK_HOME``), with the real encoder exported."""
    yield from _cli_sees(monkeypatch, settings.home)


@pytest.fixture()
def cli_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:  # type: ignore[misc]
    """An empty artifact home of the test's own as the CLI sees it (``SHOPRANK_HOME``)."""
    yield from _cli_sees(monkeypatch, tmp_path / "home")


def _cli_sees(monkeypatch: pytest.MonkeyPatch, home: Path):  # type: ignore[no-untyped-def]
    """``home`` as ``SHOPRANK_HOME``, no progress bars, and the settings read again before and after."""
    monkeypatch.setenv("SHOPRANK_HOME", str(home))
    monkeypatch.setenv("SHOPRANK_PROGRESS", "false")
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def dask_local_client():  # type: ignore[no-untyped-def]
    """A local Dask cluster of 2 worker processes (127.0.0.1, no dashboard), one per test module."""
    from core.compute import dask_client
    from core.service_settings import ComputeSettings

    with dask_client(ComputeSettings(scheduler="local", workers=2)) as client:
        yield client


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the selected pinned real-data runs in the background (tests/pinned_runs.py)."""
    from tests import pinned_runs

    if session.config.option.collectonly:
        return
    pinned_runs.start(item.callspec.params["run"] for item in session.items
                      if item.nodeid.startswith(pinned_runs.TEST_FILE) and hasattr(item, "callspec"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests import pinned_runs

    pinned_runs.stop()
