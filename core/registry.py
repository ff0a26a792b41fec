"""Model registry: every trained model is a version with a manifest; one is active per role.

Layout under ``<home>/models``::

    <role>/<version>/manifest.json   role, version, created, base model, parent,
                                     training-data hash, parameters, dev metrics
    <role>/<version>/...             the model's files (HF folder, ONNX, ...)
    <role>/active.json               {"version": ..., "history": [...]}
    <role>/deleted.json              versions removed (``delete``, ``prune``): their manifests and when

Roles: ``biencoder``, ``reranker`` (the teacher cross-encoder), ``student``,
``ltr``. Versions are ``v1``, ``v2``, ... per role. Activation is an atomic file
replace, so readers always see a whole state; ``rollback`` re-activates the
previously active version. Serving (hot swap) and the learning loop (promotion)
use this API. ``delete`` and ``prune`` remove versions that are neither active nor
kept for a rollback; a removed version's name is never given to another model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import Conflict, InvalidInput, NotFound
from core.files import holding

logger = logging.getLogger(__name__)

ROLES = ("biencoder", "reranker", "student", "ltr")


@dataclass
class ModelVersion:
    """A registered model and what it was made from."""

    role: str
    version: str
    created: str
    base_model: str
    parent: str | None = None
    training_data: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256, written at registration
    path: Path | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("path")
        return out


def _read_version(manifest: Path) -> ModelVersion:
    """The version a registered folder's manifest describes; fields a newer ShopRank added are left out, and a
    manifest that does not read is a :class:`~core.errors.Conflict` naming it (not a listing's traceback)."""
    try:
        data = json.loads(manifest.read_text())
        known = {f.name for f in fields(ModelVersion)} - {"path"}
        return ModelVersion(**{k: v for k, v in data.items() if k in known}, path=manifest.parent)
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise Conflict(f"{manifest} is not a model manifest ({type(error).__name__}: {error}); restore it from the "
                       "artifact store (`shoprank artifacts pull`) or delete the version's folder") from None


@dataclass(frozen=True)
class ServedModel:
    """A registered model loaded for use: its role, version and the loaded object; ``trained_with``: for a
    LambdaMART, the encoder and model versions whose lists and scores it was trained on (its registry entry's
    ``served_models``, ``second_encoder_weight`` when a second bi-encoder was served, and the ``student_depth``
    its lists were made with; empty when unknown)."""

    role: str
    version: str
    model: object
    trained_with: dict[str, Any] = field(default_factory=dict, compare=False)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"model role {role!r} is not one of {list(ROLES)}")


def file_digest(file: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    sha = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under a model folder (its own manifest aside), by relative path."""
    return {str(f.relative_to(folder)): file_digest(f) for f in sorted(folder.rglob("*"))
            if f.is_file() and f.relative_to(folder) != Path("manifest.json")}


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


VERSION = re.compile(r"v[0-9]{1,6}\Z")  # matched from the start: \Z, as $ passes "v3\n"


def _rollback_history(state: dict[str, Any]) -> list[str]:
    """The history a rollback reads: without the versions at its end that are the active one."""
    history = list(state["history"])
    while history and history[-1] == state["version"]:
        history.pop()
    return history


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _lock(self, role: str) -> AbstractContextManager[None]:
        return holding(self.root / role / ".lock")

    def _next_version(self, role: str) -> str:
        names = [p.name for p in (self.root / role).glob("v*")] + [d["version"] for d in self.deleted(role)]
        numbers = [int(name[1:]) for name in names if name[1:].isdigit()]
        return f"v{max(numbers, default=0) + 1}"

    def register(self, role: str, source: Path, base_model: str, *, parent: str | None = None,
                 training_data: str | None = None, params: dict[str, Any] | None = None,
                 metrics: dict[str, Any] | None = None, notes: str = "", activate: bool = False,
                 move: bool = True) -> ModelVersion:
        """Store the model folder ``source`` as the next version of ``role``."""
        _check_role(role)
        if not source.is_dir():
            raise NotFound(f"model folder {source} does not exist")
        with self._lock(role):
            for left in (self.root / role).glob(".registering-*"):  # a registration that crashed (under the lock)
                shutil.rmtree(left, ignore_errors=True)
            version = self._next_version(role)
            target = self.root / role / version
            staged = target.with_name(f".registering-{version}")  # a version only once whole, with its manifest
            if move:
                shutil.move(str(source), str(staged))
            else:
                shutil.copytree(source, staged)
            entry = ModelVersion(role=role, version=version, created=datetime.now(UTC).isoformat(timespec="seconds"),
                                 base_model=base_model, parent=parent, training_data=training_data,
                                 params=params or {}, metrics=metrics or {}, notes=notes,
                                 files=checksums(staged), path=target)
            _write_json(staged / "manifest.json", entry.to_json())
            staged.rename(target)
        logger.info("registered %s %s at %s", role, version, target)
        if activate:
            self.activate(role, version)
        return entry

    def versions(self, role: str) -> list[ModelVersion]:
        _check_role(role)
        found = [_read_version(manifest) for manifest in (self.root / role).glob("v*/manifest.json")]
        return sorted(found, key=lambda v: int(v.version[1:]))

    def get(self, role: str, version: str) -> ModelVersion:
        _check_role(role)
        if not VERSION.match(version):  # a name, not a path: 'v2/' or '../ltr/v1' would reach other folders
            raise InvalidInput(f"{role} version {version!r} is not a version name: v followed by 1-6 digits (v3)")
        manifest = self.root / role / version / "manifest.json"
        if not manifest.is_file():
            known = [v.version for v in self.versions(role)]
            raise NotFound(f"{role} version {version!r} is not registered; registered: {known or 'none'}")
        return _read_version(manifest)

    def _state(self, role: str) -> dict[str, Any]:
        file = self.root / role / "active.json"
        if not file.is_file():
            return {"version": None, "history": []}
        try:
            state = json.loads(file.read_text())
            if isinstance(state, dict) and isinstance(state.get("history", []), list) \
                    and isinstance(state.get("version"), (str, type(None))):
                return {"version": state.get("version"), "history": list(state.get("history", []))}
        except (ValueError, UnicodeDecodeError):
            pass
        raise Conflict(f"{file} is not an active-version file (a JSON object naming 'version' and its 'history'): "
                       f"move it away (the role then has no active version), then `shoprank models activate {role} "
                       "VERSION`")

    def active_version(self, role: str) -> str | None:
        """The active version's name, without reading its manifest (cheap enough to poll)."""
        return self._state(role)["version"]

    def history(self, role: str) -> list[str]:
        """Versions that were active before the current one, oldest first."""
        return list(self._state(role)["history"])

    def active(self, role: str) -> ModelVersion | None:
        version = self._state(role)["version"]
        return self.get(role, version) if version else None

    def verify(self, role: str, version: str) -> ModelVersion:
        """The version, if its files are those registered (same sha256); a missing, truncated or
        altered file raises :class:`~core.errors.Conflict` naming it. Versions registered before
        checksums were recorded pass unchecked."""
        entry = self.get(role, version)
        folder = Path(entry.path)  # type: ignore[arg-type]
        for name, digest in entry.files.items():
            file = folder / name
            if not file.is_file():
                raise Conflict(f"{role} {version} is damaged: {name} is missing from {folder}; "
                               "the active version keeps serving")
            if file_digest(file) != digest:
                raise Conflict(f"{role} {version} is damaged: {name} differs from the registered file "
                               f"(sha256 mismatch, {file.stat().st_size} bytes); the active version keeps serving")
        return entry

    def activate(self, role: str, version: str) -> ModelVersion:
        """Make ``version`` the active one of ``role`` (atomic), if its files are intact (:meth:`verify`)."""
        entry = self.verify(role, version)  # the digests, outside the lock (it reads every file)
        with self._lock(role):
            self.get(role, version)  # still registered: a delete may have taken it while it was verified
            state = self._state(role)
            if state["version"] != version:
                history = [*state["history"], state["version"]] if state["version"] else state["history"]
                _write_json(self.root / role / "active.json", {"version": version, "history": history[-50:]})
        logger.info("activated %s %s", role, version)
        return entry

    def deleted(self, role: str) -> list[dict[str, Any]]:
        """The versions removed so far, oldest first: each one's manifest and ``deleted`` (when)."""
        file = self.root / role / "deleted.json"
        return list(json.loads(file.read_text())) if file.is_file() else []

    def delete(self, role: str, version: str) -> ModelVersion:
        """Remove ``version`` and its files. The active version is refused (:class:`~core.errors.Conflict`:
        activate another first); an earlier active one leaves the rollback history. The manifest is
        kept in ``deleted.json``, and the name is not given to a later model."""
        self.get(role, version)
        with self._lock(role):
            entry = self.get(role, version)  # still registered: another delete (a prune) may have taken it
            state = self._state(role)
            if state["version"] == version:
                raise Conflict(f"{role} {version} is the active version and cannot be deleted; "
                               "activate another version (or roll back) first")
            if version in state["history"]:
                history = [v for v in state["history"] if v != version]
                history = [v for i, v in enumerate(history) if i == 0 or v != history[i - 1]]  # v1 v2 v1: v1 v1
                while history and history[-1] == state["version"]:  # a rollback would stay where it is
                    history.pop()
                _write_json(self.root / role / "active.json", {"version": state["version"], "history": history})
            removed = {**entry.to_json(), "deleted": datetime.now(UTC).isoformat(timespec="seconds")}
            _write_json(self.root / role / "deleted.json", [*self.deleted(role), removed])
            folder = Path(entry.path)  # type: ignore[arg-type]
            doomed = folder.with_name(f".deleting-{version}")  # out of versions() at once, then removed
            folder.replace(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        logger.info("deleted %s %s", role, version)
        return entry

    def prunable(self, role: str, keep: int, protect: Iterable[str] = ()) -> list[str]:
        """The versions :meth:`prune` would remove: all but the active one, the ``keep`` versions
        last active before it (the rollback targets), the ``keep`` newest, and ``protect``."""
        if keep < 0:
            raise InvalidInput(f"keep={keep} is negative; pass 0 or more versions to keep besides the active one")
        state = self._state(role)
        names = [v.version for v in self.versions(role)]
        kept = {state["version"], *protect, *(names[-keep:] if keep else [])}
        targets = [v for v in dict.fromkeys(reversed(state["history"])) if v != state["version"]]  # the active aside
        kept.update(targets[:keep])
        return [name for name in names if name not in kept]

    def prune(self, role: str, keep: int, protect: Iterable[str] = ()) -> list[str]:
        """Delete the versions :meth:`prunable` names; returns them."""
        doomed = self.prunable(role, keep, protect)
        for version in doomed:
            self.delete(role, version)
        return doomed

    def previous(self, role: str) -> str | None:
        """The version :meth:`rollback` would re-activate: the last one active before the current one (not the
        current one again); None when there is none."""
        history = _rollback_history(self._state(role))
        return history[-1] if history else None

    def rollback(self, role: str, check: Callable[[str], object] | None = None,
                 expected: str | None = None, onto: str | None = None) -> ModelVersion:
        """Re-activate the version that was active before the current one, if its files are intact and
        ``check`` (called with it, e.g. :func:`serving.loading.check_loads`) does not raise. With ``expected``
        (the version a caller judged), :class:`~core.errors.Conflict` unless it is still the active one: a
        version activated meanwhile is not rolled back onto the one judged; with ``onto`` (the version it was
        judged against), unless that is the one the rollback re-activates."""
        with self._lock(role):
            state = self._state(role)
            if expected is not None and state["version"] != expected:
                now = state["version"] or "no version"
                raise Conflict(f"{role} {expected} is no longer the active version: {now} was activated after "
                               f"{expected} was judged; nothing was rolled back: run `shoprank guard` again to "
                               f"judge {now}")
            history = _rollback_history(state)
            if not history:
                raise InvalidInput(f"{role} has no earlier active version to roll back to")
            previous = history[-1]
            if onto is not None and previous != onto:  # activations since the judgment changed the history
                raise Conflict(f"{role} would roll back to {previous}, not to {onto}, which {expected or 'it'} was "
                               f"judged against; nothing was rolled back: run `shoprank guard` again")
            self.verify(role, previous)
            if check is not None:
                check(previous)  # refused like an activation: nothing points at a version that does not load
            _write_json(self.root / role / "active.json", {"version": previous, "history": history[:-1]})
        logger.info("rolled %s back to %s", role, previous)
        return self.get(role, previous)

    def restore(self, role: str, state: dict[str, Any], unless_changed_from: str) -> None:
        """Put back ``state`` (as :meth:`state` returned it) when the active version is still
        ``unless_changed_from``: an activation a server could not load is undone, not one made since."""
        with self._lock(role):
            if self._state(role)["version"] == unless_changed_from:
                _write_json(self.root / role / "active.json", state)
                logger.warning("%s: %s undone, %s active again", role, unless_changed_from, state["version"])

    def state(self, role: str) -> dict[str, Any]:
        """The active version and the rollback history, as ``active.json`` holds them."""
        return self._state(role)
