"""A second bi-encoder in the first stage (``retrieval.second_encoder``), with real models on ONNX Runtime:
the bundled MiniLM and a tiny random MPNet made here, through the index build, the server's engine, the
catalog writes of the CLI and ``shoprank evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInput, NotFound
from core.settings import Settings
from retrieval.encoder import EnsembleEncoder
from retrieval.hybrid import DenseRetriever
from retrieval.index import ProductIndex, product_texts
from serving import indexing
from serving.engine import assemble
from serving.recommendations import similar
from tests.helpers import run_cli
from tests.retrieval.test_encoder import tiny_model
from tests.retrieval.test_ensemble import ROWS, caches, catalog, models, searched_vectors


@pytest.fixture(scope="module")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("second") / "model", "mpnet", "mean")


def test_the_served_dense_score_is_the_first_cosine_plus_the_weighted_second(
        tmp_path: Path, second_model: Path, demo_products: pd.DataFrame) -> None:
    settings = Settings(home=tmp_path / "home", progress=False,
                        retrieval={"second_encoder": str(second_model), "second_encoder_weight": 0.7})
    encoder = indexing.served_encoder(settings)
    assert isinstance(encoder, EnsembleEncoder) and encoder.dim == 384 + 32
    alone = indexing.served_encoder(Settings(home=tmp_path / "home", progress=False))
    assert encoder.parts[0] is alone  # one MiniLM per process, whatever it is served with
    index = indexing.open_index(settings, encoder, demo_products)
    assert index.path.name == encoder.fingerprint == f"{alone.fingerprint}+{encoder.parts[1].fingerprint}"
    for part in encoder.parts:  # each model's vectors in its own cache, as its own index would read them
        assert settings.paths.embeddings(part.fingerprint).is_file()

    engine = assemble(index, encoder, settings)
    query = "cordless drill"
    result = engine.search(query, 20, pipeline="hybrid")
    assert result.analysis is not None and len(result.candidates.docs) == 20
    searched = result.analysis.text  # what the dense search encoded
    texts = product_texts(index.products.iloc[result.candidates.docs])
    expected = [part.encode(texts) @ part.encode([searched])[0] for part in encoder.parts]
    np.testing.assert_allclose(result.candidates.scores["dense"], expected[0] + 0.7 * expected[1], atol=2e-3)


def second(settings: Settings, spec: str) -> Settings:
    return settings.model_copy(update={"retrieval": settings.retrieval.model_copy(update={"second_encoder": spec})})


def test_the_same_model_twice_is_refused_by_name(settings: Settings) -> None:
    with pytest.raises(InvalidInput, match=r"retrieval.second_encoder 'minilm' is the same model as encoder"):
        indexing.open_encoder(second(settings, "minilm"))


def test_the_cli_indexes_writes_and_evaluates_with_two_models(
        cli_home: Path, second_model: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHOPRANK_RETRIEVAL__SECOND_ENCODER", str(second_model))
    code, out, err = run_cli(capsys, "index", "--catalog", str(demo_dir / "products.csv"), "--name", "two")
    assert code == 0, err
    extra = demo_dir.parent / "extra.csv"
    extra.write_text("product_id,title\nNEW1,tiny second model test widget\n")
    code, out, err = run_cli(capsys, "index", "--catalog", str(extra), "--name", "two", "--upsert")
    assert code == 0, err
    (build,) = (cli_home / "indexes" / "two").glob("*+*/manifest.json")
    manifest = json.loads(build.read_text())
    assert manifest["dim"] == 384 + 32 and manifest["count"] == 301
    code, out, err = run_cli(capsys, "evaluate", "--dataset", str(demo_dir), "--mode", "retrieval",
                             "--pipeline", "dense", "--json")
    assert code == 0, err
    assert json.loads(out)["recall@100"] > 0


@pytest.mark.parametrize("weight", [0.5, 4.0])
def test_similar_products_weigh_the_second_model_as_a_search_does(tmp_path: Path, settings: Settings,
                                                                  weight: float) -> None:
    first, second = models()
    encoder = EnsembleEncoder(first, second, weight)
    index = ProductIndex.build(tmp_path / "index", catalog(ROWS), encoder, settings.retrieval,
                               caches(tmp_path, first, second), progress=False)
    searched = searched_vectors(index)
    similar(index, [0, 2], 3, scale=DenseRetriever(index, encoder).scale)
    centre = np.asarray(index.dense.vectors[[0, 2]]).mean(axis=0) * encoder.query_scale
    # before: the seeds' mean vector unweighted, the second model's cosine counted at 1 whatever the weight
    np.testing.assert_allclose(searched[0][0], centre / np.linalg.norm(centre), atol=1e-6)


def test_cross_fitting_with_a_second_encoder_is_refused_by_name(
        env_home: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHOPRANK_RETRIEVAL__SECOND_ENCODER", "biencoder:v1")
    code, _, err = run_cli(capsys, "train", "ltr", "--dataset", str(demo_dir), "--fold-encoders",
                           "biencoder:v1,biencoder:v2")
    assert code != 0 and "retrieval.second_encoder 'biencoder:v1' would build every fold's lists" in err


def test_a_second_encoder_that_is_not_there_is_named_as_the_setting_before_any_model_loads(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[Path] = []
    monkeypatch.setattr(indexing, "load_encoder", lambda folder, *_: loaded.append(folder))
    with pytest.raises(NotFound, match=r"retrieval.second_encoder 'biencoder:v9': "):
        indexing.open_encoder(second(settings, "biencoder:v9"))
    assert loaded == []  # the first model (an ONNX export on first use) is not loaded for nothing
