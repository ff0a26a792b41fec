"""API keys: per store and scope, stored hashed, checked in constant time.

A key is shown once, at creation (``shoprank keys create``): ``sr_<id>_<secret>``.
The key file (``<home>/keys.json``) keeps its id, name, store, scopes, creation
and revocation times and the SHA-256 of the whole key (keys are 256-bit random
tokens, so a fast hash is enough; no secret is stored). Servers re-read the file
when it changes, so a key created or revoked by the CLI takes effect on the next
request of every server process that shares the home. Replicas that share an
artifact store instead take it at their next pull: the CLI pushes the file when
``artifacts_url`` is set, and a push or pull merges two copies key by key
(:meth:`KeyStore.merge`), so a key revoked anywhere stays revoked.

A file that cannot be read (not JSON, empty, a key lacking a field) is a
:class:`~core.errors.NotReady` naming it: the API answers 503 (no key can be
checked) and the CLI one ``error:`` line. Fields this version does not know are
left out, so a file written by a newer version still reads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path

from core.errors import InvalidInput, NotFound, NotReady
from core.files import holding

SCOPES = ("search", "events", "admin")
MAX_STORE_CHARS = 64  # a store's name
_KEY = re.compile(r"^sr_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")
_STORE = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_STORE_CHARS}}}\Z")


def check_store_name(store: str) -> str:
    """``store`` if it is a valid store name; else a clear error."""
    if not _STORE.match(store) or store.startswith("."):
        raise InvalidInput(f"store {store!r} is not a valid store name; use 1-64 letters, digits, '_', '.', '-', "
                           "not starting with '.'")
    return store


@dataclass(frozen=True)
class ApiKey:
    """A key's record (never its secret)."""

    id: str
    name: str
    store: str
    scopes: tuple[str, ...]
    digest: str
    created: str
    revoked: str | None = None

    def public(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("digest")
        out["scopes"] = list(self.scopes)
        return out


_FIELDS = {f.name for f in fields(ApiKey)}
_REQUIRED = [f.name for f in fields(ApiKey) if f.default is MISSING]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys(data: bytes | str) -> dict[str, ApiKey]:
    """The keys (id -> record) of a key file's contents; a :class:`ValueError` says what is wrong. Fields
    this version does not know are left out."""
    if not data.strip():
        raise ValueError("it is empty")
    try:
        entries = json.loads(data)
    except ValueError as error:  # not JSON, or not UTF-8
        raise ValueError(f"it is not JSON ({error})") from None
    if not isinstance(entries, list):
        raise ValueError(f"it holds a JSON {type(entries).__name__}, not a list of keys")
    keys = {}
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"entry {n} is a JSON {type(entry).__name__}, not a key")
        missing = [name for name in _REQUIRED if name not in entry]
        if missing:
            raise ValueError(f"entry {n} lacks {missing}")
        wrong = [name for name in _REQUIRED if name != "scopes" and not isinstance(entry[name], str)]
        if not isinstance(entry["scopes"], list) or not all(isinstance(s, str) for s in entry["scopes"]):
            wrong.append("scopes")
        if not isinstance(entry.get("revoked"), str | None):
            wrong.append("revoked")
        if wrong:
            raise ValueError(f"entry {n} has {wrong} of the wrong type (text; scopes a list of text)")
        record = ApiKey(**{**{k: v for k, v in entry.items() if k in _FIELDS}, "scopes": tuple(entry["scopes"])})
        keys[record.id] = record
    return keys


def _dump(keys: dict[str, ApiKey]) -> str:
    """A key file's text, oldest key first: two homes holding the same keys write the same bytes."""
    return json.dumps([asdict(k) for k in sorted(keys.values(), key=lambda k: (k.created, k.id))], indent=2)


class KeyStore:
    """The key file of one artifact home (thread-safe; re-read when the file changes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, ApiKey] = {}

    @contextmanager
    def _writing(self) -> Iterator[dict[str, ApiKey]]:
        with holding(self.path.with_suffix(".lock")):
            keys = self._read()
            yield keys
            text = _dump(keys)
            if self.path.is_file() and self.path.read_text() == text:  # nothing changed: readers re-read nothing
                return
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            os.chmod(tmp, 0o600)
            tmp.replace(self.path)

    def _read(self) -> dict[str, ApiKey]:
        try:  # no file: no key yet; anything else in its place (a folder a container mounted) cannot be read
            return parse_keys(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (ValueError, OSError) as error:  # OSError: not this process's to read (root's 0600), a link loop
            reason = error.strerror if isinstance(error, OSError) else error
            raise NotReady(f"the key file {self.path} cannot be read: {reason}; no API key can be checked until it "
                           "is fixed or restored (`shoprank keys list` reads it)", retry_after=10.0) from None

    def keys(self) -> list[ApiKey]:
        """Every key, current as of the file on disk."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        except OSError as error:
            raise NotReady(f"the key file {self.path} cannot be read: {error.strerror}; no API key can be checked "
                           "until it is fixed", retry_after=10.0) from None
        with self._lock:
            if stamp != self._stamp:
                self._keys, self._stamp = (self._read() if stamp else {}), stamp
            return list(self._keys.values())

    def create(self, store: str, scopes: list[str], name: str = "") -> tuple[ApiKey, str]:
        """A new key for ``store`` with ``scopes``; returns its record and the key (shown once)."""
        check_store_name(store)
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise InvalidInput(f"scopes {unknown or scopes} are not allowed; choose one or more of {list(SCOPES)}")
        key_id = secrets.token_hex(6)
        key = f"sr_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(key_id, name, store, tuple(dict.fromkeys(scopes)), _digest(key),
                        datetime.now(UTC).isoformat(timespec="seconds"))
        with self._writing() as keys:
            keys[key_id] = record
        return record, key

    def revoke(self, key_id: str) -> ApiKey:
        with self._writing() as keys:
            if key_id not in keys:
                raise NotFound(f"key {key_id!r} does not exist; `shoprank keys list` shows the ids")
            keys[key_id] = record = ApiKey(**{**asdict(keys[key_id]),
                                              "revoked": datetime.now(UTC).isoformat(timespec="seconds")})
        return record

    def merge(self, other: bytes | str) -> bool:
        """Add another copy of the key file (``other``: its contents, e.g. the artifact store's) to this one, key
        by key: the keys it lacks, and the revocation of a key revoked there (the earlier time when both revoked
        it). A key is never dropped and a revocation never undone, so merging copies in any order ends with every
        key and every revocation. A ``ValueError`` says what is wrong with ``other``; True when this file changed."""
        theirs = parse_keys(other)
        with self._writing() as keys:
            before = dict(keys)
            for key_id, record in theirs.items():
                ours = keys.get(key_id)
                if ours is None:
                    keys[key_id] = record
                elif record.revoked is not None and (ours.revoked is None or record.revoked < ours.revoked):
                    keys[key_id] = replace(ours, revoked=record.revoked)
            return keys != before

    def verify(self, key: str) -> ApiKey | None:
        """The live (not revoked) record of ``key``, or None; the digest is compared in constant time."""
        match = _KEY.match(key)
        record = next((k for k in self.keys() if match and k.id == match.group(1)), None)
        expected = record.digest if record else _digest("sr_000000000000_" + "x" * 43)
        same = hmac.compare_digest(_digest(key), expected)
        return record if record is not None and same and record.revoked is None else None
