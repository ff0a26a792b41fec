"""The `shoprank` commands end to end on the generated demo store (real encoder)."""

from __future__ import annotations

import html
import json
import math
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings, get_settings
from shoprank.cli import main
from tests.helpers import run_cli, share_cache


@pytest.fixture()
def fresh_home(monkeypatch: pytest.MonkeyPatch, settings: Settings, real_encoder, tmp_path: Path) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    """An empty artifact home for the CLI (``SHOPRANK_HOME``) that shares the session's cache, so the
    exported encoder is reused."""
    home = share_cache(tmp_path / "home", settings)
    monkeypatch.setenv("SHOPRANK_HOME", str(home))
    monkeypatch.setenv("SHOPRANK_PROGRESS", "false")
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def test_index_upsert_delete(env_home: Path, demo_dir: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "index", "--catalog", str(demo_dir / "products.csv"), "--name", "cli")
    assert code == 0 and json.loads(out)["products"] == 300
    extra = tmp_path / "more.jsonl"
    extra.write_text('{"product_id": "NEW1", "title": "Solar garden fountain pump"}\n'
                     '{"product_id": "P100000", "title": "Renamed toilet"}\n')
    code, out, _ = run_cli(capsys, "index", "--catalog", str(extra), "--name", "cli", "--upsert")
    summary = json.loads(out)
    assert code == 0 and summary["products"] == 301
    assert summary["upsert"] == {"added": 1, "updated_text": 1, "updated_attributes": 0, "unchanged": 0}
    code, out, _ = run_cli(capsys, "delete", "--name", "cli", "NEW1", "missing-id", "NEW1")
    assert code == 0 and json.loads(out) == {"deleted": 1, "not_found": ["missing-id"], "products": 300}
    doomed = tmp_path / "doomed.txt"  # a fifth of the rows dead: compacted, as an upsert compacts
    doomed.write_text("\n".join(f"P{100000 + i}" for i in range(1, 80)) + "\n")
    code, out, _ = run_cli(capsys, "delete", "--name", "cli", "--from-file", str(doomed))
    assert code == 0 and json.loads(out) == {"deleted": 79, "not_found": [], "products": 221, "compacted": True}


def test_models_delete_and_prune_spare_the_active_version_and_the_experiment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from core.registry import ModelRegistry
    from online_learning.experiments import Experiment
    from serving.router import save_router_config

    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    registry = ModelRegistry(get_settings().paths.models)
    for i in range(6):
        model = tmp_path / f"m{i}"
        model.mkdir()
        (model / "model.txt").write_text(str(i))
        registry.register("ltr", model, base_model="lightgbm", activate=i < 2)  # v2 active, v1 its rollback
    arms = {"control": {"ltr": "v2"}, "treatment": {"ltr": "v3"}}
    save_router_config(get_settings().paths, Experiment(name="t", arms=arms), shadow="v4")
    code, _, err = run_cli(capsys, "models", "delete", "ltr", "v3")
    assert code == 2 and "ltr v3 is served by the running experiment or shadow" in err
    code, out, _ = run_cli(capsys, "models", "prune", "--keep", "1", "--dry-run")
    assert code == 0 and json.loads(out)["ltr"] == {"would_delete": ["v5"], "kept": ["v1", "v2", "v3", "v4", "v6"]}
    assert len(registry.versions("ltr")) == 6
    save_router_config(get_settings().paths, None, None)  # the experiment stopped
    code, _, err = run_cli(capsys, "models", "delete", "ltr", "v2")
    assert code == 2 and "ltr v2 is the active version and cannot be deleted" in err
    code, out, _ = run_cli(capsys, "models", "prune", "--role", "ltr", "--keep", "0")
    assert code == 0 and json.loads(out)["ltr"] == {"deleted": ["v1", "v3", "v4", "v5", "v6"], "kept": ["v2"]}
    code, out, _ = run_cli(capsys, "models", "list", "--role", "ltr")
    assert [v["version"] for v in json.loads(out)["ltr"]] == ["v2"]
    get_settings.cache_clear()


def test_bad_catalog_exits_nonzero_naming_row_and_column(env_home: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,title\n1,Drill\n2,\n3,Saw\n")
    code, _, err = run_cli(capsys, "index", "--catalog", str(bad), "--name", "bad")
    assert code == 2
    assert "bad.csv row 2, column 'title': missing" in err and "--skip-bad-rows" in err
    code, out, _ = run_cli(capsys, "index", "--catalog", str(bad), "--name", "bad", "--skip-bad-rows")
    assert code == 0 and json.loads(out)["rows_skipped"] == 1 and json.loads(out)["products"] == 2
    (tmp_path / "none.csv").write_text("product_id,title\n1,\n")  # nothing valid: the index stays as it was
    code, _, err = run_cli(capsys, "index", "--catalog", str(tmp_path / "none.csv"), "--name", "bad", "--skip-bad-rows")
    assert code == 2 and "has no valid product (1 rows read, 1 skipped as bad)" in err
    code, _, err = run_cli(capsys, "--home", str(tmp_path / "empty"), "features", "build", "--from-catalog")
    assert code == 2 and "index the store's catalog first" in err and not (tmp_path / "empty" / "demo").exists()


def test_a_bad_setting_exits_2_naming_its_variable_value_and_range(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("SHOPRANK_FEATURES__CHANGES_POLL_S", "-1")
    monkeypatch.setenv("SHOPRANK_API__WORKERS", "many")
    get_settings.cache_clear()
    try:
        code, _, err = run_cli(capsys, "config", "show")
    finally:
        get_settings.cache_clear()
    assert code == 2 and "Traceback" not in err
    assert "SHOPRANK_FEATURES__CHANGES_POLL_S='-1': Input should be greater than or equal to 0" in err
    assert "SHOPRANK_API__WORKERS='many'" in err and "shoprank config reference" in err


def test_config_show_hides_secrets(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("SHOPRANK_API__ADMIN_TOKEN", "s3cret")
    monkeypatch.setenv("SHOPRANK_ARTIFACTS_URL", "s3://id:secretkey@bucket/shoprank")
    monkeypatch.setenv("SHOPRANK_SERVING__SCORE_STORE_URL", "redis://default:p@ssw0rd@cache:6379/0")
    monkeypatch.setenv("SHOPRANK_FEATURES__REDIS_URL", "10.0.0.5:6379,password=hunter2,ssl=true")
    get_settings.cache_clear()
    try:
        code, out, err = run_cli(capsys, "config", "show")
    finally:
        get_settings.cache_clear()
    shown = json.loads(out)
    assert code == 0 and "s3cret" not in out and "secretkey" not in out and "ssw0rd" not in out, err
    code, out, _ = run_cli(capsys, "--log-level", "warning", "config", "show")
    assert code == 0 and json.loads(out)["log_level"] == "WARNING"  # the flag is in force, and shown so
    assert shown["serving"]["score_store_url"] == "redis://default:***@cache:6379/0"
    assert shown["features"]["redis_url"] == "10.0.0.5:6379,password=***,ssl=true" and "hunter2" not in out
    assert shown["api"]["admin_token"] == "***" and shown["artifacts_url"] == "s3://id:***@bucket/shoprank"


def test_artifacts_pull_from_a_store_nothing_was_pushed_to_is_an_error(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "--home", str(tmp_path / "replica"), "artifacts", "pull", "--url",
                           f"file://{tmp_path}/empty-store")
    assert code == 2 and "empty-store has no MANIFEST.json" in err and "artifacts push" in err


def test_evaluate_json_on_demo_store(env_home: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = {}
    for pipeline in ("bm25", "hybrid"):
        code, out, _ = run_cli(capsys, "evaluate", "--dataset", str(demo_dir), "--mode", "retrieval",
                           "--pipeline", pipeline, "--json")
        assert code == 0
        results[pipeline] = json.loads(out)
    hybrid = results["hybrid"]
    assert hybrid["dataset"] == demo_dir.name and hybrid["mode"] == "retrieval" and hybrid["split"] is None
    assert hybrid["queries"] + hybrid["skipped"] == 60
    # loose bar on the generated store: word-matching queries are easy for both
    assert hybrid["ndcg@10"] > 0.8 and hybrid["recall@100"] > 0.9
    code, out, _ = run_cli(capsys, "evaluate", "--dataset", str(demo_dir), "--split", "dev", "--mode", "rerank",
                       "--pipeline", "dense", "--json")
    payload = json.loads(out)
    assert code == 0 and payload["split"] == "dev" and "recall@100" not in payload
    code, _, err = run_cli(capsys, "evaluate", "--dataset", str(demo_dir), "--mode", "rerank", "--pipeline", "nope")
    assert code == 2 and "pipeline 'nope' is not one of" in err


def test_train_ltr_on_served_and_judged_lists_registers(fresh_home: Path, demo_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (fresh_home / "stores" / "garden").mkdir(parents=True)  # another store, its feature store not built
    code, _, err = run_cli(capsys, "--store", "garden", "train", "ltr", "--dataset", str(demo_dir))
    assert code == 2 and "run `shoprank --store garden features build`, `shoprank --store garden features apply`" \
        in err, err  # the commands of the store it was given (before: without --store, another store's)
    code, out, err = run_cli(capsys, "train", "ltr", "--dataset", str(demo_dir), "--no-store-features")
    assert code == 0, err
    entry = json.loads(out)["registered"]
    params = entry["params"]  # by default every unjudged candidate of the served list is a negative
    assert entry["version"] == "v1" and params["negatives"] is None and params["lists"] == "served"
    assert params["monotone"] == ["bm25", "dense", "student", "teacher"]
    assert params["truncation_level"] == params["depth"] == 200
    assert params["feature_groups"] == ["base", "ranks", "relevance"] and "rank_rrf" in params["features"]
    assert "title_coverage" in params["features"]
    served_rows = entry["metrics"]["train_rows"]
    code, out, err = run_cli(capsys, "train", "ltr", "--dataset", str(demo_dir), "--no-store-features",
                             "--lists", "served+judged", "--features", "base")
    assert code == 0, err
    both = json.loads(out)["registered"]  # each training query's judged list joins its served list
    assert both["params"]["lists"] == "served+judged" and both["params"]["negatives"] is None
    assert both["metrics"]["train_rows"] > served_rows
    code, out, err = run_cli(capsys, "evaluate", "--dataset", str(demo_dir), "--mode", "retrieval",
                         "--pipeline", "ltr", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert 0 < result["ndcg@10_unjudged_as_0"] <= result["ndcg@10"] and 0 < result["judged@10"] <= 1
    code, out, err = run_cli(capsys, "train", "ltr", "--dataset", str(demo_dir), "--no-store-features",
                         "--lists", "judged", "--features", "base", "--negatives", "0", "--no-monotone",
                         "--truncation", "50")
    assert code == 0, err
    params = json.loads(out)["registered"]["params"]
    assert params["features"] == ["bm25", "dense", "student", "teacher"] and params["truncation_level"] == 50
    code, _, err = run_cli(capsys, "train", "ltr", "--dataset", str(demo_dir), "--lists", "judged",
                       "--negatives", "all")
    assert code == 2 and "--negatives all needs --lists served" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "ltr", "--dataset", str(demo_dir), "--negatives", "-1"])
    assert exit_info.value.code == 2
    assert "--negatives: '-1' is not a whole number >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "ltr", "--dataset", str(demo_dir), "--truncation", "0"])
    assert exit_info.value.code == 2
    assert "--truncation: '0' is not a whole number >= 1" in capsys.readouterr().err


def test_train_ltr_again_from_saved_rows_with_other_settings(fresh_home: Path, demo_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    rows = tmp_path / "rows"
    code, out, err = run_cli(capsys, "train", "ltr", "--dataset", str(demo_dir), "--no-store-features",
                             "--features", "base,ranks", "--save-data", str(rows))
    assert code == 0, err
    built = json.loads(out)["registered"]
    assert sorted(p.name for p in rows.iterdir()) == ["dev.npz", "lists.json", "train.npz"]
    code, out, err = run_cli(capsys, "train", "ltr", "--dataset", str(demo_dir), "--from-data", str(rows),
                             "--param", "num_leaves=7", "--param", "learning_rate=0.2")
    assert code == 0, err
    again = json.loads(out)["registered"]  # the saved lists, features and data hash; the new settings
    assert again["params"]["num_leaves"] == 7 and again["params"]["learning_rate"] == 0.2
    assert built["params"]["num_leaves"] == 31
    for key in ("features", "lists", "depth", "feature_groups", "served_models", "student_depth"):
        assert again["params"][key] == built["params"][key], key
    assert again["metrics"]["train_rows"] == built["metrics"]["train_rows"]
    assert again["training_data"] == built["training_data"]
    from benchmarks.ltr_search import main as search

    assert search(["--dataset", str(demo_dir), "--rows", str(rows), "--grid", "num_leaves=31,7",
                   "--train-rows", str(rows)]) == 0
    report = json.loads(capsys.readouterr().out)
    first, second, again_rows = report["settings"]
    assert first["settings"] == {"num_leaves": 31} and second["settings"] == {"num_leaves": 7}
    # the first setting on other training rows (here the same ones: the same model, every difference 0)
    assert again_rows["train_rows"] == str(rows) and again_rows["metrics"]["ndcg@10"]["diff"] == 0
    assert report["feature_orders"]["rank_rrf"]["dev ndcg@10"] == report["first_stage"]["ndcg@10"]["mean"]
    assert 0 < report["feature_orders"]["bm25"]["train ndcg@10"] <= 1
    assert "diff" not in first["metrics"]["ndcg@10"] and len(second["metrics"]["ndcg@10"]["ci95"]) == 2
    for row in (first["metrics"], report["first_stage"]):
        assert 0 < row["ndcg@10_unjudged_as_0"]["mean"] <= row["ndcg@10"]["mean"] <= 1
        assert 0 < row["recall@100"]["mean"] <= 1
    assert report["rows"]["dev_queries"] > 0 and "rank_rrf" in report["rows"]["features"]
    from benchmarks.in_sample_rows import main as in_sample
    from evaluation.dataset import load_dataset
    from ranking.training.data import groups_from
    from ranking.training.ltr_data import load_ranking_data

    assert in_sample(["--dataset", str(demo_dir), "--rows", str(rows), "--feature", "bm25", "--first", "4",
                      "--out", str(tmp_path / "in_sample")]) == 0
    split = json.loads(capsys.readouterr().out)
    train = load_ranking_data(rows / "train.npz")
    masked = load_ranking_data(tmp_path / "in_sample" / "masked" / "train.npz")
    out_of_sample = load_ranking_data(tmp_path / "in_sample" / "out-of-sample" / "train.npz")
    model_queries = {g.qid for g in groups_from(load_dataset(demo_dir), "train", 1)[:4]} & set(train.query_ids)
    assert model_queries and split["lists"] == {"model's queries": len(model_queries),
                                                "other queries": len(train.query_ids) - len(model_queries)}
    column = train.names.index("bm25")
    for qid, block in masked.lists():  # the feature hidden on the model's queries only
        if qid in model_queries:
            assert np.isnan(masked.features[block, column]).all()
        else:
            assert np.array_equal(masked.features[block], train.features[block], equal_nan=True)
    assert out_of_sample.query_ids == [q for q in train.query_ids if q not in model_queries]
    assert len(out_of_sample.labels) == sum(out_of_sample.groups) == len(out_of_sample.product_ids)
    assert 0 < split["order of the scored rows, NDCG@10"]["other queries"]["bm25"] <= 1
    with pytest.raises(SystemExit) as exit_info:
        in_sample(["--dataset", str(demo_dir), "--rows", str(rows), "--feature", "nope", "--first", "4",
                   "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "--feature 'nope' is not a column" in capsys.readouterr().err
    from benchmarks.judged_log_prior import main as audit

    assert audit(["--dataset", str(demo_dir), "--rows", str(rows)]) == 0
    leak = json.loads(capsys.readouterr().out)
    assert [run["model"] for run in leak["lambdamart"]] == ["without", "with log_judged"]
    assert len(leak["lambdamart"][1]["metrics"]["ndcg@10"]["ci95"]) == 2
    for split in ("train", "dev"):
        counted = leak["judged_rate_by_count"][split]
        assert sum(bucket["rows"] for bucket in counted) == report["rows"][split]
        assert all(0 <= bucket["judged_rate"] <= 1 for bucket in counted if bucket["rows"])
    assert sum(v for k, v in leak["catalog"].items() if k.startswith("judged")) == leak["catalog"]["products"]
    from benchmarks.ltr_search import grid_settings

    assert grid_settings(["gains=linear,exponential", "truncation_level=20"]) == [
        {"gains": "linear", "truncation_level": 20}, {"gains": "exponential", "truncation_level": 20}]
    assert grid_settings(["objective=lambdarank,rank_xendcg"]) == [{"objective": "lambdarank"},
                                                                   {"objective": "rank_xendcg"}]
    for bad in ("gains=cubic", "objective=listnet", "truncation_level=0", "leaves=3"):
        with pytest.raises(ValueError):
            grid_settings([bad])
    code, _, err = run_cli(capsys, "train", "ltr", "--dataset", str(demo_dir), "--from-data", str(tmp_path / "none"))
    assert code == 2 and "no train.npz, dev.npz, lists.json there" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "ltr", "--dataset", str(demo_dir), "--param", "leaves=3"])
    assert exit_info.value.code == 2 and "NAME one of learning_rate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "ltr", "--dataset", str(demo_dir), "--from-data", str(rows), "--save-data", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "not allowed with argument --from-data" in capsys.readouterr().err


def test_biencoder_exported_trained_elsewhere_and_registered(fresh_home: Path, demo_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from ranking.training.biencoder import load_examples
    from ranking.training.biencoder import main as train_from_file

    examples = tmp_path / "examples.json.gz"
    code, out, err = run_cli(capsys, "train", "biencoder", "--dataset", str(demo_dir), "--limit", "6",
                             "--export", str(examples))
    assert code == 0, err
    exported = json.loads(out)
    assert exported["train_queries"] == 6 and exported["products"] == 300 and exported["dev_queries"] > 0
    exported = load_examples(examples)
    train, texts, dev = exported.train, exported.texts, exported.dev
    assert exported.teacher is None and exported.config.distill == 0.0
    assert len(train) == 6 and all(len(g.mined) == 1 and g.mined[0] not in g.judged for g in train)
    assert len(texts) == 300 and dev is not None and dev.relevant_grade >= 1
    assert not (fresh_home / "models" / "biencoder").exists()  # exported, not trained
    from benchmarks.pseudo_queries import main as add_pseudo_queries
    from benchmarks.pseudo_queries import pseudo_query

    pseudo = tmp_path / "pseudo.json.gz"  # queries cut from titles, on top of the judged groups
    assert add_pseudo_queries([str(examples), "--count", "50", "--out", str(pseudo)]) == 0
    assert json.loads(capsys.readouterr().out)["judged_groups"] == 6
    augmented = load_examples(pseudo)
    made = augmented.train[6:]
    assert augmented.train[:6] == train and augmented.texts == texts and 40 <= len(made) <= 50
    for group in made:
        [(product, grade)] = group.judged.items()
        title = html.unescape(texts[product]).lower()
        assert grade == augmented.config.max_grade and group.mined == [] and group.qid == f"pseudo-{product}"
        assert 2 <= len(group.query.split()) <= 5 and all(word in title for word in group.query.split())
    allowed = {f"{brand}{other}{tail}" for brand in ("", "whirlpool ")  # no measure, number or filler word
               for other in ("", "over ", "stainless ", "steel ")
               for tail in ("range microwave", "over range microwave")}
    title = "Whirlpool 1.9 cu. ft. Over the Range Microwave in Stainless Steel"
    assert {pseudo_query(title, random.Random(seed)) for seed in range(40)} <= allowed
    assert pseudo_query("Acme 12 in.", random.Random(1)) is None  # nothing but a brand and a measure

    trained = tmp_path / "trained"
    assert train_from_file([str(examples), "--out", str(trained), "--device", "cpu", "--batch-size", "4",
                            "--precision", "bf16"]) == 0  # autocast: on any CPU, emulated where it has no AMX
    assert json.loads(capsys.readouterr().out)["device"] == "cpu"
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["device"] == "cpu" and summary["config"]["batch_size"] == 4 and summary["steps"] >= 1
    assert summary["precision"] == "bf16"
    assert math.isfinite(summary["final_loss"])
    [epoch] = summary["history"]  # the dense search checked on the dev queries after the epoch
    assert epoch["queries"] == len(dev.queries) and 0 < epoch["recall@100"] <= 1 and 0 < epoch["ndcg@10"] <= 1
    import torch
    from safetensors.torch import save_file

    from benchmarks.weight_average import average as average_weights
    from benchmarks.weight_average import main as average
    from benchmarks.weight_average import parse_mix

    soups = tmp_path / "soups"  # a model averaged with itself is the same model: the same figures
    assert average(["--examples", str(examples), "--out", str(soups), "--mix", f"ref={trained}:1",
                    f"half={trained}:0.5,{trained}:0.5"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "command" in lines[0] and [line["mix"] for line in lines[1:]] == ["ref", "half"]
    assert lines[1]["recall@100"] == lines[2]["recall@100"] == epoch["recall@100"]
    assert lines[1]["ndcg@10"] == lines[2]["ndcg@10"] == epoch["ndcg@10"]
    assert (soups / "half" / "tokenizer.json").is_file()
    odd = tmp_path / "odd"  # not a model of the same base
    odd.mkdir()
    save_file({"x": torch.zeros(1)}, str(odd / "model.safetensors"))
    with pytest.raises(ValueError, match=r"has no embeddings\..* missing\): average models of one base only"):
        average_weights([(trained, 0.5), (odd, 0.5)], tmp_path / "odd_mix")
    assert parse_mix("a=x:0.5,y:0.5") == ("a", [(Path("x"), 0.5), (Path("y"), 0.5)])
    for bad in ("a", "a=x", "a=x:heavy", "=x:1"):
        with pytest.raises(ValueError, match="--mix"):
            parse_mix(bad)

    code, out, err = run_cli(capsys, "train", "biencoder", "--dataset", str(demo_dir), "--trained", str(trained))
    assert code == 0, err
    entry = json.loads(out)["registered"]
    assert entry["version"] == "v1" and entry["training_data"] == summary["data_hash"]
    assert entry["params"]["trained_on"] == "cpu" and entry["params"]["batch_size"] == 4
    code, _, err = run_cli(capsys, "train", "biencoder", "--dataset", str(demo_dir), "--trained", str(tmp_path))
    assert code == 2 and "no train_summary.json and config.json and modules.json" in err  # and the model's files


def test_reranker_exported_trained_elsewhere_and_registered(fresh_home: Path, demo_dir: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from ranking.training.reranker import load_examples
    from ranking.training.reranker import main as train_from_file

    examples = tmp_path / "examples.json.gz"
    code, out, err = run_cli(capsys, "train", "reranker", "--dataset", str(demo_dir), "--limit", "8",
                             "--negatives", "2", "--layers", "1", "--dev-queries", "5", "--export", str(examples))
    assert code == 0, err
    exported = json.loads(out)
    assert exported["train_queries"] == 8 and exported["products"] == 300 and exported["dev_queries"] == 5
    config, train, dev, titles = load_examples(examples)
    assert config.layers == 1 and config.negatives == 2 and len(titles) == 300
    assert len(train) == 8 and all(len(g.mined) == 2 and not set(g.mined) & set(g.judged) for g in train)
    assert len(dev) == 5 and all(len(set(g.judged.values())) > 1 for g in dev)
    assert not (fresh_home / "models" / "reranker").exists()  # exported, not trained
    analyzed = tmp_path / "analyzed.json.gz"  # the queries as the served cross-encoders score them
    code, _, err = run_cli(capsys, "train", "reranker", "--dataset", str(demo_dir), "--limit", "8", "--negatives",
                           "0", "--dev-queries", "5", "--queries", "analyzed", "--export", str(analyzed))
    assert code == 0, err
    config_a, train_a, dev_a, _ = load_examples(analyzed)
    assert config_a.queries == "analyzed" and config.queries == "typed"
    changed = {g.query: a.query for g, a in zip([*train, *dev], [*train_a, *dev_a]) if g.query != a.query}
    assert changed and all(typed.lower() != typed or "-" in typed or "." in typed for typed in changed), changed
    from ranking.training.biencoder import load_examples as load_biencoder_examples

    with pytest.raises(ValueError, match="holds reranker examples, not biencoder ones"):
        load_biencoder_examples(examples)

    trained = tmp_path / "trained"
    assert train_from_file([str(examples), "--out", str(trained), "--device", "cpu", "--epochs", "1",
                            "--batch-groups", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["best"]["epoch"] == 1
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["device"] == "cpu" and summary["config"]["batch_groups"] == 4 and summary["train_groups"] == 8
    [epoch] = summary["history"]  # rerank-mode check on the dev sample after the epoch
    assert 0 < epoch["ndcg@10"] <= 1 and (trained / "best" / "score_head.pt").is_file()

    code, out, err = run_cli(capsys, "train", "reranker", "--dataset", str(demo_dir), "--trained", str(trained))
    assert code == 0, err
    entry = json.loads(out)["registered"]
    assert entry["version"] == "v1" and entry["training_data"] == summary["data_hash"]
    assert entry["params"]["trained_on"] == "cpu" and entry["params"]["layers"] == 1
    assert entry["base_model"] == config.base_model  # the folder the training ran from
    assert entry["metrics"]["dev_sample_ndcg@10"] == epoch["ndcg@10"]
    assert (fresh_home / "models" / "reranker" / "v1").is_dir()
    code, _, err = run_cli(capsys, "train", "reranker", "--dataset", str(demo_dir), "--trained", str(tmp_path))
    assert code == 2 and "no train_summary.json and best/config.json and" in err
    assert not list(fresh_home.glob("training/reranker-trained-*"))  # the copy registered, then removed

    # the registered teacher teaches a student: its pool's teacher scores are kept for a rerun on the same data
    student = ("train", "student", "--dataset", str(demo_dir), "--limit", "4", "--layers", "1", "--epochs", "1",
               "--pool-depth", "6", "--dev-queries", "3", "--batch-groups", "2")
    code, out, err = run_cli(capsys, *student)
    assert code == 0, err
    taught_by = json.loads(out)["registered"]
    assert taught_by["version"] == "v1" and taught_by["parent"] == "reranker:v1"
    assert taught_by["metrics"]["pool_pairs"] > 0 and (fresh_home / "models" / "student" / "v1").is_dir()
    from evaluation.dataset import load_dataset

    pools = sorted(fresh_home.rglob("pool-reranker-v1-*"))
    assert len(pools) == 1 and pools[0].name.endswith(load_dataset(demo_dir).digest[:12])
    code, out, err = run_cli(capsys, *student, "--run-name", "again")
    assert code == 0 and json.loads(out)["registered"]["version"] == "v2"
    assert sorted(fresh_home.rglob("pool-reranker-v1-*")) == pools  # the same pool, read again

    # the registered teacher teaches the bi-encoder: its scores of the judged and mined products travel
    from ranking.training.biencoder import load_examples as load_biencoder_examples
    from ranking.training.biencoder import main as train_biencoder_from_file

    taught = tmp_path / "taught.json.gz"
    code, out, err = run_cli(capsys, "train", "biencoder", "--dataset", str(demo_dir), "--limit", "6",
                             "--distill", "1", "--export", str(taught))
    assert code == 0, err
    exported = load_biencoder_examples(taught)
    assert exported.config.distill == 1.0 and exported.config.teacher == "reranker:v1"
    assert exported.teacher is not None and set(exported.teacher) == {g.qid for g in exported.train}
    for group in exported.train:  # four mined per query with a teacher, every judged and mined product scored
        assert len(group.mined) == 4 and set(exported.teacher[group.qid]) == {*group.judged, *group.mined}
    assert train_biencoder_from_file([str(taught), "--out", str(tmp_path / "t"), "--device", "cpu",
                                      "--batch-size", "4", "--no-dev"]) == 0
    assert json.loads(capsys.readouterr().out)["teacher_margins"] > 0
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "biencoder", "--dataset", str(demo_dir), "--distill", "0"])
    assert exit_info.value.code == 2 and "'0' is not a number > 0" in capsys.readouterr().err
    for bad, message in ((["--no-hard-negatives"], "cannot be used with --no-hard-negatives"),
                         (["--teacher", "v7"], "reranker version 'v7' is not registered")):
        code, _, err = run_cli(capsys, "train", "biencoder", "--dataset", str(demo_dir), "--distill", "1", *bad)
        assert code == 2 and message in err, err
    with pytest.raises(SystemExit):  # a file exported without a teacher has nothing to distil
        train_biencoder_from_file([str(examples_without_teacher(tmp_path, demo_dir, capsys)), "--out",
                                   str(tmp_path / "u"), "--distill", "1"])
    assert "needs teacher scores" in capsys.readouterr().err


def examples_without_teacher(tmp_path: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "plain.json.gz"
    code, _, err = run_cli(capsys, "train", "biencoder", "--dataset", str(demo_dir), "--limit", "2", "--export",
                           str(path))
    assert code == 0, err
    return path


def test_the_parser_loads_no_faiss() -> None:
    """`shoprank serve` sets OMP_NUM_THREADS (serving.math_threads) after parsing; FAISS reads it when it
    loads, so no command module may load it at import time."""
    code = "import sys; from shoprank.cli import build_parser; build_parser(); print('faiss' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_cross_fitted_lambdamart_lists_come_from_encoders_that_never_saw_their_fold(
        fresh_home: Path, demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from core.registry import ModelRegistry
    from ranking.training.biencoder import load_examples
    from ranking.training.biencoder import main as train_from_file
    from ranking.training.data import Fold
    from ranking.training.ltr_data import load_ranking_data

    for fold in (Fold(0, 2), Fold(1, 2)):  # v1 trained without fold 0/2, v2 without 1/2; neither served
        examples, trained = tmp_path / f"examples{fold.index}.json.gz", tmp_path / f"trained{fold.index}"
        code, _, err = run_cli(capsys, "train", "biencoder", "--dataset", str(demo_dir), "--hold-out", str(fold),
                               "--limit", "6", "--export", str(examples))
        assert code == 0, err
        exported = load_examples(examples)
        config, train = exported.config, exported.train
        assert config.held_out == str(fold) and len(train) == 6 and not any(fold.holds(g.qid) for g in train)
        assert train_from_file([str(examples), "--out", str(trained), "--device", "cpu", "--batch-size", "4"]) == 0
        capsys.readouterr()
        code, out, err = run_cli(capsys, "train", "biencoder", "--dataset", str(demo_dir), "--trained", str(trained))
        assert code == 0, err
        assert json.loads(out)["registered"]["params"]["held_out"] == str(fold)
    assert ModelRegistry(get_settings().paths.models).active("biencoder") is None  # the bundled MiniLM serves

    ltr = ["train", "ltr", "--dataset", str(demo_dir), "--no-store-features", "--features", "base,ranks"]
    code, _, err = run_cli(capsys, *ltr, "--save-data", str(tmp_path / "plain"))
    assert code == 0, err
    code, out, err = run_cli(capsys, *ltr, "--fold-encoders", "biencoder:v1,biencoder:v2",
                             "--save-data", str(tmp_path / "crossed"))
    assert code == 0, err
    assert json.loads(out)["registered"]["params"]["fold_encoders"] == ["biencoder:v1", "biencoder:v2"]

    def dense(folder: Path, split: str = "train") -> dict[tuple[str, str], float]:
        data = load_ranking_data(folder / f"{split}.npz")
        column = data.features[:, data.names.index("dense")]
        return {(q, p): float(v) for q, p, v in zip(np.repeat(data.query_ids, data.groups), data.product_ids, column)}

    plain, crossed = dense(tmp_path / "plain"), dense(tmp_path / "crossed")
    assert {q for q, _ in plain} == {q for q, _ in crossed}  # every training query, once
    shared = plain.keys() & crossed.keys()
    gap = {key: abs(plain[key] - crossed[key]) for key in shared}
    # the plain lists come from the served encoder; fold 0/2's crossed lists from v1, fold 1/2's from v2
    assert max(v for (q, _), v in gap.items() if Fold(0, 2).holds(q)) > 1e-3
    assert max(v for (q, _), v in gap.items() if Fold(1, 2).holds(q)) > 1e-3
    assert dense(tmp_path / "plain", "dev") == dense(tmp_path / "crossed", "dev")  # the dev lists: the served one's

    code, _, err = run_cli(capsys, *ltr, "--fold-encoders", "biencoder:v2,biencoder:v1")
    assert code == 2 and "biencoder:v2 would build fold 0/2's lists, but it was trained without fold 1/2" in err
    code, _, err = run_cli(capsys, *ltr, "--fold-encoders", "biencoder:v1")
    assert code == 2 and "name a bi-encoder for each fold" in err
    code, _, err = run_cli(capsys, *ltr, "--fold-encoders", "biencoder:v1,biencoder:v2", "--from-data",
                           str(tmp_path / "crossed"))
    assert code == 2 and "rows read with --from-data are built already" in err


def test_commands_with_bad_arguments_or_files_end_in_one_error_line(tmp_path: Path, demo_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from core.settings import get_settings

    home = ["--home", str(tmp_path / "home")]
    for argv, said in [
        (["artifacts", "push", "--url", "bogus://x"], "cannot be opened"),
        (["features", "materialize"], "run `shoprank features build"),
        (["retrain", "--since", "yesterday"], "not an ISO 8601 time"),
        (["retrain", "--settle-minutes", "-5"], "'-5' is not a number of minutes from 0 to 525600"),
        (["serve", "--port", "70000"], "--port 70000: Input should be less than or equal to 65535"),
        (["serve", "--catalog", "/nonexistent.csv"], "--catalog /nonexistent.csv: no such file"),
        (["--log-level", "loud", "config", "show"], "invalid choice: 'LOUD'"),
        (["features", "build", "--users", "0"], "not a whole number >= 1"),
        (["train", "ltr", "--dataset", str(demo_dir), "--features", "bogus"], "give groups among"),
        (["evaluate", "--dataset", str(tmp_path), "--mrr-threshold", "nan"], "not a number from 0 to 1"),
        (["evaluate", "--dataset", str(tmp_path), "--recall-threshold", "0"], "'0' is not a number in (0, 1]"),
        (["evaluate", "--dataset", str(tmp_path), "--depth", "5"], "'5' is not a whole number >= 100"),
        (["evaluate", "--dataset", str(tmp_path), "--depth", "-5"], "'-5' is not a whole number >= 100"),
        (["train", "ltr", "--dataset", str(demo_dir), "--seed", "-1"], "'-1' is not a seed"),
        (["train", "biencoder", "--dataset", str(demo_dir), "--seed", str(2**32)], "is not a seed"),
        (["features", "build", "--seed", "-7"], "'-7' is not a seed"),
        (["suggestions", "--days", "-1"], "'-1' is not a whole number of days from 1 to 36500"),
        (["simulate", "--dataset", str(demo_dir), "--concurrency", "0"], "'0' is not a whole number >= 1"),
        (["simulate", "--dataset", str(demo_dir), "--sessions", "0"], "'0' is not a whole number >= 1"),
        (["simulate", "--dataset", str(demo_dir), "--start", "-3"], "'-3' is not a whole number >= 0"),
        (["simulate", "--dataset", str(demo_dir), "--seed", "-1"], "'-1' is not a seed"),
        (["simulate", "--dataset", str(demo_dir), "--attack-product", "p1", "--attack-query", "x",
          "--attack-bots", "0"], "'0' is not a whole number >= 1"),
        (["simulate", "--dataset", str(demo_dir), "--attack-searches", "-1"], "'-1' is not a whole number >= 0"),
    ]:
        code, _, err = run_cli(capsys, *home, *argv)
        assert code == 2 and said in err and "Traceback" not in err, (argv, err)
    (tmp_path / "bad.yaml").write_text("api: [1,2\n")
    monkeypatch.setenv("SHOPRANK_CONFIG", str(tmp_path / "bad.yaml"))
    get_settings.cache_clear()
    try:
        code, _, err = run_cli(capsys, "config", "show")
    finally:
        get_settings.cache_clear()
    assert code == 2 and "is not a YAML file of UTF-8 text" in err and "Traceback" not in err
