from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import Conflict, InvalidInput, NotFound
from core.registry import ModelRegistry


def model_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "weights.bin").write_text(name)
    return folder


def test_register_activate_rollback(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    first = registry.register("reranker", model_folder(tmp_path, "a"), base_model="minilm", training_data="h1",
                              params={"layers": 6}, metrics={"ndcg@10": 0.93})
    assert first.version == "v1" and registry.active("reranker") is None
    second = registry.register("reranker", model_folder(tmp_path, "b"), base_model="minilm", parent="v1",
                               activate=True)
    assert second.version == "v2" and registry.active("reranker").version == "v2"  # type: ignore[union-attr]
    registry.activate("reranker", "v1")
    assert registry.active("reranker").version == "v1"  # type: ignore[union-attr]
    assert registry.rollback("reranker").version == "v2"
    assert [v.version for v in registry.versions("reranker")] == ["v1", "v2"]
    loaded = registry.get("reranker", "v1")
    assert loaded.params == {"layers": 6} and loaded.metrics == {"ndcg@10": 0.93} and loaded.training_data == "h1"
    assert (loaded.path / "weights.bin").read_text() == "a"  # type: ignore[operator]
    assert registry.get("reranker", "v2").parent == "v1"


def test_errors_name_what_exists(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(InvalidInput, match="model role 'ranker' is not one of"):
        registry.versions("ranker")
    with pytest.raises(NotFound, match=r"reranker version 'v9' is not registered; registered: none"):
        registry.get("reranker", "v9")
    registry.register("ltr", model_folder(tmp_path, "m"), base_model="lightgbm", activate=True)
    with pytest.raises(InvalidInput, match="no earlier active version"):
        registry.rollback("ltr")
    for name in ("v1/", "../ltr/v1", "V1", "1", "v1234567"):  # a name, never a path to the active version or elsewhere
        with pytest.raises(InvalidInput, match="is not a version name: v followed by 1-6 digits"):
            registry.delete("ltr", name)
        with pytest.raises(InvalidInput, match="is not a version name"):
            registry.activate("ltr", name)
    assert registry.active_version("ltr") == "v1" and registry.get("ltr", "v1")


def test_a_damaged_version_is_refused_and_the_active_one_stays(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    for i in (1, 2):
        source = tmp_path / f"m{i}"
        (source / "weights").mkdir(parents=True)
        (source / "weights" / "model.onnx").write_bytes(bytes(range(200)) * (i + 1))
        registry.register("reranker", source, base_model="minilm")
    assert set(registry.get("reranker", "v2").files) == {"weights/model.onnx"}
    registry.activate("reranker", "v1")
    weights = tmp_path / "models" / "reranker" / "v2" / "weights" / "model.onnx"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated after registration
    with pytest.raises(Conflict, match=r"reranker v2 is damaged: weights/model.onnx differs"):
        registry.activate("reranker", "v2")
    weights.unlink()
    with pytest.raises(Conflict, match=r"weights/model.onnx is missing"):
        registry.activate("reranker", "v2")
    assert registry.active_version("reranker") == "v1"


def test_versions_registered_without_checksums_still_activate(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    source = tmp_path / "m"
    source.mkdir()
    (source / "model.txt").write_text("tree")
    entry = registry.register("ltr", source, base_model="lightgbm")
    manifest = Path(entry.path) / "manifest.json"  # type: ignore[arg-type]
    data = json.loads(manifest.read_text())
    del data["files"]  # a manifest written before checksums were recorded
    manifest.write_text(json.dumps(data))
    assert registry.activate("ltr", "v1").files == {}


def test_delete_refuses_the_active_version_and_never_reuses_a_name(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    for name in "abc":
        registry.register("ltr", model_folder(tmp_path, name), base_model="lgbm", activate=True)
    assert registry.history("ltr") == ["v1", "v2"]
    with pytest.raises(Conflict, match="v3 is the active version"):
        registry.delete("ltr", "v3")
    registry.delete("ltr", "v2")
    assert [v.version for v in registry.versions("ltr")] == ["v1", "v3"]
    assert registry.history("ltr") == ["v1"]  # a rollback now goes to v1
    assert not (tmp_path / "models" / "ltr" / "v2").exists()
    assert [d["version"] for d in registry.deleted("ltr")] == ["v2"] and registry.deleted("ltr")[0]["deleted"]
    with pytest.raises(NotFound, match="'v2' is not registered"):
        registry.get("ltr", "v2")
    registry.delete("ltr", "v1")
    with pytest.raises(InvalidInput, match="no earlier active version"):
        registry.rollback("ltr")
    # the newest version deleted: its name is still not given again
    registry.register("ltr", model_folder(tmp_path, "d"), base_model="lgbm")
    registry.delete("ltr", "v4")
    assert registry.register("ltr", model_folder(tmp_path, "e"), base_model="lgbm").version == "v5"


def test_prune_keeps_the_active_version_its_rollback_targets_the_newest_and_the_protected(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    for i in range(8):
        registry.register("ltr", model_folder(tmp_path, f"m{i}"), base_model="lgbm")
    for version in ("v1", "v2", "v3", "v4"):  # v4 active; v3, v2, v1 the rollback targets, newest first
        registry.activate("ltr", version)
    assert registry.prunable("ltr", keep=2) == ["v1", "v5", "v6"]  # keeps v4, v3, v2 and the newest v7, v8
    assert registry.prunable("ltr", keep=2, protect={"v5"}) == ["v1", "v6"]
    assert registry.prunable("ltr", keep=0) == ["v1", "v2", "v3", "v5", "v6", "v7", "v8"]
    with pytest.raises(InvalidInput, match="keep=-1"):
        registry.prunable("ltr", keep=-1)
    assert registry.prune("ltr", keep=2, protect={"v5"}) == ["v1", "v6"]
    assert [v.version for v in registry.versions("ltr")] == ["v2", "v3", "v4", "v5", "v7", "v8"]
    assert registry.active_version("ltr") == "v4" and registry.rollback("ltr").version == "v3"
    again = ModelRegistry(tmp_path / "again")
    for i in range(4):
        again.register("ltr", model_folder(tmp_path, f"n{i}"), base_model="lgbm")
    for version in ("v1", "v2", "v1", "v3", "v4", "v3"):  # v3 active again: it is in its own history too
        again.activate("ltr", version)
    assert again.prunable("ltr", keep=2) == ["v2"]  # keeps v3 and its targets v4 and v1 (before: v1 went too)


def test_a_nested_file_named_manifest_json_is_checked_too(tmp_path: Path) -> None:
    from core.registry import VERSION

    source = model_folder(tmp_path, "m")
    (source / "onnx").mkdir()
    (source / "onnx" / "manifest.json").write_text('{"opset": 17}')
    registry = ModelRegistry(tmp_path / "models")
    registry.register("student", source, base_model="minilm")
    assert set(registry.get("student", "v1").files) == {"weights.bin", "onnx/manifest.json"}  # before: weights only
    (tmp_path / "models" / "student" / "v1" / "onnx" / "manifest.json").write_text('{"opset": 9}')
    with pytest.raises(Conflict, match="onnx/manifest.json differs"):
        registry.activate("student", "v1")
    assert VERSION.match("v3") and not VERSION.match("v3\n")  # before: '$' let a newline through


def test_a_version_deleted_while_it_is_verified_is_not_activated(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.register("ltr", model_folder(tmp_path, "a"), base_model="lightgbm", activate=True)
    registry.register("ltr", model_folder(tmp_path, "b"), base_model="lightgbm")
    verify = registry.verify

    def deleted_meanwhile(role: str, version: str):  # type: ignore[no-untyped-def]
        entry = verify(role, version)
        registry.delete(role, version)  # another command's delete, between the check and the pointer's write
        return entry

    monkeypatch.setattr(registry, "verify", deleted_meanwhile)
    with pytest.raises(NotFound, match="'v2' is not registered"):
        registry.activate("ltr", "v2")
    assert registry.active("ltr").version == "v1"  # type: ignore[union-attr]  # never a pointer to a deleted one


def test_a_version_deleted_twice_at_once_is_deleted_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prune and a delete of one version: the second finds it gone (NotFound), and deleted.json lists it once.
    Before, it wrote a second record and failed on the folder with a FileNotFoundError."""
    registry = ModelRegistry(tmp_path / "models")
    registry.register("student", model_folder(tmp_path, "a"), base_model="minilm")
    registry.register("student", model_folder(tmp_path, "b"), base_model="minilm", activate=True)
    lock = registry._lock

    def deleted_meanwhile(role: str):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(registry, "_lock", lock)
        registry.delete(role, "v1")  # the other command, done just before this one takes the lock
        return lock(role)

    monkeypatch.setattr(registry, "_lock", deleted_meanwhile)
    with pytest.raises(NotFound, match="'v1' is not registered"):
        registry.delete("student", "v1")
    assert [entry["version"] for entry in registry.deleted("student")] == ["v1"]


@pytest.mark.parametrize("manifest, active", [('{"role": "ltr", "version": "v1", "created": "x", "base_model": "m", '
                                               '"signature": "a field of a newer release"}', None),
                                              ("{half written", None), (None, "{half written"), (None, "[]")])
def test_registry_files_that_do_not_read_are_named_not_a_traceback(tmp_path: Path, manifest: str | None,
                                                                   active: str | None) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.register("ltr", model_folder(tmp_path, "a"), base_model="lightgbm", activate=True)
    if manifest is not None:
        (tmp_path / "models" / "ltr" / "v1" / "manifest.json").write_text(manifest)
    if active is not None:
        (tmp_path / "models" / "ltr" / "active.json").write_text(active)
    if manifest and "newer" in manifest:  # a field this release does not know is left out
        assert [v.version for v in registry.versions("ltr")] == ["v1"]
        return
    broken = "manifest.json is not a model manifest" if manifest else "active.json is not an active-version file"
    with pytest.raises(Conflict, match=broken):
        registry.versions("ltr") if manifest else registry.active_version("ltr")
    if active is not None:  # the way out the error names
        (tmp_path / "models" / "ltr" / "active.json").unlink()
        assert registry.activate("ltr", "v1").version == "v1" and registry.active_version("ltr") == "v1"


def test_a_rollback_goes_to_another_version_that_loads(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    for name in "abc":
        registry.register("ltr", model_folder(tmp_path, name), base_model="lightgbm")
    for version in ("v2", "v1", "v3", "v1"):
        registry.activate("ltr", version)
    registry.delete("ltr", "v3")  # history v2 v1 v3 -> v2 v1: v1 is active, so a rollback must not "go" there
    assert registry.history("ltr") == ["v2"] and registry.previous("ltr") == "v2"

    def refuse(version: str) -> None:
        raise Conflict(f"ltr {version} reads features this version does not compute")

    with pytest.raises(Conflict, match="v2 reads features"):
        registry.rollback("ltr", refuse)  # before: active.json pointed at it all the same
    assert registry.state("ltr") == {"version": "v1", "history": ["v2"]}
    assert registry.rollback("ltr", lambda version: None).version == "v2"
    with pytest.raises(InvalidInput, match="no earlier active version"):
        registry.rollback("ltr")
    before = registry.state("ltr")
    registry.activate("ltr", "v1")
    registry.restore("ltr", before, unless_changed_from="v1")  # a server could not load v1: undone
    assert registry.state("ltr") == before
    registry.restore("ltr", {"version": "v1", "history": []}, unless_changed_from="v1")  # changed since: kept
    assert registry.state("ltr") == before


def test_a_registration_that_dies_leaves_no_version_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.registry

    registry = ModelRegistry(tmp_path / "models")

    def killed(folder: Path) -> dict:
        raise KeyboardInterrupt("killed while hashing the files")

    real = core.registry.checksums
    monkeypatch.setattr(core.registry, "checksums", killed)
    with pytest.raises(KeyboardInterrupt):
        registry.register("ltr", model_folder(tmp_path, "a"), base_model="lightgbm")
    assert not (tmp_path / "models" / "ltr" / "v1").exists()  # before: a v1 folder no command listed or removed
    monkeypatch.setattr(core.registry, "checksums", real)
    assert registry.register("ltr", model_folder(tmp_path, "b"), base_model="lightgbm").version == "v1"
    assert sorted(p.name for p in (tmp_path / "models" / "ltr").iterdir() if p.is_dir()) == ["v1"]


def test_a_rollback_of_a_judged_version_is_refused_once_another_is_active(tmp_path: Path) -> None:
    """The guard judges the active version, then rolls back: before, a version activated meanwhile was the one
    rolled back, onto the version just judged to have regressed."""
    registry = ModelRegistry(tmp_path / "models")
    for name in ("a", "b", "c"):
        registry.register("ltr", model_folder(tmp_path, name), base_model="lgbm", activate=name != "c")
    judged = registry.active_version("ltr")  # v2, against v1
    registry.activate("ltr", "v3")  # meanwhile: a promotion
    with pytest.raises(Conflict, match="ltr v2 is no longer the active version: v3 was activated after v2 was "
                                       "judged; nothing was rolled back: run `shoprank guard` again to judge v3"):
        registry.rollback("ltr", expected=judged)
    assert registry.state("ltr") == {"version": "v3", "history": ["v1", "v2"]}
    assert registry.rollback("ltr", expected="v3").version == "v2"  # still the active one: rolled back


def test_a_rollback_is_refused_when_it_would_not_land_on_the_version_the_judged_one_was_compared_with(
        tmp_path: Path) -> None:
    """Judged v2 against v1; meanwhile v3, then v2 again, were activated: v2 is still active, but a rollback would
    land on v3, which nothing compared."""
    registry = ModelRegistry(tmp_path / "models")
    for name in ("a", "b", "c"):
        registry.register("ltr", model_folder(tmp_path, name), base_model="lgbm", activate=name != "c")
    judged, against = registry.active_version("ltr"), registry.previous("ltr")
    registry.activate("ltr", "v3")
    registry.activate("ltr", "v2")
    with pytest.raises(Conflict, match="ltr would roll back to v3, not to v1, which v2 was judged against"):
        registry.rollback("ltr", expected=judged, onto=against)
    assert registry.state("ltr")["version"] == "v2"
    assert registry.rollback("ltr", expected="v2", onto="v3").version == "v3"
