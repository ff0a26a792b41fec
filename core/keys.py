"""API keys: per store and scope, stored hashed, checked in constant time.

A key is shown once, at creation (``shoprank keys create``): ``sr_<id>_<secret>``.
The key file (``<home>/keys.json``) keeps its id, name, store, scopes, creation
and revocation times and the SHA-256 of the whole key (keys are 256-bit random
tokens, so a fast hash is enough; no secret is stored). Servers re-read the file
when it changes, so a key created or revoked by the CLI takes effect on the next
request of every server process.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from core.errors import InvalidInput, NotFound

SCOPES = ("search", "events", "admin")
_KEY = re.compile(r"^sr_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")
_STORE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


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


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The key file of one artifact home (thread-safe; re-read when the file changes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, ApiKey] = {}

    @contextmanager
    def _writing(self) -> Iterator[dict[str, ApiKey]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = self._read()
            yield keys
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps([asdict(k) for k in keys.values()], indent=2))
            os.chmod(tmp, 0o600)
            tmp.replace(self.path)

    def _read(self) -> dict[str, ApiKey]:
        if not self.path.is_file():
            return {}
        return {r["id"]: ApiKey(**{**r, "scopes": tuple(r["scopes"])}) for r in json.loads(self.path.read_text())}

    def keys(self) -> list[ApiKey]:
        """Every key, current as of the file on disk."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
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

    def verify(self, key: str) -> ApiKey | None:
        """The live (not revoked) record of ``key``, or None; the digest is compared in constant time."""
        match = _KEY.match(key)
        record = next((k for k in self.keys() if match and k.id == match.group(1)), None)
        expected = record.digest if record else _digest("sr_000000000000_" + "x" * 43)
        same = hmac.compare_digest(_digest(key), expected)
        return record if record is not None and same and record.revoked is None else None
