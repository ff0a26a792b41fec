"""Artifact storage shared by replicas: the serving part of an artifact home, mirrored to a URL.

Replicas that do not share a volume share an artifact store instead: any URL
fsspec opens (``s3://bucket/shoprank``, ``gs://...``, ``file:///mnt/shared/shoprank``).
What is shared is what a replica serves from: the product indexes, the model
registry (versions and active pointers), the experiment file, the Feast registry,
the searched texts behind query suggestions, the products shoppers act on together
(recommendations), the business rules and the API keys. Caches, event spools
and logs stay on each machine, and so does what is not whole yet: an index build
under way (``<name>.building``, and the ``<name>.old`` it replaces), an index save
before its commit, a pull's partial download (a pull removes those a pull cut off left).
A pull records each file it puts in place, and one that stops (a file changed in the store
while it was read, the process killed) leaves its record (``.artifacts.pulling.json``) for
the next: what it fetched is the store's, not work done here, and the next pull updates it.

The store holds the files at their home-relative paths and one ``MANIFEST.json``
(path -> sha256). :meth:`ArtifactStore.push` uploads the files whose digest the
manifest does not have yet, then writes the manifest; :meth:`ArtifactStore.pull`
downloads the files whose digest differs from the last pull (each into a temporary
file, then renamed, so a reader never sees half a file; an index's files into a copy of its folder,
moved in whole, so a reader never sees a new manifest beside old data), the pointers (active versions,
the experiment, the rules) last, so none points at files not pulled yet. Model folders are
immutable once registered, so a pull after a swap moves the small ``active.json``
and any new version. Replicas pull at start and on every ``serving.reload_poll_s``
tick; admin changes made through a replica are pushed at once (``push_state``), with the model
versions they name that the store lacks.
A push leaves a file changed in the store since this home's last push or pull, and not
here, as the store holds it: a home that is behind (the nightly job's) never undoes a swap
made through a replica, as a pull never overwrites work done here.
A push reads the manifest again once its uploads are done and writes it with only
its own changes (the files it uploaded, those it removed), so pushes that overlap keep
each other's entries: a swap pushed through a replica while the nightly job uploads an
index stays published. Only a push whose manifest lands between another's second read
and its write (an instant, not an upload) can lose its entries, and that push's home puts them right at its
next push: a file whose copy in the store is this home's, its manifest entry another, is named again, not kept.

A model version deleted from the registry (``shoprank models delete|prune``) leaves the
store at the next push (its files and manifest entries), and a replica's next pull removes
its copy: the pulled ``deleted.json`` names it, and the store no longer holds it. A push
adds to this home's ``deleted.json`` what the store's lists besides (versions deleted through
another home since this one pulled), and never publishes again a copy of a deleted version.

The API keys (``keys.json``) are merged key by key, at a push and at a pull alike
(:meth:`core.keys.KeyStore.merge`): a key made in one home and a key made in another
both stay, and a key revoked anywhere stays revoked whoever pushes next. A push uploads
the key file last, merged with the store's copy as it is then, so a key revoked through
another home while this push uploads an index stays revoked; only a revocation pushed
between that read and this upload (an instant) waits for its home's next push.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from core.errors import Conflict, InvalidInput, NotFound, NotReady
from core.files import (
    exclusive,
    holding,
    recover_folder,
    replace_folder,
    staging_of,
    write_text_atomic,
)
from core.keys import KeyStore
from core.registry import VERSION, ModelRegistry, file_digest

logger = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
KEYS = "keys.json"  # the API keys of every store: merged key by key, never replaced
REGISTRIES = ("models", "stores/*/models")  # the model registries of the default store and the others
_STORE_PARTS = ("indexes", "models", "experiments", "features/registry.db", "suggest", "recommend", "rules")
# the default store's parts, every other store's (stores/<name>/...), and the keys of all
SHARED = (*_STORE_PARTS, *(f"stores/*/{part}" for part in _STORE_PARTS), KEYS)
# what a swap or an experiment change writes
_STATE_PARTS = ("models/*/active.json", "experiments/current.json", "rules/rules.yaml", "rules/synonyms.txt")
STATE = (*_STATE_PARTS, *(f"stores/*/{part}" for part in _STATE_PARTS))
LOCAL = ".artifacts.json"  # digests of the files this home last pushed or pulled
LOCK = ".artifacts.lock"  # held while this home pushes or pulls
PULLING = ".artifacts.pulling.json"  # what a pull puts in place (path -> sha256), until it has recorded it in LOCAL


@dataclass(frozen=True)
class Transfer:
    """What one push or pull moved."""

    files: int
    bytes: int
    unchanged: int
    kept: int = 0  # files changed on one side only since this home's last transfer, left as they are: at a pull,
    # changed here (not overwritten by the store's); at a push, changed in the store (not overwritten by this home's)
    clashes: tuple[str, ...] = ()  # pull: model versions registered here and in the store under one name

    def to_json(self) -> dict[str, object]:
        return {"files": self.files, "bytes": self.bytes, "unchanged": self.unchanged, "kept": self.kept,
                "clashes": list(self.clashes)}


VERSION_FOLDER = re.compile(r"^((?:stores/[^/]+/)?models/[^/]+/v[0-9]+)/")
INDEX_FOLDER = re.compile(r"^((?:stores/[^/]+/)?indexes/[^/]+/[^/]+)/")  # an index (one encoder's), pulled whole


def _version_of(rel: str) -> str | None:
    """The model version folder (``models/ltr/v3``) a home-relative path is in, if any."""
    found = VERSION_FOLDER.match(rel)
    return found.group(1) if found else None


def _is_pointer(rel: str) -> bool:
    """A file that points at others (an active version, the experiment, the rules, the deleted versions)."""
    return rel.endswith("/deleted.json") or any(fnmatch.fnmatch(rel, pattern) for pattern in STATE)


def _deleted_order(entry: Any) -> tuple[str, int]:
    """A ``deleted.json`` entry's place: oldest first, then by version number."""
    version = str(entry.get("version", "")) if isinstance(entry, dict) else ""
    return (str(entry.get("deleted", "")) if isinstance(entry, dict) else "",
            int(version[1:]) if VERSION.match(version) else 0)


def _holds(folder: Path, entry: dict[str, Any]) -> bool:
    """Whether ``folder`` holds the model ``entry`` records (every file, with its digest)."""
    files = entry.get("files")
    return folder.is_dir() and isinstance(files, dict) and bool(files) and all(
        (folder / name).is_file() and file_digest(folder / name) == digest for name, digest in files.items())


def _same_or_absent(folder: Path, entry: dict[str, Any]) -> bool:
    """Whether ``folder`` is absent or holds the model ``entry`` records."""
    return not folder.exists() or _holds(folder, entry)


# the folders of :func:`_shared`'s exceptions, where the code that writes them puts them
_IN_STORE = r"(?:stores/[^/]+/)?"
_UNSHARED = re.compile(rf"^{_IN_STORE}(?:indexes/[^/]+/(?:[^/]+\.(?:building|old)|[^/]+/pending-[^/]*)"
                       rf"|models/[^/]+/\.(?:deleting|registering)-[^/]*)/")


def _shared(rel: str) -> bool:
    """Whether a push shares the home-relative file ``rel``: not a file still being written (``*.tmp``, a pull's
    download ``.<name>.<pid>.pull``, left behind when a pull was cut off) nor a lock, and not in a folder that is
    not whole or is on its way out: an index build (``indexes/<name>/<fp>.building``) and the index it replaces
    (``<fp>.old``), an index save's files before its commit (``indexes/<name>/<fp>/pending-<id>``), a model
    version being registered or deleted (``models/<role>/.registering-<v>``, ``.deleting-<v>``). Published,
    every new replica would download them. Only those places count: an index or a store named ``sale.old`` or
    ``pending-launch`` is shared like any other."""
    name = PurePosixPath(rel).name
    pull = name.startswith(".") and name.endswith(".pull")
    return not (name.endswith((".tmp", ".lock")) or pull or _UNSHARED.match(rel))


INDEX_MANIFEST = "manifest.json"  # an index folder's commit point (retrieval.index), written last
_SAID: set[tuple[str, str, str]] = set()  # warnings said in this process: once per store manifest


def _whole_index(folder: Path) -> bool:
    """Whether ``folder`` holds an index whose manifest reads (as ``retrieval.index`` checks a finished build)."""
    try:
        return isinstance(json.loads((folder / INDEX_MANIFEST).read_text()), dict)
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def _link(source: str, target: str) -> None:
    """``target`` made a hard link of ``source`` (a copy where the file system has none to make)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _dirty(path: Path, recorded: dict[str, Any] | None) -> bool:
    """True when ``path`` is not the copy the last push or pull left (or was never transferred)."""
    stat = path.stat()
    return recorded is None or recorded["size"] != stat.st_size or recorded["mtime_ns"] != stat.st_mtime_ns


class ArtifactStore:
    """The artifact store at ``url`` and the local home it mirrors."""

    def __init__(self, url: str, home: Path) -> None:
        import fsspec

        self.url = url
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
        except (ValueError, ImportError) as error:  # an unknown protocol, or one whose package is not installed
            raise InvalidInput(f"artifact store URL {url!r} cannot be opened ({error}); give a URL fsspec knows, "
                               "e.g. file:///mnt/shared/shoprank or s3://bucket/shoprank") from None
        self.home = home
        self.wait = True  # a pull waits for an index being written here (pull(wait=False): leaves it for later)
        self._kept_late = 0  # a pull's files of indexes found changed here once their lock was held
        self._manifest_digest = ""  # of the store manifest a pull read: what a warning is said once for
        self.pulled_indexes: list[str] = []  # the index folders (home-relative) the last pull moved in
        self._listed: set[str] = set()  # the files the store's manifest lists, as the pull under way read it

    # -- manifests ---------------------------------------------------------------------------

    def remote_manifest(self, strict: bool = True) -> dict[str, str]:
        """The store's manifest; one that cannot be read is an :class:`InvalidInput` (``strict``), else empty:
        a push then uploads every file again and writes a new one."""
        path = f"{self.root}/{MANIFEST}"
        if not self.fs.exists(path):
            return {}
        try:
            manifest = json.loads(self.fs.cat_file(path))
            if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
                raise ValueError("not an object of path -> sha256")
        except ValueError as error:
            if not strict:
                logger.warning("%s/%s cannot be read (%s): this push uploads every file again", self.url, MANIFEST,
                               error)
                return {}
            raise InvalidInput(f"{self.url}/{MANIFEST} is not a manifest ({error}): push the store again from a "
                               "trusted home (`shoprank artifacts push` writes a new one)") from None
        return manifest

    def _local_state(self) -> dict[str, Any]:
        """The digests of this home's files at its last push or pull; only a cache: one that cannot be read is
        empty (every file is hashed again). The files a pull killed before its end put in place are in it, as
        the store's copies that pull fetched (:meth:`_cut_off_pull`), not work done here, for a push as for a
        pull."""
        file = self.home / LOCAL
        state: Any = {}
        if file.is_file():
            try:
                state = json.loads(file.read_text())
            except (ValueError, UnicodeDecodeError) as error:
                logger.warning("%s cannot be read (%s): this home's files are hashed again", file, error)
        state = state if isinstance(state, dict) else {}
        for rel, digest in self._cut_off_pull().items():
            target = self.home / rel
            if target.is_file() and _dirty(target, state.get(rel)) and file_digest(target) == digest:
                self._record(state, rel, digest)
        return state

    def _save_local_state(self, state: dict[str, Any]) -> None:
        write_text_atomic(self.home / LOCAL, json.dumps(state))

    @contextmanager
    def _transfer(self) -> Iterator[None]:
        """One push or pull of this home at a time, across processes (a server's workers all pull into it
        at start and on every poll): held on ``<home>/.artifacts.lock``."""
        with holding(self.home / LOCK):
            yield

    def _local_files(self, patterns: Iterable[str]) -> list[Path]:
        """The home's files that ``patterns`` name and a push shares (:func:`_shared`)."""
        files: set[Path] = set()
        for pattern in patterns:
            for match in self.home.glob(pattern):
                if match.is_file():
                    files.add(match)
                elif match.is_dir():
                    files.update(p for p in match.rglob("*") if p.is_file())
        return sorted(path for path in files if _shared(str(path.relative_to(self.home))))

    def _deleted_entries(self) -> Iterator[tuple[str, Path, dict[str, Any]]]:
        """The model versions this home's registries deleted: home-relative prefix (``models/<role>/<version>/``),
        local folder and the registry's record of it (its files' digests among them)."""
        for pattern in REGISTRIES:
            for listing in self.home.glob(f"{pattern}/*/deleted.json"):
                role = listing.parent
                for entry in ModelRegistry(role.parent).deleted(role.name):
                    if not VERSION.match(str(entry.get("version", ""))):  # a name, never a path ('../..')
                        continue
                    folder = role / entry["version"]
                    yield f"{folder.relative_to(self.home)}/", folder, entry

    def _merge_deleted(self, remote: dict[str, str]) -> None:
        """Before a push: add to each of this home's ``deleted.json`` the versions the store's lists and this one
        does not (deleted through another home since this one last pulled), so the push does not replace the
        store's record with this home's alone. A version this home holds as another model (registered here under
        the same name) is left out: its record would remove this home's own model at the next pull."""
        for pattern in REGISTRIES:
            for listing in self.home.glob(f"{pattern}/*/deleted.json"):
                rel = str(listing.relative_to(self.home))
                if rel not in remote or remote[rel] == file_digest(listing):
                    continue
                try:
                    theirs = json.loads(self.fs.cat_file(f"{self.root}/{rel}"))
                    ours = json.loads(listing.read_text())
                except (OSError, ValueError) as error:
                    logger.warning("%s: the store's %s cannot be read (%s); this home's list replaces it", self.url,
                                   rel, error)
                    continue
                if not isinstance(theirs, list) or not isinstance(ours, list):
                    continue
                known = {str(entry.get("version")) for entry in ours if isinstance(entry, dict)}
                added = [entry for entry in theirs if isinstance(entry, dict)
                         and VERSION.match(str(entry.get("version", ""))) and entry["version"] not in known
                         and _same_or_absent(listing.parent / entry["version"], entry)]
                if added:
                    merged = sorted([*ours, *added], key=_deleted_order)
                    write_text_atomic(listing, json.dumps(merged, indent=2))
                    logger.info("%s: %d versions deleted through other homes added to this home's list (%s)", rel,
                                len(added), ", ".join(str(entry["version"]) for entry in added))

    def _merge_keys(self) -> None:
        """Just before the key file's upload, the last of a push's: add to it the keys and revocations the store's
        copy holds now (made through other homes since this one last pulled, or pushed during this push's uploads),
        so the push neither brings back a key revoked elsewhere nor drops one made elsewhere."""
        keys = KeyStore(self.home / KEYS)
        try:
            if not self.fs.exists(f"{self.root}/{KEYS}"):
                return
            changed = keys.merge(self.fs.cat_file(f"{self.root}/{KEYS}"))
        except (OSError, ValueError) as error:
            logger.warning("%s: the store's %s cannot be read (%s); this home's replaces it", self.url, KEYS, error)
            return
        if changed:
            logger.info("%s: keys made or revoked through other homes added to this home's", KEYS)

    def _merge_pulled_keys(self, pulled: Path, target: Path) -> bool:
        """At a pull: merge the store's key file (downloaded to ``pulled``) into this home's ``target`` rather than
        replace it: keys made here and not pushed yet stay, and keys revoked anywhere are revoked here. When
        either copy cannot be read, this home's stays as it is (the warning says which). True when it changed."""
        try:
            return KeyStore(target).merge(pulled.read_bytes())
        except ValueError as error:
            logger.warning("%s: the store's %s cannot be read (%s); this home's is kept", self.url, KEYS, error)
        except NotReady as error:
            logger.warning("%s; it is kept as it is: move it away and pull again to take the store's copy",
                           error.message)
        return False

    def _deleted_versions(self) -> dict[str, Path]:
        """The folders of model versions this home's registries deleted: home-relative prefix -> local folder."""
        return {prefix: folder for prefix, folder, _ in self._deleted_entries()}

    def _digest(self, path: Path, state: dict[str, Any]) -> str:
        """sha256 of a local file, reused from the last transfer while its size and mtime hold."""
        rel = str(path.relative_to(self.home))
        stat = path.stat()
        known = state.get(rel)
        if known and known["size"] == stat.st_size and known["mtime_ns"] == stat.st_mtime_ns:
            return str(known["sha256"])
        digest = file_digest(path)
        state[rel] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        return digest

    # -- transfers -----------------------------------------------------------------------------

    def push(self, patterns: Iterable[str] = SHARED, extra: Iterable[Path] = ()) -> Transfer:
        """Upload the home's shared files (``patterns``, and the ``extra`` files in the home: a synonyms or
        rules file a setting names) that the store lacks or holds in another version. A file changed in the store
        since this home's last push or pull, and not here, is left as the store holds it (counted in ``kept``):
        a push never undoes a swap made through another home, as a pull never overwrites work done here."""
        with self._transfer():
            return self._push(patterns, extra)

    def _push(self, patterns: Iterable[str], extra: Iterable[Path]) -> Transfer:
        state = self._local_state()
        remote = self.remote_manifest(strict=False)
        self._merge_deleted(remote)
        moved = size = same = 0
        home = self.home.resolve()
        named = {path.resolve() for path in extra if path.is_file() and path.resolve().is_relative_to(home)}
        # a copy of a version deleted (here or through another home) is not published again; a model registered
        # under a deleted version's name (another model, its files other than those recorded) is
        gone = tuple(prefix for prefix, folder, entry in self._deleted_entries() if _holds(folder, entry))
        files = [(path, rel) for path in self._local_files(patterns)
                 if not (rel := str(path.relative_to(self.home))).startswith(gone)]
        files += [(self.home / path.relative_to(home), str(path.relative_to(home))) for path in sorted(named)
                  if str(path.relative_to(home)) not in {rel for _, rel in files}]
        if any(rel == KEYS for _, rel in files):  # a key file that cannot be read is not published (every replica
            # would refuse keyed calls): the NotReady names it, before anything is uploaded
            KeyStore(self.home / KEYS).keys()
            files = [*(item for item in files if item[1] != KEYS), (self.home / KEYS, KEYS)]  # uploaded last
        # a file unchanged here since this home's last push or pull whose store copy differs was changed in the
        # store since (a swap or rollback through another home): this home's older copy would undo it (the key
        # file is merged instead); read before the digests below record the files changed here as transferred
        clean = {rel for path, rel in files if rel != KEYS and not _dirty(path, state.get(rel))}
        digests = {rel: self._digest(path, state) for path, rel in files}
        clashes = sorted({v for rel, digest in digests.items() if (v := _version_of(rel)) and rel in remote
                          and remote[rel] != digest})
        if clashes:  # a published version never changes: replicas serving it would change models unasked
            raise Conflict(f"the store {self.url} already holds {', '.join(clashes)} with other files: this home "
                           "registered another model under the same name. Delete this home's version (`shoprank "
                           "models delete ROLE VERSION`), pull (the store's comes in its place), then register "
                           "this model again: it gets the next free name")
        uploaded: dict[str, str] = {}
        kept: list[str] = []
        fixed: list[str] = []
        in_store = {found.group(1) for rel in remote if (found := INDEX_FOLDER.match(rel))}  # the indexes it holds
        for path, rel in files:
            if rel == KEYS:  # merged with the store's copy as it is now: a revocation pushed through another home
                # during this push's uploads (minutes for an index) stays
                self._merge_keys()
                state.pop(rel, None)  # read again: a merge within one tick of the clock keeps the file's mtime
                digests[rel] = self._digest(path, state)
            digest = digests[rel]
            if remote.get(rel) == digest:
                same += 1
                continue
            if rel in clean and rel not in remote and rel in state and (found := INDEX_FOLDER.match(rel)) \
                    and found.group(1) in in_store:  # another home published this index anew without this file:
                kept.append(rel)  # not published back (this home is behind the store)
                continue
            if rel in clean and rel in remote and state.get(rel, {}).get("store_differs") == remote[rel]:
                kept.append(rel)  # the store's copy under this entry was read at an earlier push: another file
                continue
            if rel in clean and rel in remote and (held := self._holds_copy(rel, path, digest)) is not None:
                if held:  # the store holds this home's copy and its manifest names another: the entry of an upload
                    # of this home's was lost to a push that overlapped it (the other home's manifest written last);
                    # it is put right (else every pull refuses the file), and nothing is uploaded again
                    uploaded[rel] = digest
                    fixed.append(rel)
                    same += 1
                else:  # read once for this manifest entry: the next pushes keep the file without reading it again
                    state[rel]["store_differs"] = remote[rel]
                    kept.append(rel)
                continue
            self.fs.makedirs(f"{self.root}/{Path(rel).parent}", exist_ok=True)
            self.fs.put_file(str(path), f"{self.root}/{rel}")
            uploaded[rel] = digest
            moved += 1
            size += path.stat().st_size
        # files of deleted model versions leave the store, and so do any a push of an older ShopRank published
        # that no push shares (an index build's folder, a pull's partial download)
        deleted = tuple(prefix for prefix, folder in self._deleted_versions().items() if not folder.exists())
        dropped = [rel for rel in remote if (deleted and rel.startswith(deleted)) or not _shared(rel)]
        # an index this push publishes anew (a file of it changed here) is published whole: the store's files of it
        # this home no longer has (a rebuilt index's old BM25 segments) leave the store, else every replica's copy
        # would gather them. A home behind the store (its index unchanged here) drops nothing of it
        published = {found.group(1) for rel in uploaded if rel not in clean and (found := INDEX_FOLDER.match(rel))}
        here = {rel for _, rel in files}
        dropped += [rel for rel in remote if rel not in here and rel not in dropped
                    and (found := INDEX_FOLDER.match(rel)) and found.group(1) in published]
        if uploaded or dropped:  # the manifest first: a reader never sees an entry whose file is gone
            self._write_manifest(self._updated_manifest(remote, uploaded, dropped))
        for rel in dropped:
            if self.fs.exists(f"{self.root}/{rel}"):
                self.fs.rm_file(f"{self.root}/{rel}")
        self._save_local_state(state)
        (self.home / PULLING).unlink(missing_ok=True)  # what a killed pull put in place is recorded now
        logger.info("pushed %d files (%d bytes) to %s; %d unchanged; %d files removed (of deleted model versions, "
                    "not shared, or gone from an index published anew)", moved, size, self.url, same, len(dropped))
        if fixed:
            logger.warning("%d files of this home's that %s holds had other sha256 in its %s (an entry lost to pushes "
                           "that overlapped); their entries were put right: %s", len(fixed), self.url, MANIFEST,
                           ", ".join(fixed[:5]) + (", ..." if len(fixed) > 5 else ""))
        if kept:
            logger.info("%d files changed in %s since this home's last push or pull, and not here, were left as the "
                        "store holds them (a pull brings them here): %s", len(kept), self.url,
                        ", ".join(kept[:5]) + (", ..." if len(kept) > 5 else ""))
        return Transfer(moved, size, same, len(kept))

    def _updated_manifest(self, read: dict[str, str], uploaded: dict[str, str],
                          dropped: list[str]) -> dict[str, str]:
        """The store's manifest as it is now, read again once a push's uploads are done (minutes for an index), with
        that push's own changes: the files it ``uploaded`` (path -> sha256) and those it ``dropped``. The copy
        ``read`` when the push began is not written back: the entries another home pushed meanwhile (a swap
        through a replica) stay. A file that home uploaded too is named with the digest of the copy the store
        holds now (whichever upload ended last), never one the store no longer holds."""
        manifest = self.remote_manifest(strict=False) or dict(read)
        for rel, digest in uploaded.items():
            if rel in manifest and manifest[rel] not in (read.get(rel), digest):  # pushed through another home too
                digest = self._stored_digest(rel)
            manifest[rel] = digest
        for rel in dropped:
            manifest.pop(rel, None)
        return manifest

    def _holds_copy(self, rel: str, path: Path, digest: str) -> bool | None:
        """Whether the store's copy of ``rel`` is this home's file ``path`` (sha256 ``digest``); None when the store
        holds no copy. Sizes are compared first: a copy of another size is not read."""
        try:
            if self.fs.size(f"{self.root}/{rel}") != path.stat().st_size:
                return False
            return self._stored_digest(rel) == digest
        except FileNotFoundError:
            return None

    def _stored_digest(self, rel: str) -> str:
        """sha256 of the store's copy of the home-relative file ``rel``."""
        digest = hashlib.sha256()
        with self.fs.open(f"{self.root}/{rel}", "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    def _write_manifest(self, remote: dict[str, str]) -> None:
        """Replace the store's manifest as a whole: a local or mounted store gets a new file renamed over the old
        one (written in place, a reader could read it half-written, and a crash left it broken); an object store
        (S3, GCS) replaces an object in one request anyway."""
        data = json.dumps(remote, indent=0, sort_keys=True).encode()
        path = f"{self.root}/{MANIFEST}"
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else tuple(self.fs.protocol)
        if not {"file", "local"} & set(protocols):
            self.fs.pipe_file(path, data)
            return
        tmp = f"{self.root}/.{MANIFEST}.{uuid.uuid4().hex}.tmp"
        self.fs.pipe_file(tmp, data)
        os.replace(tmp, path)

    def pull(self, wait: bool = True) -> Transfer:
        """Download the files whose digest in the store differs from this home's copy. A file
        changed here since the last transfer (a swap made here and not yet pushed, a model
        built here) is kept, at every pull: a pull never overwrites local work. A store without a manifest (a
        mistyped URL, one never pushed to) is refused (:class:`NotFound`), never taken for an empty one.
        ``wait`` False (a server's reload tick): an index being built or written here is left for a later pull,
        not waited for while this home's transfer lock is held (an admin change through a replica pushes under
        it)."""
        self.wait, self._kept_late, self.pulled_indexes = wait, 0, []
        with self._transfer():
            return self._pull()

    def _pull(self) -> Transfer:
        state = self._local_state()
        if not self.fs.exists(f"{self.root}/{MANIFEST}"):  # a mistyped URL, or a store never pushed to
            raise NotFound(f"nothing to pull: {self.url} has no {MANIFEST} (check the URL, or run `shoprank "
                           "artifacts push` where the indexes and models were built)")
        remote = self.remote_manifest()
        for rel in remote:
            self._check_entry(rel)
        # what a push of an older ShopRank published and no push shares (an index build's folder, a pull's partial
        # download) is not fetched: a push removes it from the store
        remote = {rel: digest for rel, digest in remote.items() if _shared(rel)}
        for rel in [rel for rel in state if not _shared(rel)]:  # fetched by an older ShopRank's pull
            del state[rel]
        # a pull cut off (the network, the process killed) left its partial downloads: no pull runs in this home
        # now (this one holds its lock), so they are of none (and no manifest entry names one)
        for folder in {(self.home / rel).parent for rel in remote}:
            for leftover in folder.glob(".*.pull"):
                leftover.unlink(missing_ok=True)
        self._manifest_digest = hashlib.sha256(json.dumps(remote, sort_keys=True).encode()).hexdigest()
        self._listed = set(remote)
        moved = size = same = kept = 0
        clashes: set[str] = set()
        wanted: list[tuple[str, str]] = []
        for rel, digest in remote.items():
            target = self.home / rel
            if target.is_file():
                if not _dirty(target, state.get(rel)):  # as the last transfer left it
                    if digest in (state[rel]["sha256"], state[rel].get("merged")):  # the key file: merged already
                        same += 1
                        continue
                elif file_digest(target) == digest:  # changed here, to what the store holds
                    self._record(state, rel, digest)
                    same += 1
                    continue
                elif rel != KEYS:  # changed here since the last transfer: not ours to clobber, now or at the next pull
                    # (the key file is merged with the store's instead, below)
                    kept += 1
                    if (version := _version_of(rel)) is not None:
                        clashes.add(version)
                    continue
            wanted.append((rel, digest))
        # a model version registered here under a name the store holds keeps every file of its own: none of the
        # store's is added to it (another model's weights beside this one's, unseen by its checksums); and a
        # version this home deleted is not fetched back (its next push removes it from the store)
        deleted = self._deleted_here(remote)
        skipped = [(rel, d) for rel, d in wanted
                   if _version_of(rel) in clashes or (deleted and rel.startswith(deleted))]
        kept += sum(1 for rel, _ in skipped if _version_of(rel) in clashes)
        # pointers last (active.json, the experiment, the rules, deleted.json): a reader during the pull, or
        # after one that failed, never sees a version active whose files are not all here yet
        wanted = sorted(set(wanted) - set(skipped), key=lambda item: (_is_pointer(item[0]), item[0]))
        if wanted:  # what a pull killed before it records them puts in place; a pull killed before this one
            # left its record, which the state saved at this one's end takes over: both until then
            write_text_atomic(self.home / PULLING, json.dumps(self._cut_off_pull() | dict(wanted)))
        try:
            moved, size = self._fetch(wanted, state)
            kept += self._kept_late
            self._drop_deleted_versions(remote, state)
        finally:  # what was put in place is recorded, the pull stopped or not: else the next pull would take those
            # files for work done here and keep them, the store moving on, and a push would publish them back
            self._save_local_state(state)
            (self.home / PULLING).unlink(missing_ok=True)
        if moved or kept:  # a kept file alone: said at every reload tick of a replica, so not at INFO
            logger.log(logging.INFO if moved else logging.DEBUG, "pulled %d files (%d bytes) from %s; %d unchanged, "
                       "%d changed here and kept", moved, size, self.url, same, kept)
        if clashes:
            logger.warning("model versions registered here and in %s under the same names, with other files: %s; "
                           "this home keeps its own, and cannot push them", self.url, sorted(clashes))
        return Transfer(moved, size, same, kept, tuple(sorted(clashes)))

    def _fetch(self, wanted: list[tuple[str, str]], state: dict[str, Any]) -> tuple[int, int]:
        """Download ``wanted`` (path, sha256) in order, each into a temporary file and then in place, recording
        each in ``state``; the files and bytes moved. An index's files come first, each index moved in whole
        (:meth:`_fetch_index`)."""
        moved = size = 0
        indexes: dict[str, list[tuple[str, str]]] = {}
        for rel, digest in wanted:
            if found := INDEX_FOLDER.match(rel):
                indexes.setdefault(found.group(1), []).append((rel, digest))
        for prefix, files in sorted(indexes.items()):
            done = self._fetch_index(prefix, files, state)
            if done is None:  # kept as it is here (counted), or left for a later pull
                continue
            moved, size = moved + len(files), size + done
            self.pulled_indexes.append(prefix)
        for rel, digest in wanted:
            if INDEX_FOLDER.match(rel):
                continue
            target = self.home / rel
            tmp = self._download(rel, digest, target)
            if rel == KEYS and target.is_file():  # merged, not replaced
                changed = self._merge_pulled_keys(tmp, target)
                tmp.unlink()
                self._record(state, rel, digest, merged=True)
                moved += changed
                size += target.stat().st_size if changed else 0
                continue
            os.replace(tmp, target)
            size += self._record(state, rel, digest)
            moved += 1
        return moved, size

    def _fetch_index(self, prefix: str, files: list[tuple[str, str]], state: dict[str, Any]) -> int | None:
        """Fetch the files of the index folder ``prefix`` into a copy of it (``<fp>.building``, its other files
        linked, not copied) and move that in whole, as a build does (:func:`core.files.replace_folder`), holding
        the index's write lock (no build or write of it meanwhile); the bytes moved. A pull cut off leaves the
        index as it was (never a new manifest beside old data files, or the reverse; its copy gets the manifest
        last, so a copy cut off is never taken for a finished one), and a swap cut off is finished by the next
        pull or load (:func:`core.files.recover_folder`). A folder that is a link is staged and swapped beside
        the folder it points at. An index with a file changed here (checked once its lock is held: a write may
        have finished while this pull waited) is not fetched at all, nor one being written here when ``wait``
        is off (a server's pull): None then."""
        folder = self.home / prefix
        staging = staging_of(folder)
        with exclusive(folder, wait=self.wait) as held:
            if not held:  # a build or write of it under way here: the next pull takes it
                logger.info("index %s is being written here: pulled at a later pull", folder)
                return None
            if (moved := recover_folder(folder, _whole_index)) is not None:
                logger.warning("index %s: a build or pull was cut short while it moved folders; %s is served",
                               folder, moved.name)
            if self._changed_here(prefix, state):  # an upsert here, maybe one that finished while this pull waited
                self._keep_changed(prefix)
                self._kept_late += len(files)
                return None
            shutil.rmtree(staging, ignore_errors=True)
            unlisted: list[str] = []
            try:
                if folder.is_dir():  # all but the manifest, which comes last: a copy cut off before its end has
                    # none, and is never taken for a finished index
                    shutil.copytree(folder, staging, symlinks=True, copy_function=_link,
                                    ignore=lambda at, names: [INDEX_MANIFEST] if at == str(folder) else [])
                    unlisted = self._drop_unlisted(prefix, staging)
                manifest = f"{prefix}/{INDEX_MANIFEST}"
                for rel, digest in sorted(files, key=lambda item: item[0] == manifest):
                    target = staging / rel[len(prefix) + 1:]
                    os.replace(self._download(rel, digest, target), target)
                if manifest not in dict(files) and (folder / INDEX_MANIFEST).is_file():  # this home's, unchanged
                    _link(str(folder / INDEX_MANIFEST), str(staging / INDEX_MANIFEST))
                replace_folder(folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        for rel in unlisted:  # gone from the index now (not before: a pull that fails keeps the folder that holds
            state.pop(rel, None)  # them, and their records)
        return sum(self._record(state, rel, digest) for rel, digest in files)

    def _drop_unlisted(self, prefix: str, staging: Path) -> list[str]:
        """Delete from the copy ``staging`` of the index folder ``prefix`` the files a push shares that the store
        no longer lists (a rebuilt index's old BM25 segments; the copy holds nothing changed here); their paths."""
        dropped = []
        for path in sorted(staging.rglob("*")):
            rel = f"{prefix}/{path.relative_to(staging).as_posix()}"
            if path.is_file() and _shared(rel) and rel not in self._listed:
                path.unlink()
                dropped.append(rel)
        return dropped

    def _changed_here(self, prefix: str, state: dict[str, Any]) -> bool:
        """Whether a file of the index folder ``prefix`` that a push shares is not the copy the last transfer
        left (changed or added here)."""
        folder = self.home / prefix
        return folder.is_dir() and any(
            _dirty(path, state.get(rel)) for path in folder.rglob("*")
            if path.is_file() and _shared(rel := f"{prefix}/{path.relative_to(folder).as_posix()}"))

    def _keep_changed(self, prefix: str) -> None:
        """Say (once per store manifest, not at every reload tick) that the index ``prefix`` changed here is kept
        whole, none of the store's files joining it."""
        said = (self.url, self._manifest_digest, prefix)
        if said in _SAID:
            return
        _SAID.add(said)
        logger.warning("index %s changed here and in %s; this home keeps its own whole (push it, or delete it here "
                       "and pull to take the store's)", prefix, self.url)

    def _download(self, rel: str, digest: str, target: Path) -> Path:
        """The store's ``rel`` in a temporary file beside ``target`` (made with its folder), its digest checked."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.pull")
        try:
            self.fs.get_file(f"{self.root}/{rel}", str(tmp))
        except FileNotFoundError:  # a push removed it meanwhile
            tmp.unlink(missing_ok=True)
            raise self._changed(rel) from None
        if file_digest(tmp) != digest:
            tmp.unlink()
            raise self._changed(rel)
        if rel.endswith(KEYS):  # the API keys' hashes: the owner's only, as where they were made
            os.chmod(tmp, 0o600)
        return tmp

    def _record(self, state: dict[str, Any], rel: str, digest: str, merged: bool = False) -> int:
        """Record this home's ``rel`` as the store's copy (sha256 ``digest``), as pulled (``merged``: the key file,
        merged with this home's: its digest is its own); its size."""
        stat = (self.home / rel).stat()
        state[rel] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        if merged:
            state[rel] |= {"sha256": file_digest(self.home / rel), "merged": digest}
        return stat.st_size

    def _cut_off_pull(self) -> dict[str, str]:
        """What a pull killed before its end was putting in place (path -> sha256): a file left with that digest
        is the store's copy that pull fetched, not work done here."""
        try:
            record = json.loads((self.home / PULLING).read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
        if not isinstance(record, dict):
            return {}
        return {rel: digest for rel, digest in record.items() if isinstance(digest, str)}

    def _changed(self, rel: str) -> NotReady:
        """The error of a pull that found ``rel`` gone from the store, or not as its manifest entry says: a
        ShopRankError, so `artifacts pull` and `serve` say it in one line."""
        return NotReady(f"{self.url}/{rel} changed while it was read (gone, or its sha256 differs from {MANIFEST}): "
                        "pull again; if it fails again, the store's file and its manifest entry disagree: in the "
                        "home that made the file, `touch` it and push again")

    def _deleted_here(self, remote: dict[str, str]) -> tuple[str, ...]:
        """The folders (home-relative prefixes) of model versions this home deleted that the store still holds
        as they were: not pulled back (this home's next push removes them from the store). A version the store
        holds with other files (another home's model under the name) is pulled in its place."""
        out = []
        for prefix, _, entry in self._deleted_entries():
            files = entry.get("files") or {}
            if isinstance(files, dict) and files and all(remote.get(prefix + name) == digest
                                                         for name, digest in files.items()):
                out.append(prefix)
        return tuple(out)

    def _check_entry(self, rel: str) -> None:
        """A manifest entry names a file in the home: a relative path without '..' (else the pull would write
        outside it), control characters or the home's own transfer records. Read as written (a part of the home
        may be a link to another disk)."""
        path = PurePosixPath(rel)  # as written, normalised: './.artifacts.json' names the record itself
        if path.is_absolute() or ".." in path.parts or not path.parts or path == PurePosixPath(".") \
                or any(ord(c) < 32 or ord(c) == 127 for c in rel) or str(path) in (LOCAL, LOCK, PULLING):
            raise InvalidInput(f"{self.url}/{MANIFEST} names {rel!r}, which is not a file in an artifact home "
                               "(an absolute path, one with '..' or a control character, or this home's own "
                               "transfer records): nothing was pulled; push the store again from a trusted home")

    def _drop_deleted_versions(self, remote: dict[str, str], state: dict[str, Any]) -> None:
        """Remove the local copies of model versions the registry lists as deleted and the store
        no longer holds."""
        for prefix, folder in self._deleted_versions().items():
            if not folder.is_dir() or any(rel.startswith(prefix) for rel in remote):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            for rel in [rel for rel in state if rel.startswith(prefix)]:
                del state[rel]
            logger.info("removed %s: deleted from the registry and the store", prefix)

    def push_state(self, extra: Iterable[Path] = ()) -> Transfer:
        """Upload the active pointers, the experiment, the rules and the synonyms the admin API keeps (after a
        swap, an experiment, rules or synonyms change; ``extra``: the rules and synonyms files that settings
        name, when they are in the home), and the folders of the model versions those pointers name: a version
        registered here and never pushed goes with the pointer to it, so no replica is pointed at a model the
        store does not hold (versions the store holds already move nothing)."""
        return self.push((*STATE, *self._named_versions()), extra)

    def _named_versions(self) -> list[str]:
        """The home-relative folders of the model versions this home's pointers name: each registry's active
        versions, and the LambdaMART versions of the experiment beside it (its arms and its shadow)."""
        named: set[Path] = set()
        for pattern in REGISTRIES:
            for root in self.home.glob(pattern):
                registry = ModelRegistry(root)
                for pointer in root.glob("*/active.json"):
                    try:
                        named.add(root / pointer.parent.name / str(registry.active_version(pointer.parent.name)))
                    # unreadable (a Conflict naming the file): pushed as it is, named nothing
                    except (OSError, ValueError, KeyError, TypeError, Conflict):
                        continue
                try:
                    config = json.loads((root.parent / "experiments" / "current.json").read_text())
                except (OSError, ValueError):
                    continue
                if not isinstance(config, dict):  # not an experiment file: it names nothing
                    continue
                arms = ((config.get("experiment") or {}).get("arms") or {}).values()
                ltr = [arm.get("ltr") for arm in arms if isinstance(arm, dict)] + [config.get("shadow")]
                named.update(root / "ltr" / v for v in ltr if isinstance(v, str))
        return sorted(str(folder.relative_to(self.home)) for folder in named
                      if VERSION.match(folder.name) and folder.is_dir())
