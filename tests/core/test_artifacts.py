"""The artifact store replicas share (fsspec URL): push, pull, state only, local work kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.artifacts import MANIFEST, ArtifactStore
from core.errors import Conflict, NotFound, NotReady


def make_home(root: Path) -> Path:
    (root / "indexes" / "default" / "fp").mkdir(parents=True)
    (root / "indexes" / "default" / "fp" / "vectors.npy").write_bytes(b"\x01" * 5000)
    (root / "models" / "ltr" / "v1").mkdir(parents=True)
    (root / "models" / "ltr" / "v1" / "model.txt").write_text("trees")
    (root / "models" / "ltr" / "active.json").write_text('{"version": "v1", "history": []}')
    (root / "cache").mkdir()
    (root / "cache" / "big.sqlite").write_bytes(b"local only")
    return root


def registered(home: Path, tmp_path: Path, names: tuple[str, ...],  # type: ignore[no-untyped-def]
               extra: dict[str, str] | None = None):
    """A registry in ``home`` with an ``ltr`` version per name (``model.txt`` holding the name, and ``extra``
    files), each activated in turn."""
    from core.registry import ModelRegistry

    registry = ModelRegistry(home / "models")
    for name in names:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.txt").write_text(name)
        for file, text in (extra or {}).items():
            (folder / file).write_text(text)
        registry.register("ltr", folder, base_model="lightgbm", activate=True)
    return registry


def test_push_then_pull_copies_the_shared_files_only(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    writer = ArtifactStore(url, make_home(tmp_path / "a"))
    staged = tmp_path / "a" / "models" / "ltr" / ".registering-v2"  # a registration under way (or that died)
    staged.mkdir()
    (staged / "model.txt").write_text("half")
    pushed = writer.push()
    assert pushed.files == 3 and pushed.bytes == 5000 + 5 + len('{"version": "v1", "history": []}')
    manifest = json.loads((tmp_path / "store" / MANIFEST).read_text())
    assert sorted(manifest) == ["indexes/default/fp/vectors.npy", "models/ltr/active.json", "models/ltr/v1/model.txt"]
    reader_home = tmp_path / "b"
    reader_home.mkdir()
    reader = ArtifactStore(url, reader_home)
    assert reader.pull().files == 3
    assert (reader_home / "models" / "ltr" / "v1" / "model.txt").read_text() == "trees"
    assert not (reader_home / "cache").exists()  # caches stay on each machine
    assert reader.pull().files == 0 and writer.push().files == 0  # nothing changed, nothing moves


def test_an_experiment_publishes_the_versions_it_names_with_it(tmp_path: Path) -> None:
    """Admin changes push state only; an experiment (or shadow) on versions registered here and never pushed
    takes their folders along, so the replicas that pull it can load its arms."""
    url = f"file://{tmp_path / 'store'}"
    home = make_home(tmp_path / "a")
    writer = ArtifactStore(url, home)
    writer.push()
    for version in ("v2", "v3"):
        (home / "models" / "ltr" / version).mkdir()
        (home / "models" / "ltr" / version / "model.txt").write_text(f"trees {version}")
    (home / "experiments").mkdir()
    (home / "experiments" / "current.json").write_text(json.dumps({
        "experiment": {"name": "e", "arms": {"control": {"ltr": "v1"}, "treatment": {"ltr": "v2"},
                                              "odd": {"ltr": "../../cache"}}},
        "shadow": "v3"}))
    assert writer.push_state().files == 3  # the experiment file, v2 and v3
    reader_home = tmp_path / "b"
    reader_home.mkdir()
    ArtifactStore(url, reader_home).pull()
    assert (reader_home / "models" / "ltr" / "v2" / "model.txt").read_text() == "trees v2"
    assert (reader_home / "models" / "ltr" / "v3" / "model.txt").read_text() == "trees v3"
    assert not (reader_home / "cache").exists()  # a name that is no version names nothing
    (home / "experiments" / "current.json").write_text("[]")  # not an experiment file: it names nothing
    assert writer.push_state().files == 1  # before: AttributeError


def test_a_swap_moves_only_the_pointer(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    home = make_home(tmp_path / "a")
    writer = ArtifactStore(url, home)
    writer.push()
    reader = ArtifactStore(url, tmp_path / "b")
    (tmp_path / "b").mkdir()
    reader.pull()
    (home / "models" / "ltr" / "v2").mkdir()
    (home / "models" / "ltr" / "v2" / "model.txt").write_text("more trees")
    assert writer.push_state().files == 0  # a new version is published by a full push, not by state...
    (home / "models" / "ltr" / "active.json").write_text('{"version": "v2", "history": ["v1"]}')
    assert writer.push_state().files == 2  # ...or with the pointer that names it: no replica points at nothing
    assert writer.push().files == 0
    pulled = reader.pull()
    assert pulled.files == 2 and pulled.unchanged == 2  # the index and v1 stay as they are
    assert json.loads((tmp_path / "b" / "models" / "ltr" / "active.json").read_text())["version"] == "v2"


def test_a_pull_never_overwrites_work_done_here(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    writer = ArtifactStore(url, make_home(tmp_path / "a"))
    writer.push()
    home = tmp_path / "b"
    home.mkdir()
    reader = ArtifactStore(url, home)
    reader.pull()
    pointer = home / "models" / "ltr" / "active.json"
    pointer.write_text('{"version": "v9", "history": ["v1"]}')  # a swap made here, not yet pushed
    stat = pointer.stat()
    os.utime(pointer, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    (tmp_path / "a" / "models" / "ltr" / "active.json").write_text('{"version": "v1", "history": ["v0"]}')
    writer.push_state()
    pulled = reader.pull()
    assert pulled.kept == 1 and json.loads(pointer.read_text())["version"] == "v9"
    again = reader.pull()  # a replica pulls at every poll: the work stays at every one
    assert again.kept == 1 and json.loads(pointer.read_text())["version"] == "v9"


def test_a_push_never_undoes_a_swap_made_through_another_home(tmp_path: Path) -> None:
    """The nightly job's home, behind the store, pushes its unchanged ``active.json``: the rollback an operator
    made through a replica stays (as a pull keeps work done here, a push keeps work done in the store)."""
    url = f"file://{tmp_path / 'store'}"
    job, replica = tmp_path / "job", tmp_path / "replica"
    registered(job, tmp_path, ("v1", "v2"))
    ArtifactStore(url, job).push()
    replica.mkdir()
    ArtifactStore(url, replica).pull()
    from core.registry import ModelRegistry

    ModelRegistry(replica / "models").rollback("ltr")  # POST /v1/admin/models/ltr/rollback on the replica
    assert ArtifactStore(url, replica).push_state().files == 1
    (job / "suggest").mkdir()
    (job / "suggest" / "searches.json").write_text("{}")  # the job's own work
    pushed = ArtifactStore(url, job).push()
    assert pushed.files == 1 and pushed.kept == 1
    assert json.loads((tmp_path / "store" / "models" / "ltr" / "active.json").read_text())["version"] == "v1"
    assert ArtifactStore(url, job).pull().files == 1  # the job's home takes the rollback at its next pull
    assert ModelRegistry(job / "models").active_version("ltr") == "v1"


def test_a_kept_file_is_read_from_the_store_once_per_manifest_entry(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A home that only pushes, behind another home's rebuild of a file of the same size, keeps its file: the
    store's copy is read once to tell it is another file, not at every push (a whole index file, each night)."""
    url = f"file://{tmp_path / 'store'}"
    job, other = make_home(tmp_path / "job"), tmp_path / "other"
    ArtifactStore(url, job).push()
    other.mkdir()
    ArtifactStore(url, other).pull()
    (other / "indexes" / "default" / "fp" / "vectors.npy").write_bytes(b"\x02" * 5000)  # rebuilt, same size
    ArtifactStore(url, other).push()
    reads: list[str] = []
    stored_digest = ArtifactStore._stored_digest
    monkeypatch.setattr(ArtifactStore, "_stored_digest",
                        lambda self, rel: reads.append(rel) or stored_digest(self, rel))
    assert [ArtifactStore(url, job).push().kept for _ in range(3)] == [1, 1, 1]
    assert reads == ["indexes/default/fp/vectors.npy"]
    assert ArtifactStore(url, job).pull().files == 1  # a pull takes the store's copy, and the record with it
    assert (job / "indexes" / "default" / "fp" / "vectors.npy").read_bytes() == b"\x02" * 5000


def test_pulls_into_one_home_at_the_same_time_take_turns(tmp_path: Path) -> None:
    import threading

    url = f"file://{tmp_path / 'store'}"
    home = make_home(tmp_path / "a")
    for n in range(20):  # enough files that two pulls overlap
        (home / "indexes" / "default" / "fp" / f"part{n}.bin").write_bytes(os.urandom(200_000))
    ArtifactStore(url, home).push()
    replica = tmp_path / "b"
    replica.mkdir()
    failures: list[BaseException] = []

    def pull() -> None:  # each server worker pulls into the shared home as it starts
        try:
            ArtifactStore(url, replica).pull()
        except BaseException as error:  # noqa: BLE001 - collected for the assertion
            failures.append(error)

    workers = [threading.Thread(target=pull) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    assert (replica / "indexes" / "default" / "fp" / "part19.bin").read_bytes() == \
        (home / "indexes" / "default" / "fp" / "part19.bin").read_bytes()
    assert ArtifactStore(url, replica).pull().files == 0


def test_a_file_changed_in_the_store_during_a_pull_is_refused(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    ArtifactStore(url, make_home(tmp_path / "a")).push()
    (tmp_path / "store" / "models" / "ltr" / "v1" / "model.txt").write_text("half written")
    (tmp_path / "b").mkdir()
    with pytest.raises(NotReady, match=r"models/ltr/v1/model.txt changed while it was read"):
        ArtifactStore(url, tmp_path / "b").pull()
    assert not (tmp_path / "b" / "models" / "ltr" / "v1" / "model.txt").exists()


def test_a_file_that_left_the_store_during_a_pull_is_refused(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    ArtifactStore(url, make_home(tmp_path / "a")).push()
    (tmp_path / "store" / "models" / "ltr" / "v1" / "model.txt").unlink()  # a push dropped it meanwhile
    (tmp_path / "b").mkdir()
    with pytest.raises(NotReady, match=r"models/ltr/v1/model.txt changed while it was read.*pull again"):
        ArtifactStore(url, tmp_path / "b").pull()  # before: FileNotFoundError


@pytest.mark.parametrize("how", ["failed", "killed"])
def test_the_files_a_pull_that_stopped_put_in_place_are_updated_by_the_next(tmp_path: Path, how: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A pull that stops (a file changed in the store while it was read; the process killed before it recorded
    anything) leaves the files it fetched as the store's: the next pull updates them once the store moves on,
    and a push does not publish them back. Before, they read as work done here, kept at every pull."""
    url = f"file://{tmp_path / 'store'}"
    builder = ArtifactStore(url, make_home(tmp_path / "a"))
    builder.push()
    model = tmp_path / "store" / "models" / "ltr" / "v1" / "model.txt"
    model.write_text("half written")  # the index's file comes first, then this one fails its digest
    replica = ArtifactStore(url, tmp_path / "b")
    (tmp_path / "b").mkdir()
    if how == "killed":  # nothing recorded after the files were put in place
        monkeypatch.setattr(replica, "_save_local_state", lambda state: (_ for _ in ()).throw(SystemExit(9)))
    with pytest.raises((NotReady, SystemExit)):
        replica.pull()
    if how == "killed":  # and killed again: the second pull's record keeps what the first put in place
        with pytest.raises(SystemExit):
            replica.pull()
    monkeypatch.undo()
    vectors = tmp_path / "b" / "indexes" / "default" / "fp" / "vectors.npy"
    assert vectors.read_bytes() == b"\x01" * 5000
    model.write_text("trees")
    (tmp_path / "a" / "indexes" / "default" / "fp" / "vectors.npy").write_bytes(b"\x02" * 6000)  # a rebuilt index
    builder.push()
    assert ArtifactStore(url, tmp_path / "b").push().files == 0  # a push first: the old copy is not published back
    assert (tmp_path / "store" / "indexes" / "default" / "fp" / "vectors.npy").read_bytes() == b"\x02" * 6000
    pulled = ArtifactStore(url, tmp_path / "b").pull()
    assert vectors.read_bytes() == b"\x02" * 6000 and pulled.kept == 0
    assert ArtifactStore(url, tmp_path / "b").push().files == 0
    assert not (tmp_path / "b" / ".artifacts.pulling.json").exists()


def test_a_damaged_record_of_digests_is_read_again_from_the_files(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    url = f"file://{tmp_path / 'store'}"
    home = make_home(tmp_path / "a")
    ArtifactStore(url, home).push()
    (home / ".artifacts.json").write_text("{broken")
    assert ArtifactStore(url, home).push().files == 0  # before: JSONDecodeError
    assert ".artifacts.json" in caplog.text
    (tmp_path / "b").mkdir()
    ArtifactStore(url, tmp_path / "b").pull()
    (tmp_path / "b" / ".artifacts.json").write_text("")
    assert ArtifactStore(url, tmp_path / "b").pull().files == 0


def test_a_store_without_a_manifest_is_not_pulled_from(tmp_path: Path) -> None:
    (tmp_path / "typo").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(NotFound, match=r"typo has no MANIFEST.json"):
        ArtifactStore(f"file://{tmp_path / 'typo'}", tmp_path / "b").pull()  # before: nothing pulled, no word


def test_a_deleted_model_version_leaves_the_store_and_the_replicas(tmp_path: Path) -> None:
    from core.registry import ModelRegistry

    url = f"file://{tmp_path / 'store'}"
    home = tmp_path / "a"
    registry = ModelRegistry(home / "models")
    for name in ("one", "two", "three"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.txt").write_text(name)
        registry.register("ltr", folder, base_model="lightgbm", activate=name != "three")
    writer = ArtifactStore(url, home)
    writer.push()
    replica = tmp_path / "b"
    replica.mkdir()
    reader = ArtifactStore(url, replica)
    reader.pull()
    assert (replica / "models" / "ltr" / "v1" / "model.txt").read_text() == "one"
    registry.delete("ltr", "v1")
    registry.delete("ltr", "v3")
    writer.push()
    manifest = json.loads((tmp_path / "store" / MANIFEST).read_text())
    assert not [rel for rel in manifest if rel.startswith(("models/ltr/v1/", "models/ltr/v3/"))]
    assert "models/ltr/v2/model.txt" in manifest and "models/ltr/deleted.json" in manifest
    stored = [p.parent.name for p in (tmp_path / "store" / "models" / "ltr").rglob("*") if p.is_file()]
    assert "v1" not in stored and "v3" not in stored and "v2" in stored  # the files went too
    reader.pull()
    remaining = ModelRegistry(replica / "models")
    assert [v.version for v in remaining.versions("ltr")] == ["v2"] and remaining.active_version("ltr") == "v2"
    assert not (replica / "models" / "ltr" / "v1").exists()
    assert reader.pull().files == 0 and writer.push().files == 0


def test_two_homes_deleting_different_versions_keep_both_records_and_publish_neither(tmp_path: Path) -> None:
    """Home b pulled v1-v4, then a deleted v2 and pushed, and b deleted v4 and pushed without pulling. Before, b's
    list replaced the store's (v2's record lost) and b published its copy of v2 again."""
    from core.registry import ModelRegistry

    url = f"file://{tmp_path / 'store'}"
    a, b = tmp_path / "a", tmp_path / "b"
    registry_a = registered(a, tmp_path, ("one", "two", "three", "four"))
    registry_a.activate("ltr", "v1")
    ArtifactStore(url, a).push()
    b.mkdir()
    ArtifactStore(url, b).pull()
    registry_a.delete("ltr", "v2")
    ArtifactStore(url, a).push()
    ModelRegistry(b / "models").delete("ltr", "v4")
    ArtifactStore(url, b).push()
    listed = json.loads((tmp_path / "store" / "models" / "ltr" / "deleted.json").read_text())
    assert [entry["version"] for entry in listed] == ["v2", "v4"]
    manifest = json.loads((tmp_path / "store" / MANIFEST).read_text())
    assert not [rel for rel in manifest if rel.startswith(("models/ltr/v2/", "models/ltr/v4/"))]
    ArtifactStore(url, b).pull()  # b drops its copy of v2, deleted through a
    assert [v.version for v in ModelRegistry(b / "models").versions("ltr")] == ["v1", "v3"]
    ArtifactStore(url, a).pull()
    assert [v.version for v in ModelRegistry(a / "models").versions("ltr")] == ["v1", "v3"]


def test_a_published_model_version_never_changes(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    ArtifactStore(url, make_home(tmp_path / "a")).push()  # ltr v1: "trees"
    other = make_home(tmp_path / "c")
    (other / "models" / "ltr" / "v1" / "model.txt").write_text("other trees")  # v1 trained here, not the store's
    clash = ArtifactStore(url, other)
    pulled = clash.pull()
    assert pulled.kept == 1 and pulled.clashes == ("models/ltr/v1",)
    assert (other / "models" / "ltr" / "v1" / "model.txt").read_text() == "other trees"
    with pytest.raises(Conflict, match="already holds models/ltr/v1 with other files"):
        clash.push()
    assert (tmp_path / "store" / "models" / "ltr" / "v1" / "model.txt").read_text() == "trees"  # nothing uploaded


def test_the_api_keys_pulled_are_the_owners_only(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    home = make_home(tmp_path / "a")
    (home / "keys.json").write_text("[]")  # a key file with no key yet
    os.chmod(home / "keys.json", 0o600)
    ArtifactStore(url, home).push()
    replica = tmp_path / "b"
    replica.mkdir()
    ArtifactStore(url, replica).pull()
    assert (replica / "keys.json").stat().st_mode & 0o777 == 0o600


def test_rules_and_synonyms_files_settings_name_are_pushed_when_in_the_home(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    home = make_home(tmp_path / "a")
    (home / "synonyms.txt").write_text("taladro => drill\n")
    (home / "merch.yaml").write_text("hide: [P1]\n")
    (tmp_path / "elsewhere.txt").write_text("outside the home: each machine keeps its own\n")
    named = [home / "synonyms.txt", home / "merch.yaml", tmp_path / "elsewhere.txt", home / "missing.txt"]
    writer = ArtifactStore(url, home)
    assert writer.push(extra=named).files == 5
    manifest = json.loads((tmp_path / "store" / MANIFEST).read_text())
    assert {"synonyms.txt", "merch.yaml"} <= set(manifest) and "elsewhere.txt" not in str(manifest)
    (home / "merch.yaml").write_text("hide: [P2]\n")  # PUT /v1/admin/rules on the builder
    assert writer.push_state(named).files == 1
    replica = tmp_path / "b"
    replica.mkdir()
    ArtifactStore(url, replica).pull()
    assert (replica / "merch.yaml").read_text() == "hide: [P2]\n"


def test_a_manifest_or_deleted_list_naming_files_outside_the_home_is_refused(tmp_path: Path) -> None:
    from core.errors import InvalidInput

    store = tmp_path / "store"
    url = f"file://{store}"
    ArtifactStore(url, make_home(tmp_path / "a")).push()
    manifest = json.loads((store / MANIFEST).read_text())
    (store / "escaped.txt").write_text("x")
    for bad in ("../escaped.txt", str(tmp_path / "abs.txt"), "rules/a\x00b.yaml", ".artifacts.json",
                "./.artifacts.pulling.json"):
        (store / MANIFEST).write_text(json.dumps({**manifest, bad: "0" * 64}))
        home = tmp_path / "b"
        home.mkdir(exist_ok=True)
        with pytest.raises(InvalidInput, match="not a file in an artifact home"):
            ArtifactStore(url, home).pull()  # before: written outside the home
        assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "abs.txt").exists()
        assert not (home / "models").exists()  # nothing pulled
    (store / MANIFEST).write_text(json.dumps(manifest))
    victim = tmp_path / "victim"
    victim.mkdir()
    listing = tmp_path / "b" / "models" / "ltr" / "deleted.json"
    listing.parent.mkdir(parents=True)
    listing.write_text(json.dumps([{"version": "../../../victim"}]))
    ArtifactStore(url, tmp_path / "b").pull()
    assert victim.is_dir()  # before: removed as a "deleted version"


def test_a_pull_moves_the_pointer_after_the_files_it_points_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"file://{tmp_path / 'store'}"
    home = make_home(tmp_path / "a")
    writer = ArtifactStore(url, home)
    writer.push()
    reader = ArtifactStore(url, tmp_path / "b")
    reader.pull()
    (home / "models" / "ltr" / "v2").mkdir()
    (home / "models" / "ltr" / "v2" / "model.txt").write_text("more trees")
    (home / "models" / "ltr" / "active.json").write_text('{"version": "v2", "history": ["v1"]}')
    writer.push()
    fetched: list[str] = []
    get_file = reader.fs.get_file

    def recording(source: str, target: str) -> None:
        fetched.append(source.rsplit("/store/", 1)[1])
        if source.endswith("v2/model.txt"):
            raise OSError("connection lost")  # the pull dies here
        get_file(source, target)

    monkeypatch.setattr(reader.fs, "get_file", recording)
    with pytest.raises(OSError, match="connection lost"):
        reader.pull()
    assert fetched == ["models/ltr/v2/model.txt"]  # before: active.json first
    assert json.loads((tmp_path / "b" / "models" / "ltr" / "active.json").read_text())["version"] == "v1"


def test_a_version_deleted_here_is_not_pulled_back_and_a_clashing_one_gets_no_store_file(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    home = tmp_path / "a"
    registry = registered(home, tmp_path, ("one", "two"))
    store = ArtifactStore(url, home)
    store.push()
    registry.delete("ltr", "v1")
    assert store.pull().files == 0 and not (home / "models" / "ltr" / "v1").exists()  # before: fetched back
    store.push()
    assert not [rel for rel in json.loads((tmp_path / "store" / MANIFEST).read_text()) if "/v1/" in rel]
    other = make_home(tmp_path / "c")  # its own v2, another model registered here: other files, another manifest
    mine = other / "models" / "ltr" / "v2"
    mine.mkdir()
    (mine / "weights.bin").write_text("mine")
    (mine / "manifest.json").write_text('{"version": "v2", "files": {"weights.bin": "..."}}')
    pulled = ArtifactStore(url, other).pull()
    assert pulled.clashes == ("models/ltr/v2",)
    assert sorted(p.name for p in mine.iterdir()) == ["manifest.json", "weights.bin"]  # before: + model.txt


def test_the_manifest_is_replaced_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"file://{tmp_path / 'store'}"
    writer = ArtifactStore(url, make_home(tmp_path / "a"))
    written: list[str] = []
    pipe_file = writer.fs.pipe_file
    monkeypatch.setattr(writer.fs, "pipe_file", lambda path, data: (written.append(path), pipe_file(path, data)))
    writer.push()
    assert written and not any(path.endswith(f"/{MANIFEST}") for path in written)  # before: written in place
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [MANIFEST, "indexes", "models"]  # no tmp left
    assert len(json.loads((tmp_path / "store" / MANIFEST).read_text())) == 3


def test_a_home_with_linked_folders_and_odd_names_pulls_and_a_clash_is_resolved_by_deleting_here(
        tmp_path: Path) -> None:
    from core.registry import ModelRegistry

    url = f"file://{tmp_path / 'store'}"
    a = tmp_path / "a"
    registered(a, tmp_path, ("one", "two"), {"a\\b .txt": "odd"})  # a backslash and a space: names POSIX allows
    ArtifactStore(url, a).push()
    replica = tmp_path / "replica"
    (tmp_path / "disk" / "models").mkdir(parents=True)
    replica.mkdir()
    (replica / "models").symlink_to(tmp_path / "disk" / "models", target_is_directory=True)  # on another disk
    assert ArtifactStore(url, replica).pull().files == 7  # before: refused as outside the home
    b = tmp_path / "b"  # registered its own v1 before it first pulled
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.txt").write_text("b's own")
    other = ModelRegistry(b / "models")
    other.register("ltr", mine, base_model="lightgbm")
    store_b = ArtifactStore(url, b)
    assert store_b.pull().clashes == ("models/ltr/v1",)
    with pytest.raises(Conflict, match="Delete this home's version"):
        store_b.push()
    other.delete("ltr", "v1")  # as the message says: this home's v1 goes, the store's comes in its place
    store_b.pull()
    assert (b / "models" / "ltr" / "v1" / "model.txt").read_text() == "one"
    store_b.push()
    ArtifactStore(url, a).pull()
    assert (a / "models" / "ltr" / "v1" / "model.txt").read_text() == "one"  # A's v1 stays, here and in the store
    assert (tmp_path / "store" / "models" / "ltr" / "v1" / "model.txt").read_text() == "one"
    (tmp_path / "store" / MANIFEST).write_text("not json{")
    pushed = ArtifactStore(url, a).push()  # an unreadable manifest: every file again, and a new one
    assert pushed.files == len(json.loads((tmp_path / "store" / MANIFEST).read_text())) == 8


def shared_key(tmp_path: Path, names: tuple[str, ...], first: Path | None = None):  # type: ignore[no-untyped-def]
    """The store's url and the homes ``names`` (the first: ``first`` when given), a key made in the first and
    pushed, then pulled by the others; and the key's record and secret."""
    from core.keys import KeyStore

    url = f"file://{tmp_path / 'store'}"
    homes = [first or tmp_path / names[0], *(tmp_path / name for name in names[1:])]
    record, key = KeyStore(homes[0] / "keys.json").create("default", ["search"], "storefront")
    ArtifactStore(url, homes[0]).push()
    for home in homes[1:]:
        home.mkdir()
        ArtifactStore(url, home).pull()
    return url, homes, record, key


def test_a_key_revoked_through_one_home_stays_revoked_whoever_pushes_next(tmp_path: Path) -> None:
    from core.keys import KeyStore

    url, (ops, other, replica), record, key = shared_key(tmp_path, ("ops", "other", "replica"))
    _, etl = KeyStore(other / "keys.json").create("default", ["events"], "etl")  # made there, not pushed yet
    KeyStore(ops / "keys.json").revoke(record.id)
    ArtifactStore(url, ops).push()
    ArtifactStore(url, other).pull()  # changed there since its last pull: merged, not kept as it was
    assert KeyStore(other / "keys.json").verify(key) is None and KeyStore(other / "keys.json").verify(etl)
    ArtifactStore(url, ops).push()
    ArtifactStore(url, other).push()  # before: its copy, with the key live, replaced the store's
    ArtifactStore(url, replica).pull()
    assert KeyStore(replica / "keys.json").verify(key) is None and KeyStore(replica / "keys.json").verify(etl)
    # a home that pushes without pulling first keeps its own new key and the revocation made elsewhere
    _, late = KeyStore(replica / "keys.json").create("default", ["search"], "late")
    ArtifactStore(url, ops).pull()
    KeyStore(ops / "keys.json").revoke(next(k.id for k in KeyStore(ops / "keys.json").keys() if k.name == "etl"))
    ArtifactStore(url, ops).push()
    ArtifactStore(url, replica).push()
    ArtifactStore(url, ops).pull()
    assert KeyStore(ops / "keys.json").verify(late) and KeyStore(ops / "keys.json").verify(etl) is None
    assert ArtifactStore(url, ops).pull().files == 0  # merged once: the next pull moves nothing


def test_a_key_file_that_cannot_be_read_is_neither_published_nor_replaced(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    from core.errors import NotReady
    from core.keys import KeyStore

    url = f"file://{tmp_path / 'store'}"
    home, replica = tmp_path / "a", tmp_path / "b"
    KeyStore(home / "keys.json").create("default", ["search"])
    ArtifactStore(url, home).push()
    replica.mkdir()
    ArtifactStore(url, replica).pull()
    (replica / "keys.json").write_text("[{")
    with pytest.raises(NotReady, match="keys.json cannot be read: it is not JSON"):
        ArtifactStore(url, replica).push()
    KeyStore(home / "keys.json").create("default", ["events"])
    ArtifactStore(url, home).push()
    ArtifactStore(url, replica).pull()
    assert (replica / "keys.json").read_text() == "[{" and "move it away and pull again" in caplog.text


def test_folders_an_index_build_or_save_is_still_writing_are_not_published(tmp_path: Path) -> None:
    """A push while ``shoprank index`` builds (or after a build or save was cut short) shares the finished index
    only: every new replica would download the others; a store an older push filled with them is cleaned."""
    url = f"file://{tmp_path / 'store'}"
    home = make_home(tmp_path / "a")
    index = home / "indexes" / "default"
    for folder in ("fp.building", "fp.old", "fp/pending-1a2b"):
        (index / folder).mkdir()
        (index / folder / "vectors.npy").write_bytes(b"\x02" * 10)
    (tmp_path / "store" / "indexes" / "default" / "fp.building").mkdir(parents=True)  # an older push's
    (tmp_path / "store" / "indexes" / "default" / "fp.building" / "old.npy").write_bytes(b"\x03")
    (tmp_path / "store" / MANIFEST).write_text(json.dumps({"indexes/default/fp.building/old.npy": "0" * 64}))
    assert ArtifactStore(url, home).push().files == 3
    manifest = json.loads((tmp_path / "store" / MANIFEST).read_text())
    assert sorted(manifest) == ["indexes/default/fp/vectors.npy", "models/ltr/active.json", "models/ltr/v1/model.txt"]
    assert not (tmp_path / "store" / "indexes" / "default" / "fp.building" / "old.npy").exists()


def test_a_pull_cut_off_leaves_no_partial_file_for_a_push_to_publish(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"file://{tmp_path / 'store'}"
    ArtifactStore(url, make_home(tmp_path / "a")).push()
    replica = tmp_path / "b"
    replica.mkdir()
    store = ArtifactStore(url, replica)
    get_file = store.fs.get_file

    def cut_off(remote: str, local: str, **kwargs: object) -> None:
        if remote.endswith("model.txt"):
            Path(local).write_bytes(b"tr")  # part of it arrived
            raise ConnectionError("connection reset")
        get_file(remote, local, **kwargs)

    monkeypatch.setattr(store.fs, "get_file", cut_off)
    with pytest.raises(ConnectionError):
        store.pull()
    folder = replica / "models" / "ltr" / "v1"
    left = [p.name for p in folder.iterdir()]
    assert left and all(name.endswith(".pull") for name in left)
    assert store.push().files == 0  # the partial download is not shared
    monkeypatch.undo()
    assert ArtifactStore(url, replica).pull().files == 2  # the index came whole before the cut
    assert [p.name for p in folder.iterdir()] == ["model.txt"]  # and the next pull removes it


def _manifest(fill: bytes) -> bytes:
    """An index manifest of 100 bytes: a JSON object, as a whole index's reads."""
    return b'{"fill": "' + fill * 88 + b'"}'


def _write_index(folder: Path, fill: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", "products.parquet", "vectors.f32", "bm25/meta.json"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(_manifest(fill) if name == "manifest.json" else fill * 100)


@pytest.mark.parametrize("cut", ["download", "swap"])
def test_an_index_is_pulled_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: str) -> None:
    """A pull cut off while it fetched an index's files (or between the two renames that move it in) leaves the
    index as it was: before, the files fetched before the cut were in place, a new manifest beside old data."""
    url, job, replica, index = _index_pulled(tmp_path)
    _write_index(job / index, b"2")  # rebuilt: every file changes
    (job / index / "bm25" / "segment.idx").write_bytes(b"new")
    ArtifactStore(url, job).push()
    store = ArtifactStore(url, replica)
    if cut == "download":
        get_file = store.fs.get_file

        def cut_off(remote: str, local: str, **kwargs: object) -> None:
            if remote.endswith("vectors.f32"):
                raise ConnectionError("connection reset")
            get_file(remote, local, **kwargs)

        monkeypatch.setattr(store.fs, "get_file", cut_off)
    else:
        import core.artifacts

        def killed(path: Path) -> None:
            path.rename(path.with_name(path.name + ".old"))
            raise SystemExit(9)

        monkeypatch.setattr(core.artifacts, "replace_folder", killed)
    with pytest.raises((ConnectionError, SystemExit)):
        store.pull()
    if cut == "swap":  # no index in place: a load finishes the swap (ProductIndex.recover), or the next pull
        assert not (replica / index).exists()
        assert (replica / "indexes" / "default" / "fp.old" / "manifest.json").read_bytes() == _manifest(b"1")
    else:
        held = {p.relative_to(replica / index): p.read_bytes() for p in (replica / index).rglob("*") if p.is_file()}
        assert held == {Path("manifest.json"): _manifest(b"1")} | {
            Path(name): b"1" * 100 for name in ("products.parquet", "vectors.f32", "bm25/meta.json")}
    assert not (replica / "indexes" / "default" / "fp.building").exists()
    monkeypatch.undo()
    assert ArtifactStore(url, replica).pull().files == 5
    assert sorted(p.name for p in (replica / "indexes" / "default").iterdir()) == ["fp", "fp.lock"]
    assert (replica / index / "vectors.f32").read_bytes() == b"2" * 100
    assert (replica / index / "bm25" / "segment.idx").read_bytes() == b"new"
    assert ArtifactStore(url, replica).push().files == 0 and ArtifactStore(url, replica).pull().files == 0


def _index_rebuilt_and_swap_made(tmp_path: Path, fill: bytes) -> tuple[str, Path, Path]:
    """The store's url, the nightly job's home and a replica's, both in step with the store, then: the job has
    rebuilt its index (``vectors.npy`` filled with ``fill``), and a swap was made through the replica; neither
    pushed yet."""
    url = f"file://{tmp_path / 'store'}"
    job, replica = make_home(tmp_path / "job"), tmp_path / "replica"
    replica.mkdir()
    ArtifactStore(url, job).push()
    ArtifactStore(url, replica).pull()
    (job / "indexes" / "default" / "fp" / "vectors.npy").write_bytes(fill * 5000)  # a new index
    (replica / "models" / "ltr" / "active.json").write_text('{"version": "v1", "history": ["swapped"]}')
    return url, job, replica


def test_a_push_during_a_long_upload_keeps_the_other_homes_manifest_entries(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The nightly job uploads an index while a swap is pushed through a replica: the job's manifest keeps the
    swap's entry (not the copy it read when it began), so the replicas follow the swap and a new one pulls."""
    url, job, replica = _index_rebuilt_and_swap_made(tmp_path, b"\x04")
    nightly = ArtifactStore(url, job)
    put_file = nightly.fs.put_file

    def slow_upload(local: str, remote: str, **kwargs: object) -> None:
        monkeypatch.setattr(nightly.fs, "put_file", put_file)  # one store object: the replica's push uploads too
        put_file(local, remote, **kwargs)
        assert ArtifactStore(url, replica).push_state().files == 1  # meanwhile, the swap

    monkeypatch.setattr(nightly.fs, "put_file", slow_upload)
    assert nightly.push().files == 1
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert ArtifactStore(url, fresh).pull().files == 3  # before: sha256 differs from MANIFEST.json, every time
    assert (fresh / "models" / "ltr" / "active.json").read_text() == '{"version": "v1", "history": ["swapped"]}'
    assert (fresh / "indexes" / "default" / "fp" / "vectors.npy").read_bytes() == b"\x04" * 5000


def test_a_file_two_homes_upload_at_once_is_named_by_the_copy_the_store_holds(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"file://{tmp_path / 'store'}"
    first, second = make_home(tmp_path / "a"), tmp_path / "b"
    second.mkdir()
    ArtifactStore(url, first).push()
    ArtifactStore(url, second).pull()
    (first / "indexes" / "default" / "fp" / "vectors.npy").write_bytes(b"\x05" * 10)
    (second / "indexes" / "default" / "fp" / "vectors.npy").write_bytes(b"\x06" * 10)
    store = ArtifactStore(url, first)
    put_file = store.fs.put_file

    def upload_then_other(local: str, remote: str, **kwargs: object) -> None:
        monkeypatch.setattr(store.fs, "put_file", put_file)
        put_file(local, remote, **kwargs)
        ArtifactStore(url, second).push()  # its upload ends last: the store holds its copy

    monkeypatch.setattr(store.fs, "put_file", upload_then_other)
    store.push()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    ArtifactStore(url, fresh).pull()
    assert (fresh / "indexes" / "default" / "fp" / "vectors.npy").read_bytes() == b"\x06" * 10


def test_indexes_and_stores_whose_names_read_like_a_build_folder_are_shared(tmp_path: Path) -> None:
    """A build's folders are told by where they are (``indexes/<name>/<fp>.old``, ``<fp>/pending-<id>``), not by
    name alone: an index ``sale.old`` or ``pending-launch``, a store ``eu.old`` or ``pending-eu`` are published,
    and a store an older ShopRank filled keeps them."""
    url = f"file://{tmp_path / 'store'}"
    home = make_home(tmp_path / "a")
    legal = ["indexes/sale.old/fp/manifest.json", "indexes/pending-launch/fp/manifest.json",
             "stores/pending-eu/rules/rules.yaml", "stores/eu.old/indexes/default/fp/manifest.json",
             "stores/eu.old/models/ltr/active.json"]
    staged = ["indexes/sale.old/fp.building/manifest.json", "stores/eu.old/indexes/default/fp.old/manifest.json",
              "stores/pending-eu/indexes/pending-launch/fp/pending-1a2b/products.parquet",
              "stores/eu.old/models/ltr/.deleting-v3/model.txt", "indexes/sale.old/fp/.manifest.json.42.pull"]
    for rel in (*legal, *staged):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(rel)
    assert ArtifactStore(url, home).push().files == 3 + len(legal)
    manifest = json.loads((tmp_path / "store" / MANIFEST).read_text())
    assert set(legal) <= set(manifest) and not set(staged) & set(manifest)
    assert ArtifactStore(url, home).push().files == 0  # and the next push removes none of them
    assert set(legal) <= set(json.loads((tmp_path / "store" / MANIFEST).read_text()))
    assert all((tmp_path / "store" / rel).is_file() for rel in legal)


def test_an_entry_lost_to_overlapping_pushes_is_put_right_by_the_next_push(tmp_path: Path) -> None:
    """Two pushes whose manifests land in the same instant: the store holds the job's new index file, its
    manifest the old digest. The job's next push names the copy the store holds (nothing uploaded again):
    the file is not "changed in the store" and kept, which would leave every pull refusing it."""
    url, job, replica = _index_rebuilt_and_swap_made(tmp_path, b"\x07")
    nightly, through_replica = ArtifactStore(url, job), ArtifactStore(url, replica)
    write_nightly, write_replica = nightly._write_manifest, through_replica._write_manifest

    def nightly_writes(manifest: dict[str, str]) -> None:
        def both_write(theirs: dict[str, str]) -> None:  # the replica's second read came before the job's write
            write_nightly(manifest)
            write_replica(theirs)

        through_replica._write_manifest = both_write  # type: ignore[method-assign]
        through_replica.push_state()

    nightly._write_manifest = nightly_writes  # type: ignore[method-assign]
    assert nightly.push().files == 1
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(NotReady, match="changed while it was read"):
        ArtifactStore(url, fresh).pull()
    again = ArtifactStore(url, job).push()
    assert (again.files, again.bytes, again.kept) == (0, 0, 1)  # kept: the swap made through the replica
    assert ArtifactStore(url, fresh).pull().files == 3
    assert (fresh / "indexes" / "default" / "fp" / "vectors.npy").read_bytes() == b"\x07" * 5000
    assert (fresh / "models" / "ltr" / "active.json").read_text() == '{"version": "v1", "history": ["swapped"]}'


def test_a_pull_skips_what_an_older_push_published_and_no_push_shares(tmp_path: Path) -> None:
    """A store an older ShopRank filled with a pull's partial download and an index build's folder: a pull fetches
    neither (its sweep of partial downloads would otherwise remove the copy it fetched, and fetch it again at
    every poll)."""
    import hashlib

    store = tmp_path / "store"
    files = {"indexes/default/fp/vectors.npy": b"\x01" * 100, "indexes/default/fp/.vectors.npy.4242.pull": b"\x02",
             "indexes/default/fp.building/vectors.npy": b"\x03", "indexes/default/fp/pending-1a2b/live.npy": b"\x04"}
    for rel, data in files.items():
        (store / rel).parent.mkdir(parents=True, exist_ok=True)
        (store / rel).write_bytes(data)
    (store / MANIFEST).write_text(json.dumps({rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}))
    replica = tmp_path / "replica"
    replica.mkdir()
    pulled = ArtifactStore(f"file://{store}", replica)
    assert pulled.pull().files == 1
    assert sorted(str(p.relative_to(replica)) for p in replica.rglob("*") if p.is_file()) == [
        ".artifacts.json", ".artifacts.lock", "indexes/default/fp.lock", "indexes/default/fp/vectors.npy"]
    again = pulled.pull()
    assert (again.files, again.unchanged) == (0, 1)


def test_a_key_revoked_during_another_homes_long_push_stays_revoked(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The nightly job uploads an index (minutes) while a key is revoked and pushed through another home: the
    key file the job uploads after it holds the revocation, and so do the replicas that pull."""
    from core.keys import KeyStore

    url, (job, ops, replica), record, key = shared_key(tmp_path, ("job", "ops", "replica"), make_home(tmp_path / "job"))
    (job / "indexes" / "default" / "fp" / "vectors.npy").write_bytes(b"\x05" * 5000)  # a new index to upload
    _, etl = KeyStore(job / "keys.json").create("default", ["events"], "etl")  # made by the job, not pushed yet
    nightly = ArtifactStore(url, job)
    put_file = nightly.fs.put_file

    def slow_upload(local: str, remote: str, **kwargs: object) -> None:
        monkeypatch.setattr(nightly.fs, "put_file", put_file)  # one store object: the other push uploads too
        put_file(local, remote, **kwargs)
        KeyStore(ops / "keys.json").revoke(record.id)  # meanwhile, `shoprank keys revoke` through another home
        assert ArtifactStore(url, ops).push(("keys.json",)).files == 1

    monkeypatch.setattr(nightly.fs, "put_file", slow_upload)
    nightly.push()
    ArtifactStore(url, replica).pull()
    for home in (replica, job):
        assert KeyStore(home / "keys.json").verify(key) is None and KeyStore(home / "keys.json").verify(etl)


def test_a_key_file_merged_within_one_tick_of_the_clock_is_published_with_its_own_digest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The merge just before the key file's upload rewrites it; on a file system whose times move in ticks (1 s,
    a jiffy) its size and mtime may stay the same. Its digest is read again, not taken from the last one: the
    manifest names the file the store holds, and the replicas pull it."""
    import re

    from core.keys import KeyStore

    url, (ops, job, replica), record, key = shared_key(tmp_path, ("ops", "job", "replica"))

    def revoke_at(home: Path, when: str) -> None:  # revoked in both homes at other times: files of one size
        KeyStore(home / "keys.json").revoke(record.id)
        file = home / "keys.json"
        file.write_text(re.sub(r'"revoked": "[^"]+"', f'"revoked": "{when}"', file.read_text()))

    revoke_at(ops, "2024-01-01T00:00:00+00:00")
    ArtifactStore(url, ops).push()
    revoke_at(job, "2024-06-01T00:00:00+00:00")
    merge = KeyStore.merge

    def in_one_tick(self: KeyStore, other: bytes | str) -> bool:
        before = self.path.stat()
        changed = merge(self, other)
        os.utime(self.path, ns=(before.st_atime_ns, before.st_mtime_ns))
        return changed

    monkeypatch.setattr(KeyStore, "merge", in_one_tick)
    ArtifactStore(url, job).push(("keys.json",))
    monkeypatch.setattr(KeyStore, "merge", merge)
    ArtifactStore(url, replica).pull()  # before: NotReady, sha256 differs from MANIFEST.json
    assert KeyStore(replica / "keys.json").verify(key) is None
    assert '"revoked": "2024-01-01T00:00:00+00:00"' in (replica / "keys.json").read_text()  # the earlier time


def test_a_linked_index_folder_stays_linked_and_pulls_again(tmp_path: Path) -> None:
    """An index folder that is a link to another disk: the pull stages and swaps beside the folder it points at,
    and the link stays (before: the link was moved aside as fp.old, which no pull could remove: every later pull
    failed with NotADirectoryError)."""
    url = f"file://{tmp_path / 'store'}"
    job, replica = tmp_path / "job", tmp_path / "replica"
    index = Path("indexes") / "default" / "fp"
    _write_index(job / index, b"1")
    ArtifactStore(url, job).push()
    disk = tmp_path / "disk" / "fp"
    disk.mkdir(parents=True)
    (replica / index).parent.mkdir(parents=True)
    (replica / index).symlink_to(disk, target_is_directory=True)
    ArtifactStore(url, replica).pull()
    _write_index(job / index, b"2")
    ArtifactStore(url, job).push()
    assert ArtifactStore(url, replica).pull().files == 4
    assert (replica / index).is_symlink() and (disk / "vectors.f32").read_bytes() == b"2" * 100
    assert sorted(p.name for p in (replica / index).parent.iterdir()) == ["fp", "fp.lock"]
    assert sorted(p.name for p in disk.parent.iterdir()) == ["fp"]


def test_a_first_pull_killed_mid_index_leaves_nothing_taken_for_a_finished_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest is fetched last: a pull killed before it leaves a copy no recovery serves (before: the
    manifest came first in name order, and a load moved the half index in as a finished build)."""
    import shutil

    from core.artifacts import _whole_index
    from core.files import recover_folder, staging_of

    url = f"file://{tmp_path / 'store'}"
    index = Path("indexes") / "default" / "fp"
    _write_index(tmp_path / "job" / index, b"1")
    ArtifactStore(url, tmp_path / "job").push()
    store = ArtifactStore(url, tmp_path / "replica")
    get_file, rmtree = store.fs.get_file, shutil.rmtree

    def killed(remote: str, local: str, **kwargs: object) -> None:
        if remote.endswith("vectors.f32"):
            raise SystemExit(9)
        get_file(remote, local, **kwargs)

    monkeypatch.setattr(store.fs, "get_file", killed)
    monkeypatch.setattr(shutil, "rmtree", lambda path, *a, **k: None if str(path).endswith(".building")
                        else rmtree(path, *a, **k))  # killed: nothing after the kill runs
    with pytest.raises(SystemExit):
        store.pull()
    monkeypatch.undo()
    folder = tmp_path / "replica" / index
    assert staging_of(folder).is_dir() and not (staging_of(folder) / "manifest.json").exists()
    assert recover_folder(folder, _whole_index) is None and not folder.exists()
    ArtifactStore(url, tmp_path / "replica").pull()
    assert (folder / "vectors.f32").read_bytes() == b"1" * 100 and not staging_of(folder).exists()
    # an update cut off the same way: its copy of the index holds no manifest either (before: the old one,
    # linked in first, so a load after the index was deleted took the mix of old and new files for an index)
    _write_index(tmp_path / "job" / index, b"2")
    ArtifactStore(url, tmp_path / "job").push()
    store = ArtifactStore(url, tmp_path / "replica")
    get_file = store.fs.get_file
    monkeypatch.setattr(store.fs, "get_file", killed)
    monkeypatch.setattr(shutil, "rmtree", lambda path, *a, **k: None if str(path).endswith(".building")
                        else rmtree(path, *a, **k))
    with pytest.raises(SystemExit):
        store.pull()
    monkeypatch.undo()
    assert staging_of(folder).is_dir() and not (staging_of(folder) / "manifest.json").exists()
    assert (folder / "manifest.json").read_bytes() == _manifest(b"1")


def test_an_index_changed_here_is_kept_whole(tmp_path: Path) -> None:
    """A replica's own change to an index (an upsert rewrote its manifest and products) and a rebuild in the
    store: the pull keeps this home's index whole (before: the local manifest beside the store's vectors)."""
    url, job, replica, index = _index_pulled(tmp_path)
    for name in ("manifest.json", "products.parquet"):
        (replica / index / name).write_bytes(b"L" * 100)
    _write_index(job / index, b"2")
    ArtifactStore(url, job).push()
    pulled = ArtifactStore(url, replica).pull()
    held = {p.relative_to(replica / index).as_posix(): p.read_bytes()[:1] for p in (replica / index).rglob("*")
            if p.is_file()}
    assert held == {"manifest.json": b"L", "products.parquet": b"L", "vectors.f32": b"1", "bm25/meta.json": b"1"}
    assert (pulled.files, pulled.kept) == (0, 4)


def test_an_index_written_here_while_a_pull_waits_for_it_is_kept_and_a_server_does_not_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A pull decides which files changed here before it takes the index's lock: an upsert that finished while
    it waited for the lock was overwritten (or mixed with the store's files, an index that no longer loaded).
    A server's pull (``wait=False``) leaves an index being written for a later pull instead of waiting with the
    home's transfer lock held (an admin change through the replica waited for the whole write)."""
    from core.files import exclusive

    url, job, replica, index = _index_pulled(tmp_path)
    _write_index(job / index, b"2")
    ArtifactStore(url, job).push()
    with exclusive(replica / index):  # a write of it under way here
        assert ArtifactStore(url, replica).pull(wait=False).files == 0  # before: waited for the write
    assert (replica / index / "vectors.f32").read_bytes() == b"1" * 100
    store = ArtifactStore(url, replica)
    fetch = store._fetch

    def upserted_meanwhile(wanted, state):  # type: ignore[no-untyped-def]
        (replica / index / "products.parquet").write_bytes(b"U" * 100)  # the write this pull waited for
        return fetch(wanted, state)

    monkeypatch.setattr(store, "_fetch", upserted_meanwhile)
    caplog.clear()
    pulled = store.pull()
    assert (pulled.files, pulled.kept) == (0, 4)
    held = {p.name: p.read_bytes() for p in (replica / index).rglob("*") if p.is_file()}
    assert held == {"manifest.json": _manifest(b"1"), "products.parquet": b"U" * 100, "vectors.f32": b"1" * 100,
                    "meta.json": b"1" * 100}
    monkeypatch.undo()
    for _ in range(3):  # a replica's reload ticks: said once for this store manifest, not at every tick
        assert ArtifactStore(url, replica).pull(wait=False).kept == 4
    assert caplog.text.count("this home keeps its own whole") == 1


def _index_pulled(tmp_path: Path, segment: str | None = None) -> tuple[str, Path, Path, Path]:
    """The store's url, a job home and a replica home, and the index folder (home-relative): the job's index
    (fill 1, and the BM25 segment file ``segment``, if any) pushed, and pulled by the replica."""
    url = f"file://{tmp_path / 'store'}"
    job, replica = tmp_path / "job", tmp_path / "replica"
    index = Path("indexes") / "default" / "fp"
    _write_index(job / index, b"1")
    if segment:
        (job / index / "bm25" / segment).write_bytes(segment.encode())
    ArtifactStore(url, job).push()
    ArtifactStore(url, replica).pull()
    return url, job, replica, index


def test_a_rebuilt_index_leaves_its_old_files_behind_in_no_store_and_no_replica(tmp_path: Path) -> None:
    """A rebuild's index has other BM25 segment files than the one before: before, the push kept the old ones'
    manifest entries and files, and every replica's copy of the index gathered them, rebuild after rebuild."""
    url, job, replica, index = _index_pulled(tmp_path, "old.idx")
    _write_index(job / index, b"2")  # the rebuild: the old segment gone, a new one
    (job / index / "bm25" / "old.idx").unlink()
    (job / index / "bm25" / "new.idx").write_bytes(b"new")
    ArtifactStore(url, job).push()
    listed = json.loads((tmp_path / "store" / MANIFEST).read_text())
    assert f"{index.as_posix()}/bm25/new.idx" in listed and f"{index.as_posix()}/bm25/old.idx" not in listed
    assert not (tmp_path / "store" / index / "bm25" / "old.idx").exists()
    assert ArtifactStore(url, replica).pull().files == 5
    assert sorted(p.name for p in (replica / index / "bm25").iterdir()) == ["meta.json", "new.idx"]
    assert ArtifactStore(url, replica).push().files == 0 and ArtifactStore(url, job).pull().files == 0
    state = json.loads((replica / ".artifacts.json").read_text())
    assert not any(rel.endswith("old.idx") for rel in state)


def test_a_home_behind_the_store_neither_drops_nor_publishes_back_an_index_rebuilt_elsewhere(
        tmp_path: Path) -> None:
    """The nightly job pulled, then the index was rebuilt and pushed from another home; the job's full push
    (its index unchanged since its pull): before, it uploaded its old segment again, took the index for one it
    published anew, and dropped the new build's segments from the store (replicas could no longer open BM25)."""
    url = f"file://{tmp_path / 'store'}"
    builder, job, replica = tmp_path / "builder", tmp_path / "job", tmp_path / "replica"
    index = Path("indexes") / "default" / "fp"
    _write_index(builder / index, b"1")
    (builder / index / "bm25" / "seg1.idx").write_bytes(b"seg1")
    ArtifactStore(url, builder).push()
    ArtifactStore(url, job).pull()
    _write_index(builder / index, b"2")  # rebuilt elsewhere: another segment
    (builder / index / "bm25" / "seg1.idx").unlink()
    (builder / index / "bm25" / "seg2.idx").write_bytes(b"seg2")
    ArtifactStore(url, builder).push()
    ArtifactStore(url, job).push()  # behind the store
    listed = {rel for rel in json.loads((tmp_path / "store" / MANIFEST).read_text()) if "/bm25/" in rel}
    assert listed == {f"{index.as_posix()}/bm25/meta.json", f"{index.as_posix()}/bm25/seg2.idx"}
    ArtifactStore(url, replica).pull()
    assert sorted(p.name for p in (replica / index / "bm25").iterdir()) == ["meta.json", "seg2.idx"]
    assert ArtifactStore(url, job).pull().files == 5  # the job catches up: the store's index, whole
    assert sorted(p.name for p in (job / index / "bm25").iterdir()) == ["meta.json", "seg2.idx"]


def test_a_pull_that_fails_keeps_the_records_of_the_index_it_leaves_as_it_was(tmp_path: Path) -> None:
    """A pull of a rebuilt index stopped by a file changed in the store while it was read: before, it dropped
    the records of the old files it had left out of its copy, so every later pull took the index for one changed
    here and kept the old one for good."""
    url, job, replica, index = _index_pulled(tmp_path, "seg1.idx")
    _write_index(job / index, b"2")
    (job / index / "bm25" / "seg1.idx").unlink()
    ArtifactStore(url, job).push()
    vectors = tmp_path / "store" / index / "vectors.f32"
    vectors.write_bytes(b"half written")
    with pytest.raises(NotReady):
        ArtifactStore(url, replica).pull()
    vectors.write_bytes(b"2" * 100)
    pulled = ArtifactStore(url, replica).pull()
    assert (pulled.files, pulled.kept) == (4, 0) and (replica / index / "vectors.f32").read_bytes() == b"2" * 100
    assert not (replica / index / "bm25" / "seg1.idx").exists()
