"""Loading a served engine: it is ready once its store features are in memory, within a bound."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

from serving.loading import wait_for_store_features


def engine_reading(release: threading.Event) -> SimpleNamespace:
    """An engine whose background read of the store features ends when ``release`` is set."""
    warming = threading.Thread(target=release.wait, daemon=True)
    warming.start()
    return SimpleNamespace(models=SimpleNamespace(features=SimpleNamespace(warming=warming)))


def test_ready_once_the_store_features_are_read_or_after_the_bound() -> None:
    release = threading.Event()
    engine = engine_reading(release)
    started = time.perf_counter()
    assert wait_for_store_features(engine, 0.2) is False  # still reading: served anyway after the bound
    assert 0.2 <= time.perf_counter() - started < 2
    threading.Timer(0.1, release.set).start()
    assert wait_for_store_features(engine, 10) is True  # returns when the read ends, not after the bound
    assert time.perf_counter() - started < 5
    assert wait_for_store_features(SimpleNamespace(models=SimpleNamespace(features=None)), 10) is True


def test_a_live_teacher_without_vnni_or_amx_is_flagged() -> None:
    from core.hardware import Cpu
    from serving.loading import teacher_cost_warning

    avx2 = Cpu("x", 2, "x86_64", ("avx2",))
    said = teacher_cost_warning(avx2, "int8", 20)
    assert said is not None and "int8 path avx2" in said and "student" in said
    assert teacher_cost_warning(avx2, "int8", 0) is None  # no live teacher
    assert teacher_cost_warning(Cpu("x", 2, "x86_64", ("avx2", "avx512_vnni")), "int8", 20) is None
    assert teacher_cost_warning(Cpu("x", 2, "x86_64", ("avx2", "amx_int8", "amx_bf16")), "bf16", 20) is None
    assert teacher_cost_warning(Cpu("x", 2, "aarch64", ()), "fp32", 20) is not None  # generic kernels


def test_the_rules_and_synonyms_files_settings_name_are_named_for_every_store(  # type: ignore[no-untyped-def]
        tmp_path, settings) -> None:
    from pathlib import Path

    from serving.loading import named_files

    home = settings.model_copy(update={
        "home": tmp_path, "retrieval": settings.retrieval.model_copy(update={"synonyms": "synonyms.txt"}),
        "ranking": settings.ranking.model_copy(update={"rules_file": Path("merch.yaml")})})
    (tmp_path / "stores" / "garden").mkdir(parents=True)
    assert named_files(home) == [tmp_path / "merch.yaml", tmp_path / "synonyms.txt",
                                 tmp_path / "stores" / "garden" / "merch.yaml",
                                 tmp_path / "stores" / "garden" / "synonyms.txt"]


def test_a_catalog_given_to_a_home_that_serves_another_index_is_named(  # type: ignore[no-untyped-def]
        tmp_path, settings, demo_products, caplog) -> None:
    from serving.indexing import index_path, open_index
    from tests.fakes import HashingEncoder

    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    demo_products.head(30).to_csv(first, index=False)
    demo_products.tail(20).to_csv(second, index=False)
    home = settings.model_copy(update={"home": tmp_path / "home", "catalog": first})
    encoder = HashingEncoder()
    assert open_index(home, encoder).count == 30
    with caplog.at_level("WARNING", logger="serving.indexing"):
        served = open_index(home.model_copy(update={"catalog": second}), encoder)
    assert served.count == 30  # the existing index is served as it is ...
    assert "not the catalog" in caplog.text and "shoprank index --catalog" in caplog.text  # ... and says so
    assert open_index(home.model_copy(update={"catalog": tmp_path / "gone.csv"}), encoder).count == 30  # no file

    from core.errors import NotReady

    other = HashingEncoder(dim=16)  # another encoder (a new bi-encoder, a pooling read anew): no build of it here
    other.fingerprint = "hashingtest00002"
    bare = home.model_copy(update={"catalog": None})
    with pytest.raises(NotReady, match=r"no build for encoder .*shoprank index --catalog FILE"):
        open_index(bare, other)  # before: built from the generated demo catalog, served in place of the store's

    demo = settings.model_copy(update={"home": tmp_path / "demo-home", "catalog": None})  # `make run`'s home
    assert open_index(demo, encoder).count > 0  # the generated demo store
    (index_path(demo, other).with_suffix(".building")).mkdir(parents=True)  # a build killed midway: no build
    (index_path(demo, other).with_suffix(".building") / "manifest.json").write_text("{}")
    assert open_index(demo, other).count == open_index(demo, encoder).count  # the demo again, for this encoder
    manifest = index_path(demo, encoder) / "manifest.json"  # the demo's build, written since (an upsert)
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "updated": "2026-12-06T21:00:00+00:00"}))
    third = HashingEncoder(dim=8)
    third.fingerprint = "hashingtest00003"
    with pytest.raises(NotReady, match="no build for encoder"):  # its changes are never replaced by the demo
        open_index(demo, third)


def test_a_replica_of_an_artifact_store_never_builds_the_demo_catalog(  # type: ignore[no-untyped-def]
        tmp_path, settings) -> None:
    from core.errors import NotReady
    from serving.indexing import index_path, open_index
    from tests.fakes import HashingEncoder

    replica = settings.model_copy(update={"home": tmp_path / "home", "catalog": None,
                                          "artifacts_url": f"file://{tmp_path / 'store'}"})
    encoder = HashingEncoder()
    with pytest.raises(NotReady, match=r"store file://.*store holds no index .*shoprank artifacts push"):
        open_index(replica, encoder)  # before: the generated demo catalog, built and served
    assert not index_path(replica, encoder).exists()


def test_an_evaluation_index_follows_its_datasets_attributes_without_encoding_again(  # type: ignore[no-untyped-def]
        tmp_path, settings) -> None:
    from retrieval.catalog import read_catalog
    from serving.indexing import open_index
    from tests.fakes import HashingEncoder

    def dataset(body: str):  # type: ignore[no-untyped-def]
        (tmp_path / "products.csv").write_text("product_id,title,price,in_stock,quantity,brand,color\n" + body)
        return read_catalog(tmp_path / "products.csv")[0]

    home, encoder = settings.model_copy(update={"home": tmp_path / "home"}), HashingEncoder()
    first = open_index(home, encoder, dataset("a,cordless drill,10,yes,3,Dewalt,red\nb,garden hose,,,,,\n"))
    again = open_index(home, encoder, dataset("a,cordless drill,10,yes,3,Dewalt,red\nb,garden hose,,,,,\n"))
    assert again.manifest.build == first.manifest.build  # the same dataset read again: loaded, not rebuilt
    encoded = len(encoder.encoded)
    changed = open_index(home, encoder, dataset("a,cordless drill,999,no,0,Makita,red\nb,garden hose,5,,,Acme,\n"))
    assert changed.path != first.path  # its own folder: the two datasets never rebuild each other's
    assert changed.manifest.catalog_hash == first.manifest.catalog_hash  # the same text
    assert changed.products[["price", "in_stock", "brand"]].to_dict("list") == {  # before: 10, True, Dewalt
        "price": [999.0, 5.0], "in_stock": [False, None], "brand": ["Makita", "Acme"]}
    assert len(encoder.encoded) == encoded  # the vectors came from the embedding cache
    back = open_index(home, encoder, dataset("a,cordless drill,10,yes,3,Dewalt,red\nb,garden hose,,,,,\n"))
    assert back.path == first.path and back.manifest.build == first.manifest.build  # before: rebuilt at each switch
    assert back.products["price"].tolist()[0] == 10


def test_an_evaluation_index_that_lost_vectors_is_built_again(  # type: ignore[no-untyped-def]
        tmp_path, settings, caplog) -> None:
    """An evaluation index whose vectors file lost committed rows is derived data: it is built again (from the
    embedding cache), not refused with advice that would build the served index."""
    import os

    from retrieval.catalog import read_catalog
    from serving.indexing import open_index
    from tests.fakes import HashingEncoder

    (tmp_path / "products.csv").write_text("product_id,title\na,cordless drill\nb,garden hose\nc,saw\n")
    products, _ = read_catalog(tmp_path / "products.csv")
    home, encoder = settings.model_copy(update={"home": tmp_path / "home"}), HashingEncoder()
    first = open_index(home, encoder, products)
    os.truncate(first.path / "vectors.f32", 2 * encoder.dim * 4)  # the last row's vector lost
    encoded = len(encoder.encoded)
    with caplog.at_level("WARNING", logger="serving.indexing"):
        again = open_index(home, encoder, products)  # before: NotReady, "rebuild it with `shoprank index ...`"
    assert again.path == first.path and again.manifest.build != first.manifest.build and again.count == 3
    assert again.dense.vectors.shape == (3, encoder.dim) and len(encoder.encoded) == encoded
    assert "evaluation dataset's index is built again" in caplog.text and "building it again" in caplog.text


def test_store_features_a_down_store_could_not_give_are_read_once_it_answers() -> None:
    from serving.loading import warm_store_features

    calls: list[list[str]] = []
    refreshed: list[bool] = []

    class Reader:  # the online store refuses the first read (unit test double)
        def warm(self, ids: list[str]) -> list[str]:
            calls.append(list(ids))
            return list(ids) if len(calls) == 1 else []

        def stopped(self, seconds: float) -> bool:
            time.sleep(min(seconds, 0.3))
            return False

    engine = SimpleNamespace(models=SimpleNamespace(features=Reader()),
                             index=SimpleNamespace(live_product_ids=lambda: ["P1", "P2"]),
                             facts=SimpleNamespace(refresh=lambda: refreshed.append(True)))
    warm_store_features(engine)  # type: ignore[arg-type]  # the first pass ends: readiness does not wait
    assert calls == [["P1", "P2"]]
    deadline = time.monotonic() + 5
    while not refreshed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == [["P1", "P2"], ["P1", "P2"]] and refreshed == [True]  # read again, then the facts rebuilt


@pytest.mark.parametrize("linked", [False, True])
@pytest.mark.parametrize("left", [".building", ".old"])
def test_a_compaction_killed_between_its_renames_serves_the_stores_index(  # type: ignore[no-untyped-def]
        tmp_path, settings, monkeypatch, caplog, left, linked) -> None:
    """A build puts the old folder aside before it moves the new one in: killed between the two, the next
    start serves the finished build (or, without it, the old index), never the demo catalog built anew. An
    index folder that is a link (to another disk) is swapped beside the folder it points at, and found there
    (before: the start looked beside the link only, and built the demo catalog or, on a replica, refused)."""
    import shutil
    from pathlib import Path

    from core.files import staging_of

    from serving import indexing
    from tests.fakes import HashingEncoder
    from tests.retrieval.test_index import catalog

    home = settings.model_copy(update={"home": tmp_path / "home", "catalog": None})
    encoder = HashingEncoder()
    path = indexing.index_path(home, encoder)
    index = indexing.build_index(home, catalog([("a", "cordless drill"), ("b", "interior paint"),
                                                ("c", "garden hose")]), path, encoder)
    if linked:
        real = tmp_path / "disk" / path.name
        real.parent.mkdir()
        path.rename(real)
        path.symlink_to(real, target_is_directory=True)
        index = indexing.ProductIndex.load(path, indexing.retrieval_settings(home))
    index.delete(["b"])

    class Killed(BaseException):
        pass

    rename = Path.rename

    def dies_moving_the_build_in(self: Path, target: Path) -> Path:
        if self.name.endswith(".building"):
            raise Killed
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", dies_moving_the_build_in)
    with pytest.raises(Killed):
        index.compact(encoder, indexing.embedding_cache(home, encoder))
    monkeypatch.undo()
    assert not path.exists()
    if left == ".old":  # the staging folder gone as well: the index it was replacing
        shutil.rmtree(staging_of(path))
    if linked:  # a replica of an artifact store, which builds nothing: the index found or a refusal
        home = home.model_copy(update={"artifacts_url": f"file://{tmp_path / 'store'}"})
    with caplog.at_level("WARNING", logger="retrieval.index"):
        served = indexing.open_index(home, encoder)  # before: the demo catalog, built in place of the store's
    assert served.live_product_ids() == ["a", "c"] and "cut short" in caplog.text
    assert not staging_of(path).with_name(staging_of(path).name.replace(".building", ".old")).exists()
    assert path.is_symlink() == linked


def test_a_lambdamart_names_each_model_served_otherwise_than_in_its_training() -> None:
    from core.registry import ServedModel
    from serving.engine import trained_otherwise

    trained = {"encoder": "a+b", "reranker": "v2", "student": "v1", "ltr": "v3", "second_encoder_weight": 1.0}
    served = {"encoder": "a+b", "reranker": "v4", "ltr": "v5"}  # no student now; another LambdaMART is no matter
    reads_teacher = ServedModel("ltr", "v6", SimpleNamespace(names=["bm25", "dense", "teacher"]), trained)
    assert trained_otherwise(reads_teacher, served, 1.0) == [
        "ltr v6 was trained with reranker v2; this server serves v4"]  # the student's score it never reads
    reads_both = ServedModel("ltr", "v6", SimpleNamespace(names=["student", "teacher"]), trained)
    assert trained_otherwise(reads_both, served | {"reranker": "v2"}, 0.5) == [
        "ltr v6 was trained with student v1; this server serves none",
        "ltr v6 was trained with retrieval.second_encoder_weight 1.0; this server uses 0.5"]
    alone = served | {"encoder": "a", "reranker": "v2"}  # the second model dropped: named once, by the encoder
    assert trained_otherwise(reads_teacher, alone, None) == ["ltr v6 was trained with encoder a+b; this server serves a"]
    unknown = ServedModel("ltr", "v7", SimpleNamespace(names=["teacher"]))  # retrained from the event log: not said
    assert trained_otherwise(unknown, alone, None) == []


def test_a_cross_encoder_is_never_served_longer_pairs_than_it_was_trained_on(  # type: ignore[no-untyped-def]
        tmp_path) -> None:
    """Before: a reranker trained with ``--max-length 16`` was served at ``ranking.max_length`` (40)."""
    from core.registry import ModelVersion, ServedModel
    from core.settings import Settings
    from serving.engine import served_tag
    from serving.loading import served_max_length

    settings = Settings()
    assert settings.ranking.max_length == 40

    def entry(**params: object) -> ModelVersion:
        return ModelVersion(role="reranker", version="v1", created="", base_model="minilm", params=params)

    assert served_max_length(settings, entry(max_length=16)) == 16
    assert served_max_length(settings, entry(max_length=64)) == 40  # the operator's cap holds
    assert served_max_length(settings, entry()) == served_max_length(settings, entry(max_length="x")) == 40

    (tmp_path / "manifest.json").write_text(json.dumps({"files": {"model.onnx": "ab"}, "created": "now"}))

    class Scorer:
        precision, model_dir, max_length = "int8", tmp_path, 16

    tag = served_tag(ServedModel("reranker", "v1", Scorer()), settings.ranking)
    assert tag is not None and tag == served_tag(ServedModel("reranker", "v1", Scorer()), settings.ranking)
    Scorer.max_length = 40
    assert served_tag(ServedModel("reranker", "v1", Scorer()), settings.ranking) != tag  # scores of other pairs
