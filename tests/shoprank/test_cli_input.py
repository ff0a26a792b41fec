"""Bad input to the CLI: exit 2 and a message naming the value and what is allowed, before any work starts
(never a traceback, never a folder outside the home emptied)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import InvalidInput, NotFound
from core.settings import Settings, get_settings
from serving.indexing import build_index_in_child, check_catalog_to_build
from tests.helpers import run_cli


@pytest.fixture()
def home(cli_home: Path) -> Path:
    return cli_home


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (argv, code, out, err[-2000:])
    assert "Traceback" not in err
    return err


def test_training_folders_stay_inside_the_home_and_a_summary_is_checked(home: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("important")
    trained = tmp_path / "trained"
    (trained / "best").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "score_head.pt", "tokenizer.json"):
        (trained / "best" / name).write_text("{}")
    (trained / "train_summary.json").write_text("nope")
    dataset = tmp_path / "dataset"  # not read: every refusal comes first
    err = refused(capsys, "train", "reranker", "--dataset", str(dataset), "--trained", str(trained),
                  "--run-name", "x/../../../victim")
    assert "is not a run name" in err
    (home / "keys.json").parent.mkdir(parents=True, exist_ok=True)
    (home / "keys.json").write_text("{}")
    err = refused(capsys, "train", "reranker", "--dataset", str(dataset), "--trained", str(trained),
                  "--work-dir", str(home))
    assert "is (or holds) the artifact home" in err and (home / "keys.json").is_file()  # before: the home emptied
    err = refused(capsys, "train", "reranker", "--dataset", str(dataset), "--trained", str(trained))
    assert "train_summary.json cannot be read" in err
    (trained / "train_summary.json").write_text("{}")
    assert "is not a summary" in refused(capsys, "train", "reranker", "--dataset", str(dataset), "--trained",
                                         str(trained))
    assert (victim / "keep.txt").read_text() == "important"


def test_a_base_or_a_trained_folder_that_holds_no_model_is_refused_before_the_dataset_is_read(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a traceback (or `error: : ...`) once the dataset was read and the negatives mined."""
    from shoprank.commands.arguments import base_model

    dataset = tmp_path / "dataset"  # not read: every refusal comes first
    for kind in ("reranker", "biencoder"):
        for base in (tmp_path, tmp_path / "no-such-folder"):
            err = refused(capsys, "train", kind, "--dataset", str(dataset), "--base", str(base))
            assert f"{str(base)!r} is neither 'minilm' (the bundled MiniLM) nor a model folder (no config.json" in err
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (model / name).write_text("{}")
    assert base_model("minilm") == "minilm" and base_model(str(model)) == str(model)
    trained = tmp_path / "trained"
    (trained / "best").mkdir(parents=True)
    (trained / "train_summary.json").write_text("{}")
    err = refused(capsys, "train", "reranker", "--dataset", str(dataset), "--trained", str(trained))
    assert ("no best/config.json and best/model.safetensors or best/pytorch_model.bin and best/score_head.pt and "
            "best/tokenizer.json there") in err


def test_an_output_path_of_the_wrong_kind_is_refused_before_the_dataset_is_read(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: refused by the write, after the lists were built or the negatives mined."""
    dataset = tmp_path / "dataset"  # not read: every refusal comes first
    for kind in ("reranker", "biencoder"):
        err = refused(capsys, "train", kind, "--dataset", str(dataset), "--export", str(tmp_path))
        assert f"argument --export: {str(tmp_path)!r} is a folder; name a file to write" in err
    afile = tmp_path / "afile"
    afile.write_text("")
    for folder, said in ((afile, "is a file"), (afile / "rows", f"{str(afile)!r} is a file, not a folder")):
        err = refused(capsys, "train", "ltr", "--dataset", str(dataset), "--save-data", str(folder))
        assert f"argument --save-data: {str(folder)!r}" in err and said in err


def test_an_error_of_no_file_is_one_line_without_an_empty_name(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from shoprank.commands import models

    def fails(*args: object) -> int:
        raise OSError("no file named model.safetensors in folder /gpu/out")  # as transformers raises it

    monkeypatch.setattr(models, "cmd_list", fails)
    code, _, err = run_cli(capsys, "models", "list")
    assert code == 1 and err == "error: no file named model.safetensors in folder /gpu/out\n"  # before: "error: : no"


def test_files_of_the_wrong_kind_are_named(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "products.csv").write_text("product_id,title\nP1,drill\n")
    (dataset / "judgments.csv").write_text("query_id,product_id,grade\nq1,P1,2\n")
    (dataset / "queries.csv").write_text("")
    from evaluation.dataset import load_dataset

    with pytest.raises(InvalidInput, match="queries.csv is empty"):
        load_dataset(dataset)
    (dataset / "queries.csv").write_bytes("query_id,query,split\nq1,caf\xe9,dev\n".encode("latin-1"))
    with pytest.raises(InvalidInput, match="is not a UTF-8 CSV file"):
        load_dataset(dataset)
    saved = {"result": {"dataset": "d", "mode": "rerank", "pipeline": "p", "split": "dev", "subset": None,
                        "queries": 1, "skipped": 0, "latency_ms": {}}, "per_query": []}
    (tmp_path / "a.json").write_text(json.dumps(saved))
    assert "is not a result saved by" in refused(capsys, "compare", str(tmp_path / "a.json"), str(tmp_path / "a.json"))
    (tmp_path / "r.json").write_text(json.dumps({"sessions_detail": {"a": {}}}))
    assert "is not session number" in refused(capsys, "report", "replay", str(tmp_path / "r.json"),
                                              str(tmp_path / "r.json"))
    (tmp_path / "ids.bin").write_bytes(b"\xff\xfeP1\n")
    assert "is not UTF-8 text" in refused(capsys, "delete", "--from-file", str(tmp_path / "ids.bin"))
    store = tmp_path / "store"
    store.mkdir()
    (store / "MANIFEST.json").write_text("not json{")
    assert "is not a manifest" in refused(capsys, "artifacts", "pull", "--url", f"file://{store}")


def test_counts_names_and_numbers_are_checked(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from shoprank.topology import Topology

    assert "'0'" in refused(capsys, "demo", "--out", str(tmp_path / "d"), "--queries", "0")
    assert "'5'" in refused(capsys, "demo", "--out", str(tmp_path / "d"), "--products", "5")
    (tmp_path / "afile").write_text("x")
    assert "is a file" in refused(capsys, "demo", "--out", str(tmp_path / "afile"))
    assert "not a valid store name" in refused(capsys, "--store", "", "keys", "create", "--scope", "admin")
    assert "not a valid store name" in refused(capsys, "keys", "create", "--scope", "search", "--store", "")
    assert not (home / "keys.json").exists()  # before: an admin key of the default store
    assert "--home is empty" in refused(capsys, "--home", "", "config", "show")
    assert "is a file" in refused(capsys, "--home", str(tmp_path / "afile"), "keys", "list")
    assert "'-5'" in refused(capsys, "events", "import", str(tmp_path / "afile"), "--publish", "--drain-s", "-5")
    with pytest.raises(InvalidInput, match="port=70000 is not a TCP port"):
        Topology(Settings(home=home), replicas=1, port=70000)


def test_a_catalog_that_is_not_there_is_refused_before_anything_starts(home: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHOPRANK_CATALOG", "/nonexistent.csv")
    get_settings.cache_clear()
    said = "error: catalog /nonexistent.csv does not exist; pass the path of a CSV/Parquet/JSONL file"
    for argv in (["cluster", "up", "--replicas", "1"], ["serve", "--workers", "2"]):
        assert refused(capsys, *argv).strip() == said, argv  # one line
    assert not (home / "cluster").exists()  # no Redis, broker or consumer was started
    monkeypatch.setenv("SHOPRANK_CATALOG", str(tmp_path / "products.xlsx"))
    get_settings.cache_clear()
    assert "unknown catalog format '.xlsx'" in refused(capsys, "cluster", "up")
    # with an index built, the catalog is not read to serve: one moved away since is no reason to refuse
    settings = Settings(home=home, catalog=Path("/nonexistent.csv"))
    with pytest.raises(InvalidInput, match="does not exist"):
        check_catalog_to_build(settings)
    built = settings.paths.index(settings.index_name, "fingerprint")
    built.mkdir(parents=True)
    (built / "manifest.json").write_text("{}")
    check_catalog_to_build(settings)


def test_the_error_of_the_process_that_builds_the_index_is_the_commands(home: Path) -> None:
    """``serve --workers N`` builds the index in a child process before its workers start: the child's error
    is one line and exit code 2, as any command's, not a traceback."""
    env = {**os.environ, "SHOPRANK_ENCODER": "biencoder:v9", "SHOPRANK_PROGRESS": "false",
           "SHOPRANK_ARTIFACT_URL": "s3://bucket/shoprank"}  # a misspelled setting: warned of by the command only
    done = subprocess.run([sys.executable, "-m", "shoprank.cli", "serve", "--host", "127.0.0.1", "--port", "1",
                           "--workers", "2"], env=env, capture_output=True, text=True, timeout=300, check=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert errors == ["error: biencoder version 'v9' is not registered; registered: none"], done.stderr[-3000:]
    assert done.stderr.count("SHOPRANK_ARTIFACT_URL names no setting") == 1, done.stderr[-3000:]  # not the child
    with pytest.raises(NotFound, match="biencoder version 'v9' is not registered"):  # its class, too
        build_index_in_child(env)


def test_an_empty_home_or_catalog_is_refused_not_read_as_the_working_directory(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: pytest.fail("served"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHOPRANK_HOME", "")  # e.g. SHOPRANK_HOME=$UNSET_VARIABLE
    get_settings.cache_clear()
    assert "SHOPRANK_HOME='': Value error, empty" in refused(capsys, "keys", "create", "--scope", "search")
    assert not (tmp_path / "keys.json").exists()  # before: the key file written in the working directory
    monkeypatch.setenv("SHOPRANK_HOME", str(home))
    monkeypatch.setenv("SHOPRANK_CATALOG", " ")
    get_settings.cache_clear()
    assert "SHOPRANK_CATALOG=' ': Value error, empty" in refused(capsys, "serve", "--workers", "1")


def test_the_store_shoprank_store_names_is_checked_as_the_flags_is(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for store, said in (("default", "store 'default' is the default store's name (index_name)"),
                        ("nosuch", "store 'nosuch' does not exist")):
        monkeypatch.setenv("SHOPRANK_STORE", store)
        get_settings.cache_clear()
        assert said in refused(capsys, "models", "list", "--role", "ltr")  # before: {"ltr": []}
        assert said in refused(capsys, "keys", "create", "--scope", "search")
    assert not (home / "keys.json").exists()  # before: a key for a store `shoprank serve` never serves
    (home / "stores" / "garden").mkdir(parents=True)
    monkeypatch.setenv("SHOPRANK_STORE", "garden")
    get_settings.cache_clear()
    code, out, err = run_cli(capsys, "models", "list", "--role", "ltr")
    assert code == 0 and json.loads(out) == {"ltr": []}, err


def test_shoprank_store_is_checked_only_by_the_commands_that_use_a_store(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A command's own --store comes before SHOPRANK_STORE, and the commands on the whole home (the cluster,
    the key file, the artifact store, the settings) use no store: a store deleted while its name is still
    exported must not keep them from running (`cluster down` above all)."""
    (home / "stores" / "garden").mkdir(parents=True)
    monkeypatch.setenv("SHOPRANK_STORE", "nosuch")
    get_settings.cache_clear()
    assert "store 'nosuch' does not exist" in refused(capsys, "models", "list", "--role", "ltr")  # it uses one
    code, out, err = run_cli(capsys, "keys", "create", "--scope", "search", "--store", "garden")
    assert code == 0 and json.loads(out)["store"] == "garden", err  # before: store 'nosuch' does not exist
    code, out, err = run_cli(capsys, "keys", "list")
    assert code == 0 and [key["store"] for key in json.loads(out)] == ["garden"], err
    for argv, said in ((["cluster", "down"], "no topology runs from"), (["cluster", "status"], "no topology runs"),
                       (["keys", "revoke", "nope"], "nope"), (["artifacts", "pull"], "no artifact store")):
        err = refused(capsys, *argv)
        assert said in err and "nosuch" not in err, (argv, err)
    code, out, err = run_cli(capsys, "config", "show")
    assert code == 0 and json.loads(out)["store"] == "nosuch", err  # shown as set, not refused
    monkeypatch.setenv("SHOPRANK_STORE", "default")  # the default store's name: refused where a store is used...
    get_settings.cache_clear()
    err = refused(capsys, "index", "--catalog", str(tmp_path / "none.csv"), "--store", "garden")
    assert "none.csv" in err and "default store's name" not in err, err  # ... not where --store names another
    assert "is not a valid store name" in refused(capsys, "index", "--catalog", str(tmp_path / "none.csv"),
                                                  "--store", "")  # before: the default store indexed
    both = refused(capsys, "--store", "bad/name", "index", "--catalog", str(tmp_path / "none.csv"), "--store", "garden")
    assert "name two stores" in both and "bad/name" in both, both  # before: the first --store was not looked at
    assert "is the default store's name" in refused(capsys, "--store", "default", "keys", "list")  # a flag given


def test_a_variable_that_names_no_setting_is_warned_of_once_a_command_at_its_log_level(home: Path) -> None:
    """The command a person runs warns once, through the logging it set up (so its level holds: before, the
    warning came bare from every process that loaded the settings); the processes `shoprank cluster up` starts
    inherit the same environment and say nothing."""
    def warned(*argv: str, **env: str) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "shoprank.cli", *argv, "config", "show"], capture_output=True,
                              text=True, env={**os.environ, "SHOPRANK_ARTIFACT_URL": "s3://b/shoprank", **env},
                              timeout=120, check=True)
        return [line for line in done.stderr.splitlines() if "SHOPRANK_ARTIFACT_URL" in line]

    said = warned()
    assert len(said) == 1 and said[0].endswith(" WARNING shoprank: SHOPRANK_ARTIFACT_URL names no setting and is "
                                               "ignored; did you mean SHOPRANK_ARTIFACTS_URL? (every setting: "
                                               "`shoprank config reference`)"), said
    assert warned(SHOPRANK_LOG_LEVEL="ERROR") == []
    assert warned("--log-level", "error") == []
    assert warned(SHOPRANK_STARTED_BY="cluster") == []


def test_an_empty_host_is_refused_not_served_on_every_interface(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    def serve(app: object, host: str, **kwargs: object) -> None:
        pytest.fail(f"served on host {host!r}")  # uvicorn listens on 0.0.0.0 and :: for an empty host

    monkeypatch.setattr(uvicorn, "run", serve)
    for host in ("", "  "):
        err = refused(capsys, "serve", "--host", host, "--workers", "1")
        assert f"--host {host!r}: Value error, {host!r} is not a bind address: give an IP address" in err
    monkeypatch.setenv("SHOPRANK_API__HOST", "")
    get_settings.cache_clear()
    assert "SHOPRANK_API__HOST='': Value error, '' is not a bind address" in refused(capsys, "serve", "--workers", "1")


def test_a_store_file_its_manifest_does_not_name_is_one_error_line(home: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    (store / "experiments").mkdir(parents=True)
    (store / "experiments" / "current.json").write_text('{"shadow": "v2"}')
    (store / "MANIFEST.json").write_text(json.dumps({"experiments/current.json": "0" * 64}))
    assert "changed while it was read" in refused(capsys, "artifacts", "pull", "--url", f"file://{store}")


def test_a_home_that_is_a_file_or_cannot_be_made_is_refused(home: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    for value, said in ((afile, "is a file"), (afile / "sub", "is under the file")):
        monkeypatch.setenv("SHOPRANK_HOME", str(value))
        get_settings.cache_clear()
        for argv in (["keys", "create", "--scope", "search"], ["events", "prune", "--keep-days", "3"]):
            err = refused(capsys, *argv)  # before: FileExistsError, NotADirectoryError
            assert f"the artifact home {value} (SHOPRANK_HOME) {said}" in err, (value, argv, err)
    assert afile.read_text() == ""
    # a home that cannot be made: the first write's error in one line, no trace
    monkeypatch.setenv("SHOPRANK_HOME", "/proc/shoprank")
    get_settings.cache_clear()
    code, _, err = run_cli(capsys, "keys", "create", "--scope", "search")
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: /proc/shoprank") and "Traceback" not in err
    # a home given but not there yet, from a folder that cannot be written: not this command's business
    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path / "new-home"))
    get_settings.cache_clear()
    monkeypatch.chdir("/proc")
    assert run_cli(capsys, "config", "reference")[0] == 0


def test_an_empty_demo_folder_is_refused_not_read_as_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("precious")
    for out in ("", " "):
        assert "--out is empty" in refused(capsys, "demo", "--out", out, "--products", "10", "--queries", "1")
    assert (tmp_path / "README.md").read_text() == "precious"  # before: the demo's README written over it
    assert "--out /proc/nope cannot be written" in refused(capsys, "demo", "--out", "/proc/nope", "--products", "10",
                                                           "--queries", "1")


def test_a_failed_pull_of_a_one_process_server_is_one_error_line(home: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: pytest.fail("served"))  # its startup pulled, before
    monkeypatch.setenv("SHOPRANK_ARTIFACTS_URL", f"file://{tmp_path / 'typo'}")
    get_settings.cache_clear()
    err = refused(capsys, "serve", "--workers", "1")
    assert err.strip() == (f"error: nothing to pull: file://{tmp_path / 'typo'} has no MANIFEST.json (check the URL, "
                           "or run `shoprank artifacts push` where the indexes and models were built)")


def test_a_consumer_bootstrap_that_is_no_address_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, "consume", "sink", "--bootstrap", "not a host", "--idle-exit", "2")
    assert "error: --bootstrap: 'not a host' of 'not a host' is not HOST[:PORT]" in err


def test_retrain_times_pandas_cannot_read_are_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An ISO week date (which Python reads and pandas does not) and a settle time past pandas' timedeltas. Before:
    a traceback and exit 1 once the run read them."""
    err = refused(capsys, "retrain", "--since", "2026-W44-1")
    assert "argument --since: '2026-W44-1' is not an ISO 8601 time" in err
    err = refused(capsys, "retrain", "--until", "2026-W45-1")
    assert "argument --until: '2026-W45-1' is not an ISO 8601 time" in err
    err = refused(capsys, "retrain", "--settle-minutes", "1e9")
    assert "argument --settle-minutes: '1e9' is not a number of minutes from 0 to 525600" in err
